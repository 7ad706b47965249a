//! Routing one stored event: match routes, run each route's plugin chain, make the first
//! attempt of every resulting delivery, and record all of it in ONE store write
//! ([`Processed`]). Until that write commits the event stays `pending`, so a crash at any
//! point means it is routed again after the restart (deliveries made before the crash are
//! sent again with the same `webhook-id`, so receivers can drop the copy).
//!
//! Route runs that wait for a plugin retry come back through [`retry_route_run`].

use super::Ctx;
use super::attempt::attempt;
use super::pipeline::Pipeline;
use crate::config::RouteSettings;
use crate::metrics::flow_events::EventRouted;
use crate::plugins::PluginEvent;
use crate::routing::RouteResult;
use crate::store::{
    DeliveryState, DueRouteRun, EventStatus, NewDelivery, PluginStep, Processed, RouteRunState,
    RouteRunUpdate, StoredEvent,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Plugin-stage attempts (the first run included) before a route run is a dead letter.
pub(super) const PLUGIN_MAX_ATTEMPTS: u32 = 10;
/// Backoff between plugin-stage attempts.
const PLUGIN_BACKOFF: crate::config::Backoff = crate::config::Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
};

/// Routes a new (or replayed) event and records the result.
pub(super) async fn route_event(ctx: &Ctx, event: StoredEvent, replay: bool) {
    // The pipeline current now is the one this event finishes on, whatever reloads happen.
    let pipeline = ctx.pipeline.load_full();
    let routes: Vec<RouteSettings> = pipeline
        .router
        .matching(&event.source, &event.event_type)
        .cloned()
        .collect();
    let processed = if routes.is_empty() {
        Processed {
            seq: event.seq,
            status: EventStatus::Unrouted,
            steps: Vec::new(),
            deliveries: Vec::new(),
            route_runs: Vec::new(),
            append: replay,
        }
    } else {
        let runs = routes.into_iter().map(|r| (r, None)).collect();
        settle(ctx, &pipeline, &event, runs, replay).await
    };
    record(ctx, &event, processed).await;
}

/// Runs one route again for a route run whose plugin stage asked for a retry.
pub(super) async fn retry_route_run(ctx: &Ctx, run: DueRouteRun) {
    let pipeline = ctx.pipeline.load_full();
    let processed = match pipeline.router.route(&run.route).cloned() {
        Some(route) => {
            let runs = vec![(route, Some((run.id, run.attempts)))];
            settle(ctx, &pipeline, &run.event, runs, true).await
        }
        None => Processed {
            seq: run.event.seq,
            status: EventStatus::Failed,
            steps: Vec::new(),
            deliveries: Vec::new(),
            route_runs: vec![RouteRunUpdate {
                id: Some(run.id),
                route: run.route.clone(),
                state: RouteRunState::Dead,
                reason: format!("route `{}` is no longer configured", run.route),
                attempts: run.attempts,
            }],
            append: true,
        },
    };
    record(ctx, &run.event, processed).await;
}

/// A route to run, with its existing route run (id, attempts so far) when it is a retry.
type RouteToRun = (RouteSettings, Option<(i64, u32)>);

async fn settle(
    ctx: &Ctx,
    pipeline: &Arc<Pipeline>,
    event: &StoredEvent,
    runs: Vec<RouteToRun>,
    append: bool,
) -> Processed {
    let original = match PluginEvent::from_envelope_json(&event.envelope) {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("the stored envelope cannot be read: {e}");
            return Processed {
                seq: event.seq,
                status: EventStatus::Failed,
                steps: Vec::new(),
                deliveries: Vec::new(),
                route_runs: runs
                    .into_iter()
                    .map(|(route, existing)| dead_run(route.name, existing, reason.clone()))
                    .collect(),
                append,
            };
        }
    };
    let (results, steps) = run_chains(ctx, pipeline, &runs, &original).await;

    let mut outgoing = Vec::new();
    let mut seen = HashSet::new();
    let mut route_runs = Vec::new();
    let mut any_dropped = false;
    for ((route, existing), result) in runs.into_iter().zip(results) {
        let attempts = existing.map_or(0, |(_, a)| a).saturating_add(1);
        let id = existing.map(|(id, _)| id);
        match result {
            RouteResult::Deliver(events) => {
                for e in events {
                    for destination in &route.to {
                        // Two routes may lead the same event to one destination: send it once.
                        if seen.insert((e.id.clone(), destination.clone())) {
                            outgoing.push((route.name.clone(), destination.clone(), e.clone()));
                        }
                    }
                }
                if id.is_some() {
                    route_runs.push(run_update(
                        id,
                        route.name,
                        RouteRunState::Done,
                        "",
                        attempts,
                    ));
                }
            }
            RouteResult::Dropped(reason) => {
                any_dropped = true;
                if id.is_some() {
                    let done = RouteRunState::Done;
                    route_runs.push(run_update(id, route.name, done, &reason, attempts));
                }
            }
            RouteResult::Retry(reason) if attempts < PLUGIN_MAX_ATTEMPTS => {
                let wait = crate::delivery::next_wait(&PLUGIN_BACKOFF, attempts, None);
                let next_attempt_ms = crate::store::unix_ms()
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                let state = RouteRunState::Retry { next_attempt_ms };
                route_runs.push(run_update(id, route.name, state, &reason, attempts));
            }
            RouteResult::Retry(reason) => {
                let reason = format!("gave up after {attempts} attempts; last: {reason}");
                route_runs.push(dead_run(route.name, existing, reason));
            }
            RouteResult::Failed(reason) => {
                route_runs.push(run_update(
                    id,
                    route.name,
                    RouteRunState::Dead,
                    &reason,
                    attempts,
                ));
            }
        }
    }

    let deliveries = futures::future::join_all(outgoing.iter().map(|(route, destination, e)| {
        first_attempt(pipeline, event, &original, route, destination, e)
    }))
    .await;

    let status = if route_runs.iter().any(|r| r.state == RouteRunState::Dead) {
        EventStatus::Failed
    } else if route_runs
        .iter()
        .any(|r| matches!(r.state, RouteRunState::Retry { .. }))
    {
        EventStatus::Retrying
    } else if !deliveries.is_empty() {
        EventStatus::Routed
    } else if any_dropped {
        EventStatus::Dropped
    } else {
        EventStatus::Routed
    };
    Processed {
        seq: event.seq,
        status,
        steps,
        deliveries,
        route_runs,
        append,
    }
}

