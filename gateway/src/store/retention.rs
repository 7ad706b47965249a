//! Retention: forgets dedup keys older than the window and objects' latest states whose retry
//! window is over, deletes quarantined bodies not seen for `store.quarantine_retention` and,
//! when `store.retention` is set, finished events older than it; at start and hourly, each in
//! small writer steps.
//!
//! A retry arriving after the dedup window is stored as a new event, which is the documented
//! meaning of the window. Event retention is never shorter than the window (config checks it)
//! because the dedup index is rebuilt from stored events. It deletes only finished events: an
//! event with a dead letter, a delivery or plugin retry still waiting, or no routing yet is kept
//! whatever its age, so retention never loses work. A quarantined body is deleted once its
//! source has not sent it again for the quarantine retention. With several replicas on one
//! database only the one that runs the cluster's jobs prunes (`Store::runs_cluster_jobs`).

use super::{DedupPruneStep, ExpiredEvents, Store, StoreError};
use crate::metrics::Metrics;
use crate::metrics::events::{DedupPruned, EventsExpired, QuarantineExpired};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Events looked at per writer transaction: small, so ingests sharing that commit are not
/// held up by a long delete.
const EXPIRE_STEP: u32 = 256;

/// What to keep, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub dedup_window: Duration,
    /// `None`: events are kept for ever.
    pub events: Option<Duration>,
    /// Quarantined bodies not seen for this long are deleted.
    pub quarantine: Duration,
}

/// Runs until `shutdown` is cancelled.
pub async fn prune_periodically(
    store: Arc<dyn Store>,
    retention: Retention,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The tables are the cluster's: one replica prunes them (another takes over at its
        // next tick if that one goes away).
        if !store.runs_cluster_jobs() {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = prune_dedup(store.as_ref(), cutoff_ms(retention.dedup_window), &metrics) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = prune_object_states(store.as_ref(), &metrics) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = expire_quarantine(store.as_ref(), cutoff_ms(retention.quarantine), &metrics) => {}
        }
        if let Some(kept) = retention.events {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = expire(store.as_ref(), cutoff_ms(kept), &metrics) => {}
            }
        }
    }
}

/// One pass forgetting the dedup keys first seen before `cutoff`, in writer-sized steps.
async fn prune_dedup(store: &dyn Store, cutoff: i64, metrics: &Metrics) {
    let count = forget_all("dedup pruning", || store.prune_dedup(cutoff)).await;
    if count > 0 {
        DedupPruned {
            metrics: metrics.clone(),
            count,
        }
        .emit();
    }
}

/// One pass forgetting the objects' latest states whose retry window is over, in writer-sized
/// steps. Counted with the dedup keys: both are what dedup remembers.
async fn prune_object_states(store: &dyn Store, metrics: &Metrics) {
    let now = cutoff_ms(Duration::ZERO);
    let count = forget_all("pruning object states", || store.prune_object_states(now)).await;
    if count > 0 {
        DedupPruned {
            metrics: metrics.clone(),
            count,
        }
        .emit();
    }
}

/// One retention pass over the events received before `cutoff`, in writer-sized steps.
async fn expire(store: &dyn Store, cutoff: i64, metrics: &Metrics) {
    let count = expire_all("event retention pass", |after| {
        store.expire_events(cutoff, after, EXPIRE_STEP)
    })
    .await;
    if count > 0 {
        EventsExpired {
            metrics: metrics.clone(),
            count,
        }
        .emit();
    }
}

/// One pass over the quarantined bodies that arrived before `cutoff`, in writer-sized steps.
async fn expire_quarantine(store: &dyn Store, cutoff: i64, metrics: &Metrics) {
    let count = expire_all("quarantine retention pass", |after| {
        store.expire_quarantine(cutoff, after, EXPIRE_STEP)
    })
    .await;
    if count > 0 {
        QuarantineExpired {
            metrics: metrics.clone(),
            count,
        }
        .emit();
    }
}

/// Repeats a forgetting `step` until one says the pass is done; returns how many entries the
/// steps forgot. A failed step ends the pass (the next hourly pass tries again).
async fn forget_all<F>(what: &str, mut step: impl FnMut() -> F) -> u64
where
    F: Future<Output = Result<DedupPruneStep, StoreError>>,
{
    let mut count = 0;
    loop {
        match step().await {
            Ok(done) => {
                count += done.forgotten;
                if done.done {
                    return count;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; will retry");
                return count;
            }
        }
    }
}

/// Repeats a deleting `step` from where the previous one ended (its cursor, from 0) until one
/// says the pass is over; returns how many rows the steps deleted. A failed step ends the pass.
async fn expire_all<F>(what: &str, mut step: impl FnMut(i64) -> F) -> u64
where
    F: Future<Output = Result<ExpiredEvents, StoreError>>,
{
    let (mut after, mut count) = (0, 0);
    loop {
        match step(after).await {
            Ok(done) => {
                count += done.deleted;
                match done.resume_after {
                    Some(cursor) => after = cursor,
                    None => return count,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; will retry");
                return count;
            }
        }
    }
}

fn cutoff_ms(age: Duration) -> i64 {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(age);
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}
