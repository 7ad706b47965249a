//! Retries: finds deliveries and plugin stages whose next attempt is due and runs them.
//!
//! Polls the store (the due rows are indexed, so a poll with nothing due is cheap). Each due
//! row is worked on by at most one task at a time; the destination's own concurrency cap
//! bounds how many attempts reach it at once, however large the backlog. When a new config
//! generation goes live, every waiting plugin stage is made due at once.

use super::attempt::attempt;
use super::route_event::retry_route_run;
use super::{Ctx, InFlightWork};
use crate::store::{AttemptDone, AttemptRecord, DeliveryState, DueDelivery};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often due work is looked for.
const POLL: Duration = Duration::from_millis(100);
/// Most due rows taken per poll (of each kind).
const READ_BATCH: u32 = 256;

pub(super) async fn run(ctx: Arc<Ctx>, tracker: InFlightWork) {
    let deliveries: Arc<Mutex<Claims>> = Arc::default();
    let runs: Arc<Mutex<Claims>> = Arc::default();
    let mut generation = ctx.pipeline.load().generation;
    while !ctx.shutdown.is_cancelled() {
        // A new config generation (a replaced plugin, a changed route) may be what waiting
        // plugin stages wait for: they are tried again now, not at their scheduled time.
        let live = ctx.pipeline.load().generation;
        if live != generation {
            match ctx
                .store
                .redrive(crate::store::RedriveSelection::WaitingRouteRuns)
                .await
            {
                Ok(n) => {
                    generation = live;
                    if n > 0 {
                        tracing::info!(generation, waiting = n, "plugin stages retried now");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot reschedule waiting plugin stages"),
            }
        }
        // Before reading: rows whose work finished before this read are free again.
        release_finished(&deliveries);
        release_finished(&runs);
        let now = crate::store::unix_ms();
        match ctx.store.due_deliveries(now, READ_BATCH).await {
            Ok(due) => {
                for d in due {
                    if !claim(&deliveries, d.id) {
                        continue;
                    }
                    let (ctx, deliveries) = (Arc::clone(&ctx), Arc::clone(&deliveries));
                    tracker.spawn(async move {
                        let id = d.id;
                        retry_delivery(&ctx, d).await;
                        finish(&deliveries, id);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due deliveries; will retry"),
        }
        match ctx.store.due_route_runs(now, READ_BATCH).await {
            Ok(due) => {
                for run in due {
                    if !claim(&runs, run.id) {
                        continue;
                    }
                    let (ctx, runs) = (Arc::clone(&ctx), Arc::clone(&runs));
                    tracker.spawn(async move {
                        let id = run.id;
                        retry_route_run(&ctx, run).await;
                        finish(&runs, id);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due plugin retries; will retry"),
        }
        tokio::select! {
            () = ctx.shutdown.cancelled() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The due rows being worked on. A row whose work is done stays claimed until the next poll
/// begins: a read that started before the row's attempt was recorded still shows it due (with
/// the old attempt count), and must not start that attempt again.
#[derive(Debug, Default)]
struct Claims {
    working: HashSet<i64>,
    /// Done since the last poll began; released before the next read.
    finished: Vec<i64>,
}

fn claim(claims: &Mutex<Claims>, id: i64) -> bool {
    claims
        .lock()
        .map(|mut c| c.working.insert(id))
        .unwrap_or(false)
}

fn finish(claims: &Mutex<Claims>, id: i64) {
    if let Ok(mut c) = claims.lock() {
        c.finished.push(id);
    }
}

fn release_finished(claims: &Mutex<Claims>) {
    if let Ok(mut c) = claims.lock() {
        let Claims { working, finished } = &mut *c;
        for id in finished.drain(..) {
            working.remove(&id);
        }
    }
}

async fn retry_delivery(ctx: &Ctx, due: DueDelivery) {
    let pipeline = ctx.pipeline.load_full();
    let (record, state) = match pipeline.targets.get(&due.destination) {
        Some(target) => attempt(target, &due.webhook_id, &due.envelope, due.attempts).await,
        None => (
            AttemptRecord {
                at: crate::store::unix_ms(),
                status: None,
                error: Some(format!(
                    "destination `{}` is no longer configured",
                    due.destination
                )),
                duration_ms: 0,
            },
            DeliveryState::Dead {
                reason: format!("destination `{}` is no longer configured", due.destination),
            },
        ),
    };
    let done = AttemptDone {
        delivery_id: due.id,
        attempt: record,
        state,
    };
    let mut wait = Duration::from_millis(50);
    while let Err(e) = ctx.store.record_attempt(done.clone()).await {
        if ctx.shutdown.is_cancelled() {
            // The delivery stays due; it is attempted again after the restart.
            return;
        }
        tracing::warn!(delivery = due.id, error = %e, "cannot record a delivery attempt; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
