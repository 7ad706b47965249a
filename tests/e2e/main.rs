//! End-to-end tests: each test starts the real `gateway` binary on port 0 with its own config
//! and SQLite file in a temp dir, sends real HTTP requests signed the way the providers sign
//! them, and checks the exact answers, the stored rows and the metrics. Together they prove the
//! gateway's external contract: responses, envelope, dedup, limits (body bombs, slow clients),
//! durability, `check`.
//!
//! The `plugin_*` modules run the real example and fixture components from `plugins/` (built by
//! `tests/plugin-artifacts`) through the gateway's plugin host in-process, where limits and
//! recycling can be observed call by call, and through `gateway plugin run` and `gateway check`.
//!
//! `prometheus`, `alert_rules` and `grafana` check what ships for monitoring (`contrib/`): a real
//! Prometheus scraping the gateway, `promtool` on its metrics and on the alert rules, and the
//! dashboard's queries against the metrics a running gateway exports.

#![allow(
    clippy::disallowed_methods,
    reason = "test sinks and clients read whole bodies from the processes the tests started"
)]

mod ack_stream;
mod admin_api;
mod alert_rules;
mod backup;
mod bombs;
mod capacity;
mod check;
mod console;
mod crash;
mod dedup;
mod delivery;
mod doc_commands;
mod dual_stack;
mod durability;
mod grafana;
mod harness;
mod hostile;
mod identity;
mod ledger;
mod ledig;
mod limits;
mod log_bounds;
mod metrics;
mod openapi;
mod ordering;
mod ordering_holds;
mod plugin_check;
mod plugin_example_c;
mod plugin_examples;
mod plugin_harness;
mod plugin_health;
mod plugin_limits;
mod plugin_waits;
mod prometheus;
mod reload;
mod replica_harness;
mod replicas;
mod retention;
mod runtime_threads;
mod send;
mod sink;
mod slow_clients;
mod store_cli;
mod store_failure;
mod storm;
mod systemd_unit;
