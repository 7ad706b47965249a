//! A self-hosted webhook gateway for payment providers.
//!
//! One event flows forward through these modules, each owning one stage:
//!
//! ```text
//! ingress    HTTP listener, limits, routing, documented answers      (ingress/)
//!   -> providers  authenticate raw bytes, normalize per provider     (../providers/)
//!   -> envelope   the common CloudEvents envelope and DedupKey       (../providers/src/envelope.rs)
//!   -> store      dedup + persist in one durable write, then ack     (store/)
//!   .... asynchronously, from the store ....
//! worker     intake of stored events, retries, backlog gauges        (worker/)
//!   -> routing    routes matching an event, plugin chains            (routing/)
//!   -> plugins    WebAssembly components under hard limits           (plugins/)
//!   -> delivery   one attempt to an http or file destination         (delivery/)
//! admin      the `/admin/` API: events, dead letters, replay         (admin/)
//! console    the operator console's pages, served under `/console/`  (console/)
//! reload     config generations, hot reload on file change / SIGHUP  (reload/)
//! config     TOML -> validated runtime value, positioned errors      (config/)
//! metrics    Prometheus registry and typed telemetry events          (metrics/)
//! shutdown   signal handling as a cancellation token                (shutdown.rs)
//! ```
//!
//! Invariants: a 200 is sent only after the store committed the event; only bodies that passed
//! their source's authentication reach the parsers; metric labels come from config names and
//! the providers' catalogues only. `ARCHITECTURE.md` describes the flow in more detail.

pub mod admin;
pub mod config;
pub mod console;
pub mod delivery;
pub mod ingress;
pub mod metrics;
pub mod plugins;
pub mod reload;
pub mod routing;
pub mod shutdown;
pub mod store;
pub mod worker;

/// The provider and envelope stages live in their own crate (`providers/`), so the fuzz
/// targets build without the runtime; the rest of the gateway sees them as its own modules.
pub use gateway_providers::{self as providers, envelope};

use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::metrics::flow_events::ConfigApplied;
use crate::plugins::PluginEngine;
use crate::reload::Reloader;
use crate::store::Store;
use crate::worker::Pipeline;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves webhooks on `listener` (and the admin API and console on `admin_listener`, when
/// `[admin] listen` gave them one) and routes stored events with `pipeline` (generation 1 of
/// `config`, built by [`reload::build_pipeline`]) until `shutdown` is cancelled; then drains
/// in-flight requests and events. Config changes are picked up by the reloader meanwhile,
/// from `triggers` (installed by the caller before it announced the listener).
#[allow(clippy::too_many_arguments)] // the parts the binary sets up, each needed once
pub async fn run(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    triggers: reload::Triggers,
    config: GatewayConfig,
    engine: PluginEngine,
    pipeline: Pipeline,
    store: Arc<dyn Store>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    ConfigApplied {
        metrics: &metrics,
        generation: pipeline.generation,
        file: &config.file,
        reload: false,
        needs_restart: &[],
    }
    .emit();
    let gateway = Arc::new(ingress::Gateway::new(
        &config,
        pipeline.router.plugins(),
        Arc::clone(&store),
        metrics.clone(),
    ));
    let pipeline = Arc::new(ArcSwap::from_pointee(pipeline));
    let charts = tokio::spawn(admin::chart_history(
        Arc::clone(gateway.admin_state()),
        metrics.clone(),
        shutdown.clone(),
    ));
    let pruner = tokio::spawn(store::prune_periodically(
        Arc::clone(&store),
        store::Retention {
            dedup_window: config.store.dedup_window,
            events: config.store.retention,
            quarantine: config.store.quarantine_retention,
        },
        metrics.clone(),
        shutdown.clone(),
    ));
    let workers = tokio::spawn(worker::run(
        store,
        Arc::clone(&pipeline),
        config.workers,
        metrics.clone(),
        shutdown.clone(),
    ));
    let timeouts = ingress::ConnectionTimeouts {
        header: config.server.header_timeout,
        write: config.server.write_timeout,
    };
    let reloader = Arc::new(Reloader::new(
        config,
        engine,
        metrics,
        Arc::clone(&gateway),
        pipeline,
    ));
    let watcher = tokio::spawn(reload::watch(reloader, triggers, shutdown.clone()));
    let admin = admin_listener.map(|l| {
        let (gateway, shutdown) = (Arc::clone(&gateway), shutdown.clone());
        tokio::spawn(ingress::serve(
            l,
            gateway,
            timeouts,
            ingress::Surface::Admin,
            shutdown,
        ))
    });
    ingress::serve(
        listener,
        gateway,
        timeouts,
        ingress::Surface::Webhooks,
        shutdown,
    )
    .await;
    if let Some(admin) = admin {
        drop(admin.await);
    }
    // Every task holding a store handle ends before this returns, so the caller can wait for
    // the store writer's last commit.
    drop(workers.await);
    drop(watcher.await);
    pruner.abort();
    drop(pruner.await);
    drop(charts.await);
}
