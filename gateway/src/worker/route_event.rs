//! Routing stored events: match routes, run each route's plugin chain, make the first attempt
//! of every resulting delivery, and record all of it in ONE store write ([`Processed`] per
//! event, a batch per write). Until that write commits an event stays `pending`, so a crash
//! at any point means it is routed again after the restart (deliveries made before the crash
//! are sent again with the same `webhook-id`, so receivers can drop the copy).
//!
//! Events come in small batches: the plugin chains of a batch run in one blocking task (one
//! thread hand-off per batch, not per event) and its results are one store command.
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

/// A route to run, with its existing route run (id, attempts so far) when it is a retry.
type RouteToRun = (Arc<RouteSettings>, Option<(i64, u32)>);

/// One event's routing work.
struct Job {
    event: StoredEvent,
    runs: Vec<RouteToRun>,
    /// The envelope as plugins see it, or why the stored one cannot be read.
    original: Result<PluginEvent, String>,
    /// A replay or a route-run retry.
    append: bool,
}

/// What the plugin chains made of one job.
type ChainOutput = (Vec<RouteResult>, Vec<PluginStep>);

/// Routes new (or replayed) events and records the results. False when the results could
/// not be recorded (shutdown): the events are still pending in the store.
pub(super) async fn route_events(ctx: &Ctx, events: Vec<StoredEvent>, replay: bool) -> bool {
    // The pipeline current now is the one these events finish on, whatever reloads happen.
    let pipeline = ctx.pipeline.load_full();
    let jobs = events
        .into_iter()
        .map(|event| {
            let runs = pipeline
                .router
                .matching(&event.source, &event.event_type)
                .map(|r| (Arc::clone(r), None))
                .collect();
            job(event, runs, replay)
        })
        .collect();
    run_jobs(ctx, &pipeline, jobs).await
}

/// Runs one route again for a route run whose plugin stage asked for a retry. False when the
/// result could not be recorded (shutdown): the run stays due.
pub(super) async fn retry_route_run(ctx: &Ctx, run: DueRouteRun) -> bool {
    let pipeline = ctx.pipeline.load_full();
    match pipeline.router.route(&run.route).cloned() {
        Some(route) => {
            let runs = vec![(route, Some((run.id, run.attempts)))];
            run_jobs(ctx, &pipeline, vec![job(run.event, runs, true)]).await
        }
        None => {
            let gone = Processed {
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
            };
            record(ctx, vec![(run.event, gone)]).await
        }
    }
}

fn job(event: StoredEvent, runs: Vec<RouteToRun>, append: bool) -> Job {
    let original = if runs.is_empty() {
        Err(String::new())
    } else {
        PluginEvent::from_envelope_json(&event.envelope)
            .map_err(|e| format!("the stored envelope cannot be read: {e}"))
    };
    Job {
        event,
        runs,
        original,
        append,
    }
}

async fn run_jobs(ctx: &Ctx, pipeline: &Arc<Pipeline>, jobs: Vec<Job>) -> bool {
    let chains = run_chains(ctx, pipeline, &jobs).await;
    let settled = futures::future::join_all(
        jobs.into_iter()
            .zip(chains)
            .map(|(job, chain)| settle(pipeline, job, chain)),
    )
    .await;
    record(ctx, settled).await
}