fn run_update(
    id: Option<i64>,
    route: String,
    state: RouteRunState,
    reason: &str,
    attempts: u32,
) -> RouteRunUpdate {
    RouteRunUpdate {
        id,
        route,
        state,
        reason: reason.to_owned(),
        attempts,
    }
}

fn dead_run(route: String, existing: Option<(i64, u32)>, reason: String) -> RouteRunUpdate {
    RouteRunUpdate {
        id: existing.map(|(id, _)| id),
        route,
        state: RouteRunState::Dead,
        reason,
        attempts: existing.map_or(0, |(_, a)| a).saturating_add(1),
    }
}

/// Runs every route's plugin chain. Chains hold a thread while they run, so they run on the
/// blocking pool, at most `plugin_threads` events at a time; routes without plugins skip that.
async fn run_chains(
    ctx: &Ctx,
    pipeline: &Arc<Pipeline>,
    runs: &[RouteToRun],
    original: &PluginEvent,
) -> (Vec<RouteResult>, Vec<PluginStep>) {
    if runs.iter().all(|(r, _)| r.plugins.is_empty()) {
        let results = runs
            .iter()
            .map(|_| RouteResult::Deliver(vec![original.clone()]))
            .collect();
        return (results, Vec::new());
    }
    let routes: Vec<RouteSettings> = runs.iter().map(|(r, _)| r.clone()).collect();
    let count = routes.len();
    let Ok(_slot) = ctx.plugin_slots.acquire().await else {
        let reason = "the plugin thread pool is shut down".to_owned();
        return (
            (0..count)
                .map(|_| RouteResult::Retry(reason.clone()))
                .collect(),
            Vec::new(),
        );
    };
    let pipeline = Arc::clone(pipeline);
    let event = original.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut steps = Vec::new();
        let results = routes
            .iter()
            .map(|route| pipeline.router.run_chain(route, event.clone(), &mut steps))
            .collect::<Vec<_>>();
        (results, steps)
    })
    .await;
    joined.unwrap_or_else(|e| {
        let reason = format!("plugin chain task failed: {e}");
        (
            (0..count)
                .map(|_| RouteResult::Retry(reason.clone()))
                .collect(),
            Vec::new(),
        )
    })
}

async fn first_attempt(
    pipeline: &Pipeline,
    stored: &StoredEvent,
    original: &PluginEvent,
    route: &str,
    destination: &str,
    event: &PluginEvent,
) -> NewDelivery {
    // An event no plugin changed is sent exactly as stored (and not stored twice).
    let changed = (!event.same_as(original)).then(|| event.to_envelope_json());
    let body = changed.as_deref().unwrap_or(&stored.envelope);
    let (attempts, state) = match pipeline.targets.get(destination) {
        Some(target) => {
            let (record, state) = attempt(target, &event.id, body, 0).await;
            (vec![record], state)
        }
        None => (
            Vec::new(),
            DeliveryState::Dead {
                reason: format!("destination `{destination}` is not configured"),
            },
        ),
    };
    NewDelivery {
        route: route.to_owned(),
        destination: destination.to_owned(),
        webhook_id: event.id.clone(),
        envelope: changed,
        state,
        attempts,
    }
}

/// Writes the result; retried until it commits (a full disk must not lose the routing), or
/// given up at shutdown, in which case the event is still `pending` and is routed again.
async fn record(ctx: &Ctx, event: &StoredEvent, processed: Processed) {
    let reason = processed.route_runs.first().map(|r| r.reason.clone());
    let result = match processed.status {
        EventStatus::Routed | EventStatus::Pending | EventStatus::Replay => "routed",
        EventStatus::Unrouted => "unrouted",
        EventStatus::Dropped => "dropped",
        EventStatus::Retrying => "retrying",
        EventStatus::Failed => "failed",
    };
    let deliveries = processed.deliveries.len();
    let processed = Arc::new(processed);
    let mut wait = Duration::from_millis(50);
    loop {
        match ctx.store.complete(Arc::clone(&processed)).await {
            Ok(()) => break,
            Err(e) if ctx.shutdown.is_cancelled() => {
                tracing::warn!(seq = event.seq, error = %e, "routing result not recorded at shutdown; the event will be routed again");
                return;
            }
            Err(e) => {
                tracing::warn!(seq = event.seq, error = %e, "cannot record the routing result; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    EventRouted {
        metrics: &ctx.metrics,
        seq: event.seq,
        event_id: &event.id,
        result,
        deliveries,
        reason: reason.as_deref(),
    }
    .emit();
}
