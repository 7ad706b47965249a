//! Workers: the stage after the ack. Everything here starts from the store, never from the
//! request path: intake takes stored events in order and routes them (`route_event`: routes,
//! plugin chains, first delivery attempts, one store write per event), `retry` runs deliveries
//! and plugin stages whose next attempt is due, and a gauge task measures the backlog.
//!
//! The config in force is a [`Pipeline`] behind an `ArcSwap`: each event takes the current one
//! when its routing starts and finishes on it. Workers never answer HTTP requests and never
//! change the config.

mod attempt;
mod intake;
pub(crate) mod order_key;
mod pipeline;
mod retry;
mod route_event;

pub use pipeline::{Pipeline, Target};

use crate::config::WorkerSettings;
use crate::metrics::Metrics;
use crate::metrics::flow_events::{BacklogMeasured, OrderingMeasured};
use crate::store::Store;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the backlog gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// Longest shutdown waits for events in flight (their plugin calls and attempts are bounded by
/// their own limits, which may be longer; whatever is left stays in the store and is picked up
/// after a restart).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest shutdown then waits for the abandoned work to let go (it ends at its next await).
const ABANDON_TIMEOUT: Duration = Duration::from_secs(1);

/// What every worker task shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    store: Arc<dyn Store>,
    pipeline: Arc<ArcSwap<Pipeline>>,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// Woken when ordered deliveries may have become claimable (recorded, or the delivery
    /// before them in their subject settled), so they need not wait for the next poll.
    deliveries_due: tokio::sync::Notify,
}

/// Runs the workers until `shutdown` is cancelled, then waits (bounded) for events in flight.
pub async fn run(
    store: Arc<dyn Store>,
    pipeline: Arc<ArcSwap<Pipeline>>,
    settings: WorkerSettings,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Ctx {
        store,
        pipeline,
        metrics,
        shutdown: shutdown.clone(),
        deliveries_due: tokio::sync::Notify::new(),
    });
    let in_flight = InFlightWork {
        tracker: TaskTracker::new(),
        abandon: CancellationToken::new(),
    };
    let intake = tokio::spawn(intake::run(
        Arc::clone(&ctx),
        settings.concurrency,
        in_flight.clone(),
    ));
    let retry = tokio::spawn(retry::run(Arc::clone(&ctx), in_flight.clone()));
    let gauges = tokio::spawn(measure_backlog(Arc::clone(&ctx)));
    shutdown.cancelled().await;
    drop(intake.await);
    drop(retry.await);
    gauges.abort();
    in_flight.tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, in_flight.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "events still in flight at shutdown; they will be routed again after a restart"
        );
        // Work still running holds the store (and so the writer, whose last commit the exit
        // waits for) until it ends: a plugin call may run past the drain (its own deadline can
        // be up to a minute), so the work is dropped where it is. What it did is not recorded;
        // a delivery it made is sent again after the restart, with the same webhook-id.
        in_flight.abandon.cancel();
        drop(tokio::time::timeout(ABANDON_TIMEOUT, in_flight.tracker.wait()).await);
    }
    // What is still claimed (abandoned work, events claimed but not started) goes back now,
    // so another replica need not wait for the lease to run out.
    if let Err(e) = ctx.store.release_claims().await {
        tracing::warn!(error = %e, "cannot give back claimed work; other replicas take it over when its lease runs out");
    }
}

/// Routing work that shutdown waits for, at most [`DRAIN_TIMEOUT`]; then whatever still runs
/// is abandoned (dropped at its next await). Its events are still pending in the store, or its
/// retries still due, so they are picked up after a restart.
#[derive(Debug, Clone)]
pub(super) struct InFlightWork {
    tracker: TaskTracker,
    abandon: CancellationToken,
}

impl InFlightWork {
    pub(super) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let abandon = self.abandon.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = abandon.cancelled() => {}
                () = work => {}
            }
        });
    }
}

