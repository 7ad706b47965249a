//! Intake: takes stored events out of the store in arrival order and hands them, in small
//! batches, to [`route_events`], at most `workers.concurrency` events at a time (back-pressure: when every slot is
//! busy, intake waits and the events wait in the store, where they are safe).
//!
//! It wakes on the store's work signal (after every commit that stored an event or asked for a
//! replay) and polls once a second as a backstop. Its position is a cursor over `seq`; the
//! watermark persisted in the store (every event at or below it is routed) is where the next
//! start resumes, so a restart does not rescan the whole table.

use super::route_event::route_events;
use super::{Ctx, InFlightWork};
use crate::store::StoredEvent;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Events read from the store per query.
const READ_BATCH: u32 = 512;
/// Events routed together: side by side, their results in one store command. Small enough that
/// one slow delivery or plugin call holds up few others' results.
const CHUNK: usize = 32;
/// Longest intake sleeps without a signal (a backstop; signals normally wake it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the watermark is persisted.
const WATERMARK_EVERY: Duration = Duration::from_secs(1);

/// Events being routed right now.
#[derive(Debug, Default)]
struct InFlight {
    /// New events, by seq (their minimum bounds the watermark).
    pending: BTreeSet<i64>,
    /// Replays (still marked `replay` in the store until their result commits).
    replays: HashSet<i64>,
    /// Replays finished since the last read began. They stay claimed until the next read
    /// starts: a read that began before their result committed still shows them marked.
    replays_finished: Vec<i64>,
}

impl InFlight {
    fn release_finished_replays(&mut self) {
        for seq in self.replays_finished.drain(..) {
            self.replays.remove(&seq);
        }
    }
}

pub(super) async fn run(ctx: Arc<Ctx>, concurrency: usize, tracker: InFlightWork) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    // A batch takes one slot per event, so it can never need more slots than there are.
    let chunk_size = CHUNK.min(concurrency.max(1));
    let signal = ctx.store.work_signal();
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    let mut cursor = loop {
        match ctx.store.intake_watermark().await {
            Ok(w) => break w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the intake watermark; retrying");
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut saved = cursor;
    let mut last_save = Instant::now();
    ctx.watermark.store(cursor, Ordering::Relaxed);
    while !ctx.shutdown.is_cancelled() {
        let mut found = 0usize;
        if let Ok(mut f) = in_flight.lock() {
            f.release_finished_replays();
        }
        let replays = ctx
            .store
            .replay_events(READ_BATCH)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read replays; will retry");
                Vec::new()
            });
        let fresh: Vec<StoredEvent> = replays
            .into_iter()
            .filter(|e| {
                in_flight
                    .lock()
                    .map(|mut f| f.replays.insert(e.seq))
                    .unwrap_or(false)
            })
            .collect();
        found += fresh.len();
        for chunk in chunks(fresh, chunk_size) {
            let Some(permits) = acquire(&ctx, &slots, chunk.len()).await else {
                break;
            };
            let (ctx, in_flight) = (Arc::clone(&ctx), Arc::clone(&in_flight));
            tracker.spawn(async move {
                let seqs: Vec<i64> = chunk.iter().map(|e| e.seq).collect();
                route_events(&ctx, chunk, true).await;
                if let Ok(mut f) = in_flight.lock() {
                    f.replays_finished.extend(seqs);
                }
                drop(permits);
            });
        }
        let events = ctx
            .store
            .pending_events(cursor, READ_BATCH)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read pending events; will retry");
                Vec::new()
            });
        for chunk in chunks(events, chunk_size) {
            let Some(permits) = acquire(&ctx, &slots, chunk.len()).await else {
                break;
            };
            found += chunk.len();
            let seqs: Vec<i64> = chunk.iter().map(|e| e.seq).collect();
            cursor = seqs.last().copied().unwrap_or(cursor);
            if let Ok(mut f) = in_flight.lock() {
                f.pending.extend(seqs.iter().copied());
            }
            let (ctx, in_flight) = (Arc::clone(&ctx), Arc::clone(&in_flight));
            tracker.spawn(async move {
                // Unrecorded events (shutdown) stay in flight, so the watermark never passes
                // an event that is still pending in the store.
                if route_events(&ctx, chunk, false).await
                    && let Ok(mut f) = in_flight.lock()
                {
                    for seq in &seqs {
                        f.pending.remove(seq);
                    }
                }
                drop(permits);
            });
        }
        let watermark = in_flight
            .lock()
            .ok()
            .and_then(|f| f.pending.first().map(|s| s - 1))
            .unwrap_or(cursor);
        ctx.watermark.store(watermark, Ordering::Relaxed);
        if watermark != saved && last_save.elapsed() >= WATERMARK_EVERY {
            if ctx.store.set_intake_watermark(watermark).await.is_ok() {
                saved = watermark;
            }
            last_save = Instant::now();
        }
        if found == 0 {
            tokio::select! {
                () = ctx.shutdown.cancelled() => {}
                () = signal.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
}

/// `n` routing slots (one per event), or `None` at shutdown.
async fn acquire(
    ctx: &Ctx,
    slots: &Arc<Semaphore>,
    n: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    tokio::select! {
        () = ctx.shutdown.cancelled() => None,
        permit = Arc::clone(slots).acquire_many_owned(n) => permit.ok(),
    }
}

/// Splits a read into the batches that are routed together.
fn chunks(events: Vec<StoredEvent>, size: usize) -> Vec<Vec<StoredEvent>> {
    let mut out = Vec::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        out.push(events.by_ref().take(size.max(1)).collect());
    }
    out
}
