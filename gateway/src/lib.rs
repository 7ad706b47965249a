//! A self-hosted webhook gateway for payment providers.
//!
//! One event flows forward through these modules, each owning one stage:
//!
//! ```text
//! ingress    HTTP listener, limits, routing, documented answers      (ingress/)
//!   -> providers  authenticate raw bytes, normalize per provider     (providers/)
//!   -> envelope   the common CloudEvents envelope and DedupKey       (envelope.rs)
//!   -> store      dedup + persist in one durable write, then ack     (store/)
//! config     TOML -> validated runtime value, positioned errors      (config/)
//! metrics    Prometheus registry and typed telemetry events          (metrics/)
//! shutdown   signal handling as a cancellation token                (shutdown.rs)
//! ```
//!
//! Invariants: a 200 is sent only after the store committed the event; only bodies that passed
//! their source's authentication reach the parsers; metric labels come from config names and
//! the providers' catalogues only. `ARCHITECTURE.md` describes the flow in more detail.

pub mod config;
pub mod envelope;
pub mod ingress;
pub mod metrics;
pub mod plugins;
pub mod providers;
pub mod shutdown;
pub mod store;

use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves webhooks on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(
    listener: TcpListener,
    config: &GatewayConfig,
    store: Arc<dyn Store>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let gateway = Arc::new(ingress::Gateway::new(
        config,
        Arc::clone(&store),
        metrics.clone(),
    ));
    let pruner = tokio::spawn(store::prune_periodically(
        store,
        config.store.dedup_window,
        metrics,
        shutdown.clone(),
    ));
    ingress::serve(listener, gateway, config.server.header_timeout, shutdown).await;
    pruner.abort();
}
