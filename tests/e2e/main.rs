//! End-to-end tests: each starts the real `gateway` binary on port 0 with its own SQLite file
//! and sends real HTTP requests, signed the way the providers sign them.

mod check;
mod dedup;
mod durability;
mod harness;
mod ledger;
mod ledig;
mod limits;
mod metrics;
mod store_failure;
