//! Dedup-window retention: forgets dedup keys older than the window, at start and hourly.
//!
//! Only the dedup table is pruned; stored events are kept. A retry arriving after the window
//! is stored as a new event, which is the documented meaning of the window.

use super::Store;
use crate::metrics::Metrics;
use crate::metrics::events::DedupPruned;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown` is cancelled.
pub async fn prune_periodically(
    store: Arc<dyn Store>,
    window: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(window);
        let cutoff = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        match store.prune_dedup(cutoff).await {
            Ok(0) => {}
            Ok(count) => DedupPruned {
                metrics: metrics.clone(),
                count,
            }
            .emit(),
            Err(e) => tracing::warn!(error = %e, "dedup pruning failed; will retry"),
        }
    }
}
