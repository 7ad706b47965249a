//! Intake: claims the events waiting to be routed (new ones oldest first, and replays) and
//! hands them, in small batches, to [`route_events`], at most `workers.concurrency` events at a
//! time. Back-pressure: it claims only as many as it has free slots for, so unclaimed events
//! wait in the store, where they are safe and where another replica may take them.
//!
//! It wakes on the store's work signal and polls once a second as a backstop. Which events
//! are waiting, and who holds which, is the store's business (see `Store::claim_events`).

use super::route_event::route_events;
use super::{Ctx, InFlightWork};
use crate::store::ClaimedEvent;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Most events claimed at once.
const CLAIM_BATCH: usize = 512;
/// Events routed together: side by side, their results in one store command. Small enough that
/// one slow delivery or plugin call holds up few others' results.
const CHUNK: usize = 32;
/// Longest intake sleeps without a signal (a backstop; signals normally wake it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long intake waits before claiming again after the store failed.
const FAILURE_PAUSE: Duration = Duration::from_millis(250);

pub(super) async fn run(ctx: Arc<Ctx>, concurrency: usize, tracker: InFlightWork) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    // A batch takes one slot per event, so it can never need more slots than there are.
    let chunk_size = CHUNK.min(concurrency.max(1));
    let signal = ctx.store.work_signal();
    while !ctx.shutdown.is_cancelled() {
        // Wait for a free slot, then claim as many events as there are free slots: intake is
        // the only one taking slots, so they are still free when the batches take them.
        let Some(one) = acquire(&ctx, &slots, 1).await else {
            break;
        };
        drop(one);
        let room = slots.available_permits().min(CLAIM_BATCH);
        let claimed = match ctx
            .store
            .claim_events(u32::try_from(room).unwrap_or(u32::MAX))
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                super::store_trouble("cannot claim events to route", &e);
                pause(&ctx, FAILURE_PAUSE).await;
                continue;
            }
        };
        let found = claimed.len();
        for chunk in chunks(claimed, chunk_size) {
            let Some(permits) = acquire(&ctx, &slots, chunk.len()).await else {
                break;
            };
            let ctx = Arc::clone(&ctx);
            tracker.spawn(async move {
                route_events(&ctx, chunk).await;
                drop(permits);
            });
        }
        if found < room {
            // Everything waiting was claimed: sleep until there may be more.
            tokio::select! {
                () = ctx.shutdown.cancelled() => {}
                () = signal.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
}

async fn pause(ctx: &Ctx, how_long: Duration) {
    tokio::select! {
        () = ctx.shutdown.cancelled() => {}
        () = tokio::time::sleep(how_long) => {}
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

/// Splits a claim into the batches that are routed together.
fn chunks(events: Vec<ClaimedEvent>, size: usize) -> Vec<Vec<ClaimedEvent>> {
    let mut out = Vec::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        out.push(events.by_ref().take(size.max(1)).collect());
    }
    out
}
