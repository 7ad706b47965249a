//! Retries: finds deliveries and plugin stages whose next attempt is due and runs them; for
//! destinations with `ordering = "subject"` also their first attempts (the store's claim hands
//! out only each subject's next delivery; a stale one with `stale = "drop"` is recorded as
//! dropped without being sent).
//!
//! Polls the store (the due rows are indexed, so a poll with nothing due is cheap) and claims
//! what is due, so each due row is worked on by one task in the cluster at a time; the destination's own concurrency cap
//! bounds how many attempts reach it at once, however large the backlog. When a new config
//! generation goes live, every waiting plugin stage is made due at once.

use super::attempt::attempt;
use super::route_event::retry_route_run;
use super::{Ctx, InFlightWork};
use crate::config::{OnDead, StaleEvents};
use crate::store::{AttemptDone, AttemptRecord, DeliveryState, DueDelivery, StuckAmount};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How often due work is looked for.
const POLL: Duration = Duration::from_millis(100);
/// How long a wake-up by an ordered delivery waits for others before claiming.
const WAKE_GATHER: Duration = Duration::from_millis(5);
/// Most due rows taken per poll (of each kind).
const READ_BATCH: u32 = 256;
/// Claimed deliveries running (or waiting for their destination's permit) above which a full
/// batch does not make the loop claim again at once: a large backlog (a destination back after
/// an outage) is then taken one batch per poll, as before, instead of all at once.
const RUNNING_FOR_MORE: usize = 4 * READ_BATCH as usize;

pub(super) async fn run(ctx: Arc<Ctx>, tracker: InFlightWork) {
    let mut generation = ctx.pipeline.load().generation;
    let running = Arc::new(AtomicUsize::new(0));
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
        let now = crate::store::unix_ms();
        let mut more = false;
        match ctx.store.claim_due_deliveries(now, READ_BATCH).await {
            Ok(due) => {
                // A full batch: more may be due (an ordered destination's backlog goes
                // through here, not through the first attempts), so look again at once.
                more = due.len() >= READ_BATCH as usize
                    && running.load(Ordering::Relaxed) < RUNNING_FOR_MORE;
                for d in due {
                    let (ctx, running) = (Arc::clone(&ctx), Arc::clone(&running));
                    running.fetch_add(1, Ordering::Relaxed);
                    tracker.spawn(async move {
                        retry_delivery(&ctx, d).await;
                        running.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }
            Err(e) => super::store_trouble("cannot claim due deliveries", &e),
        }
        match ctx.store.claim_due_route_runs(now, READ_BATCH).await {
            Ok(due) => {
                for run in due {
                    let ctx = Arc::clone(&ctx);
                    tracker.spawn(async move {
                        retry_route_run(&ctx, run).await;
                    });
                }
            }
            Err(e) => super::store_trouble("cannot claim due plugin retries", &e),
        }
        if more {
            continue;
        }
        tokio::select! {
            () = ctx.shutdown.cancelled() => {}
            () = ctx.deliveries_due.notified() => {
                // Ordered deliveries settle in bursts: one claim per burst, not one each
                // (every claim reads the due ordered deliveries).
                tokio::time::sleep(WAKE_GATHER).await;
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn retry_delivery(ctx: &Ctx, due: DueDelivery) {
    let pipeline = ctx.pipeline.load_full();
    let target = pipeline.targets.get(&due.destination);
    let ordering = target.and_then(|t| t.settings.ordering);
    let (record, state) = match target {
        Some(_) if due.stale && ordering.is_some_and(|o| o.stale == StaleEvents::Drop) => {
            let reason = "stale: a later event of its subject was delivered before this one \
                          arrived (stale = \"drop\")";
            let record = AttemptRecord {
                at: crate::store::unix_ms(),
                status: None,
                error: Some(format!("not sent; {reason}")),
                duration_ms: 0,
            };
            let state = DeliveryState::Dropped {
                reason: reason.to_owned(),
            };
            (record, state)
        }
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
    let settled = !matches!(state, DeliveryState::Pending { .. });
    let done = AttemptDone {
        delivery_id: due.id,
        attempt: record,
        stuck: StuckAmount::if_dead(&state, &due.envelope),
        state,
        holds_subject: ordering.is_some_and(|o| o.on_dead == OnDead::Hold),
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
    if settled && ordering.is_some() {
        // The next delivery of its subject may go now.
        ctx.deliveries_due.notify_one();
    }
}