async fn measure_backlog(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(GAUGE_EVERY);
    let mut reporting = false;
    loop {
        tick.tick().await;
        // Read from the store, which every replica shares: one of them reports it. A replica
        // that stops reporting (another one took the cluster's jobs over) says 0, so a value
        // it measured earlier does not stay up for ever (alerts aggregate with `max`).
        if !ctx.store.runs_cluster_jobs() {
            if std::mem::take(&mut reporting) {
                BacklogMeasured {
                    metrics: &ctx.metrics,
                    queue_depth: 0,
                    dead_letters: 0,
                    oldest_due_age: Duration::ZERO,
                }
                .emit();
            }
            continue;
        }
        reporting = true;
        measure_ordering(&ctx).await;
        if let Ok(b) = ctx.store.backlog().await {
            BacklogMeasured {
                metrics: &ctx.metrics,
                queue_depth: b.queue_depth,
                dead_letters: b.dead_letters,
                oldest_due_age: due_age(b.first_due_at_ms, crate::store::unix_ms()),
            }
            .emit();
        }
    }
}

/// Most blocked subjects read per gauge refresh: past it the gauge says at least this many.
const BLOCKED_READ: u32 = 10_000;

/// The ordering gauges of every ordered destination in the config (labels are config names
/// only: a held subject of a destination no longer configured is in the admin API, not here).
async fn measure_ordering(ctx: &Ctx) {
    let pipeline = ctx.pipeline.load();
    let ordered: Vec<&str> = pipeline
        .targets
        .values()
        .filter(|t| t.settings.ordering.is_some())
        .map(|t| t.settings.name.as_str())
        .collect();
    if ordered.is_empty() {
        return;
    }
    let Ok(blocked) = ctx.store.blocked_subjects(BLOCKED_READ).await else {
        return;
    };
    let now = crate::store::unix_ms();
    for destination in ordered {
        let mine = blocked.iter().filter(|b| b.destination == destination);
        let unrouted = mine.clone().filter(|b| b.delivery_id.is_none()).count();
        let failed = mine.clone().count() - unrouted;
        let oldest = mine.filter_map(|b| b.oldest_waiting_since).min();
        OrderingMeasured {
            metrics: &ctx.metrics,
            destination,
            blocked_subjects: u64::try_from(failed).unwrap_or(u64::MAX),
            unrouted_holds: u64::try_from(unrouted).unwrap_or(u64::MAX),
            oldest_held_age: due_age(oldest, now),
        }
        .emit();
    }
}

/// Logs a store failure of the workers' polling (`what`: a fixed text), at most once a minute
/// per kind with a count of the others: they retry every few hundred milliseconds while the
/// database is down, and the store's own log already says when it becomes unreachable.
fn store_trouble(what: &'static str, error: &crate::store::StoreError) {
    use crate::metrics::log_limit::{LineKind, WORK_FAILURES};
    let kind = LineKind {
        what,
        scope: "worker".to_owned(),
        reason: "store".to_owned(),
        level: tracing::Level::WARN,
    };
    if WORK_FAILURES.admit(kind) {
        tracing::warn!(error = %error, "{what}; will retry");
    }
}

/// How long work due at `first_due_at_ms` has waited at `now_ms`: zero when nothing waits or
/// the earliest retry lies ahead (work waiting for its time is not behind).
fn due_age(first_due_at_ms: Option<i64>, now_ms: i64) -> Duration {
    let waited = first_due_at_ms.map_or(0, |due| now_ms.saturating_sub(due));
    Duration::from_millis(u64::try_from(waited).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::due_age;
    use std::time::Duration;

    #[test]
    fn due_age_counts_only_work_that_is_due() {
        assert_eq!(due_age(None, 5_000), Duration::ZERO);
        assert_eq!(due_age(Some(1_500), 5_000), Duration::from_millis(3_500));
        assert_eq!(due_age(Some(9_000), 5_000), Duration::ZERO, "a retry ahead");
    }
}