/// Runs the plugin chains of every job that has plugins to run, in one blocking task (they
/// hold a thread while they run), at most `plugin_threads` batches at once. Jobs without
/// plugins pass their event through unchanged without leaving the async threads.
async fn run_chains(ctx: &Ctx, pipeline: &Arc<Pipeline>, jobs: &[Job]) -> Vec<ChainOutput> {
    let passthrough = |job: &Job| -> ChainOutput {
        let results = match &job.original {
            Ok(e) => job
                .runs
                .iter()
                .map(|_| RouteResult::Deliver(vec![e.clone()]))
                .collect(),
            Err(_) => Vec::new(),
        };
        (results, Vec::new())
    };
    let needs_plugins =
        |job: &Job| job.original.is_ok() && job.runs.iter().any(|(r, _)| !r.plugins.is_empty());
    let work: Vec<(usize, Vec<Arc<RouteSettings>>, PluginEvent)> = jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| needs_plugins(j))
        .filter_map(|(i, j)| {
            let event = j.original.as_ref().ok()?.clone();
            Some((
                i,
                j.runs.iter().map(|(r, _)| Arc::clone(r)).collect(),
                event,
            ))
        })
        .collect();
    // Jobs with plugins get their output from the chains below (or `failed`).
    let mut out: Vec<ChainOutput> = jobs
        .iter()
        .map(|j| {
            if needs_plugins(j) {
                (Vec::new(), Vec::new())
            } else {
                passthrough(j)
            }
        })
        .collect();
    if work.is_empty() {
        return out;
    }
    let indices: Vec<usize> = work.iter().map(|(i, _, _)| *i).collect();
    let route_counts: Vec<usize> = work.iter().map(|(_, r, _)| r.len()).collect();
    let failed = |reason: &str| -> Vec<ChainOutput> {
        route_counts
            .iter()
            .map(|n| {
                let results = (0..*n)
                    .map(|_| RouteResult::Retry(reason.to_owned(), None))
                    .collect();
                (results, Vec::new())
            })
            .collect()
    };
    let outputs = match ctx.plugin_slots.acquire().await {
        Err(_) => failed("the plugin thread pool is shut down"),
        Ok(_slot) => {
            let pipeline = Arc::clone(pipeline);
            let joined = tokio::task::spawn_blocking(move || {
                work.into_iter()
                    .map(|(_, routes, event)| {
                        let mut steps = Vec::new();
                        let mut results = Vec::with_capacity(routes.len());
                        // Each route gets its own copy; the last one takes the original.
                        if let Some((last, others)) = routes.split_last() {
                            for route in others {
                                let copy = event.clone();
                                results.push(pipeline.router.run_chain(route, copy, &mut steps));
                            }
                            results.push(pipeline.router.run_chain(last, event, &mut steps));
                        }
                        (results, steps)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            joined.unwrap_or_else(|e| failed(&format!("plugin chain task failed: {e}")))
        }
    };
    for (i, output) in indices.into_iter().zip(outputs) {
        if let Some(slot) = out.get_mut(i) {
            *slot = output;
        }
    }
    out
}

/// Turns one job's chain results into deliveries (making each first attempt) and route runs.
async fn settle(pipeline: &Pipeline, job: Job, chain: ChainOutput) -> (StoredEvent, Processed) {
    let Job {
        event,
        runs,
        original,
        append,
    } = job;
    let (results, steps) = chain;
    let bare = |status, route_runs| Processed {
        seq: event.seq,
        status,
        steps: Vec::new(),
        deliveries: Vec::new(),
        route_runs,
        append,
    };
    if runs.is_empty() {
        let processed = bare(EventStatus::Unrouted, Vec::new());
        return (event, processed);
    }
    let original = match original {
        Ok(e) => e,
        Err(reason) => {
            let dead = runs
                .into_iter()
                .map(|(route, existing)| dead_run(route.name.clone(), existing, reason.clone()))
                .collect();
            let processed = bare(EventStatus::Failed, dead);
            return (event, processed);
        }
    };

    let mut leaving: Vec<(Arc<RouteSettings>, Vec<PluginEvent>)> = Vec::new();
    let mut route_runs = Vec::new();
    let mut any_dropped = false;
    for ((route, existing), result) in runs.into_iter().zip(results) {
        let attempts = existing.map_or(0, |(_, a)| a).saturating_add(1);
        let id = existing.map(|(id, _)| id);
        let name = route.name.clone();
        match result {
            RouteResult::Deliver(events) => {
                if id.is_some() {
                    let done = RouteRunState::Done;
                    route_runs.push(run_update(id, name, done, "", attempts));
                }
                leaving.push((route, events));
            }
            RouteResult::Dropped(reason) => {
                any_dropped = true;
                if id.is_some() {
                    let done = RouteRunState::Done;
                    route_runs.push(run_update(id, name, done, &reason, attempts));
                }
            }
            RouteResult::Retry(reason, not_before)
                if attempts < route.plugin_retry.max_attempts =>
            {
                let backoff = &route.plugin_retry.backoff;
                let wait = crate::delivery::next_wait(backoff, attempts, not_before);
                let next_attempt_ms = crate::store::unix_ms()
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                let state = RouteRunState::Retry { next_attempt_ms };
                route_runs.push(run_update(id, name, state, &reason, attempts));
            }
            RouteResult::Retry(reason, _) => {
                let reason = format!("gave up after {attempts} attempts; last: {reason}");
                route_runs.push(dead_run(name, existing, reason));
            }
            RouteResult::Failed(reason) => {
                let dead = RouteRunState::Dead;
                route_runs.push(run_update(id, name, dead, &reason, attempts));
            }
        }
    }

    // One delivery per (event id, destination): two routes may lead the same event there.
    let mut seen = HashSet::new();
    let outgoing: Vec<(&str, &str, &PluginEvent)> = leaving
        .iter()
        .flat_map(|(route, events)| {
            events.iter().flat_map(move |e| {
                route
                    .to
                    .iter()
                    .map(move |d| (route.name.as_str(), d.as_str(), e))
            })
        })
        .filter(|(_, d, e)| seen.insert((e.id.as_str(), *d)))
        .collect();
    let deliveries = futures::future::join_all(outgoing.iter().map(|(route, destination, e)| {
        first_attempt(pipeline, &event, &original, route, destination, e)
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
    let processed = Processed {
        seq: event.seq,
        status,
        steps,
        deliveries,
        route_runs,
        append,
    };
    (event, processed)
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
    let webhook_id = crate::delivery::delivery_id(&stored.source, &event.id);
    let (attempts, state) = match pipeline.targets.get(destination) {
        Some(target) => {
            let (record, state) = attempt(target, &webhook_id, body, 0).await;
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
        webhook_id,
        envelope: changed,
        state,
        attempts,
    }
}

/// Writes the results in one store command; retried until it commits (a full disk must not
/// lose the routing), or given up at shutdown (returns false), in which case the events are
/// still `pending` and are routed again after the restart.
async fn record(ctx: &Ctx, settled: Vec<(StoredEvent, Processed)>) -> bool {
    let (events, processed): (Vec<StoredEvent>, Vec<Processed>) = settled.into_iter().unzip();
    let processed = Arc::new(processed);
    let mut wait = Duration::from_millis(50);
    loop {
        match ctx.store.complete(Arc::clone(&processed)).await {
            Ok(()) => break,
            Err(e) if ctx.shutdown.is_cancelled() => {
                tracing::warn!(events = events.len(), error = %e, "routing results not recorded at shutdown; the events will be routed again");
                return false;
            }
            Err(e) => {
                tracing::warn!(events = events.len(), error = %e, "cannot record routing results; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    for (event, p) in events.iter().zip(processed.iter()) {
        EventRouted {
            metrics: &ctx.metrics,
            seq: event.seq,
            event_id: &event.id,
            result: match p.status {
                EventStatus::Routed | EventStatus::Pending | EventStatus::Replay => "routed",
                EventStatus::Unrouted => "unrouted",
                EventStatus::Dropped => "dropped",
                EventStatus::Retrying => "retrying",
                EventStatus::Failed => "failed",
            },
            deliveries: p.deliveries.len(),
            reason: p.route_runs.first().map(|r| r.reason.as_str()),
        }
        .emit();
    }
    true
}
