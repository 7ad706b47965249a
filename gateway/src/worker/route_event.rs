//! Routing stored events: match routes, run each route's plugin chain, make the first attempt
//! of every resulting delivery (except to a destination with `ordering = "subject"`: those are
//! recorded waiting, with their ordering key, and the retry worker's claim sends them in
//! order), and record all of it in ONE store write ([`Processed`] per
//! event, a batch per write). Until that write commits an event stays `pending`, so a crash
//! at any point means it is routed again after the restart (deliveries made before the crash
//! are sent again with the same `webhook-id`, so receivers can drop the copy).
//!
//! Events come in small batches: a batch's plugin chains are handed to the plugin threads in
//! one task (one task per event there), each event's first attempts are made as soon as its
//! chains are done, and the batch's results are one store command. Route runs that wait for a plugin retry come back through [`retry_route_run`].

use super::Ctx;
use super::attempt::attempt;
use super::pipeline::Pipeline;
use crate::config::RouteSettings;
use crate::metrics::flow_events::EventRouted;
use crate::plugins::PluginEvent;
use crate::routing::RouteResult;
use crate::store::{
    ClaimedEvent, DeliveryState, DueRouteRun, EventStatus, NewDelivery, PluginStep, Processed,
    RouteRunState, RouteRunUpdate, StoredEvent, StuckAmount,
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

/// Routes claimed events (new or replayed) and records the results. False when the results
/// could not be recorded (shutdown): the events still wait in the store.
pub(super) async fn route_events(ctx: &Ctx, events: Vec<ClaimedEvent>) -> bool {
    // The pipeline current now is the one these events finish on, whatever reloads happen.
    let pipeline = ctx.pipeline.load_full();
    let jobs = events
        .into_iter()
        .map(|ClaimedEvent { event, replay }| {
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

/// Runs every job's plugin chains and first attempts side by side, then records the batch in
/// one store command. A plugin call waiting until its deadline delays only its own event and
/// the batch's record, never the other events' chains or deliveries.
async fn run_jobs(ctx: &Ctx, pipeline: &Arc<Pipeline>, jobs: Vec<Job>) -> bool {
    let chains = start_chains(pipeline, &jobs);
    let settled =
        futures::future::join_all(jobs.into_iter().zip(chains).map(|(job, chain)| async move {
            let chain = chain.output().await;
            settle(pipeline, job, chain).await
        }))
        .await;
    record(ctx, settled).await
}

/// One job's plugin chains: done at once (no plugin to run) or coming from the plugin threads.
enum Chains {
    Done(ChainOutput),
    Running {
        output: tokio::sync::oneshot::Receiver<ChainOutput>,
        routes: usize,
    },
}

impl Chains {
    async fn output(self) -> ChainOutput {
        match self {
            Self::Done(output) => output,
            // The plugin threads stopped (shutdown) before the chains ended: the event is not at
            // fault, so its routes are retried.
            Self::Running { output, routes } => output.await.unwrap_or_else(|_| {
                let retry = || {
                    let reason = "the plugin threads stopped before the plugin chain ended";
                    RouteResult::Retry(reason.to_owned(), None)
                };
                ((0..routes).map(|_| retry()).collect(), Vec::new())
            }),
        }
    }
}

/// Starts the plugin chains of every job that has any, all in ONE task handed to the plugin
/// threads (crossing over costs a thread wake-up; once per call it cost ~14% of the end-to-end
/// rate), which spawns a task per event there, so an event whose plugin waits holds up no
/// other. Jobs without plugins pass their event through unchanged without leaving this thread.
fn start_chains(pipeline: &Arc<Pipeline>, jobs: &[Job]) -> Vec<Chains> {
    let mut work = Vec::new();
    let chains = jobs
        .iter()
        .map(|job| {
            let event = match &job.original {
                Ok(e) if job.runs.iter().any(|(r, _)| !r.plugins.is_empty()) => e,
                Ok(e) => {
                    let through = job
                        .runs
                        .iter()
                        .map(|_| RouteResult::Deliver(vec![e.clone()]))
                        .collect();
                    return Chains::Done((through, Vec::new()));
                }
                Err(_) => return Chains::Done((Vec::new(), Vec::new())),
            };
            let (sender, output) = tokio::sync::oneshot::channel();
            let routes: Vec<Arc<RouteSettings>> =
                job.runs.iter().map(|(r, _)| Arc::clone(r)).collect();
            let count = routes.len();
            work.push((sender, routes, event.clone()));
            Chains::Running {
                output,
                routes: count,
            }
        })
        .collect();
    if !work.is_empty() {
        let chains_of = Arc::clone(pipeline);
        let batch = async move {
            for (sender, routes, event) in work {
                let pipeline = Arc::clone(&chains_of);
                tokio::spawn(async move {
                    let output = run_routes(&pipeline, routes, event).await;
                    // The receiver is gone only if its batch was abandoned at shutdown.
                    drop(sender.send(output));
                });
            }
        };
        match pipeline.router.plugin_threads() {
            Some(threads) => drop(threads.spawn(batch)),
            // No plugin is loaded, so no chain can call one: nothing to hand over.
            None => drop(tokio::spawn(batch)),
        }
    }
    chains
}

/// Runs the chains of one event's routes (on the plugin threads); a route without plugins
/// passes the event through unchanged. Routes with plugins run side by side, each in a task of
/// its own (so each call has a thread to itself while its wasm runs).
async fn run_routes(
    pipeline: &Arc<Pipeline>,
    routes: Vec<Arc<RouteSettings>>,
    event: PluginEvent,
) -> ChainOutput {
    let chain = |route: Arc<RouteSettings>, event: PluginEvent| {
        let pipeline = Arc::clone(pipeline);
        async move {
            let mut steps = Vec::new();
            let result = if route.plugins.is_empty() {
                RouteResult::Deliver(vec![event])
            } else {
                pipeline.router.run_chain(&route, event, &mut steps).await
            };
            (result, steps)
        }
    };
    let outputs = if let [route] = routes.as_slice() {
        vec![chain(Arc::clone(route), event).await]
    } else {
        let running: Vec<_> = routes
            .into_iter()
            .map(|route| tokio::spawn(chain(route, event.clone())))
            .collect();
        let mut outputs = Vec::with_capacity(running.len());
        for task in running {
            outputs.push(task.await.unwrap_or_else(|e| {
                let reason = format!("plugin chain task failed: {e}");
                (RouteResult::Retry(reason, None), Vec::new())
            }));
        }
        outputs
    };
    let mut results = Vec::with_capacity(outputs.len());
    let mut steps = Vec::new();
    for (result, route_steps) in outputs {
        results.push(result);
        steps.extend(route_steps);
    }
    (results, steps)
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
    let target = pipeline.targets.get(destination);
    // To an ordered destination the first attempt waits for the store's claim, which hands
    // out a subject's deliveries one at a time, in order, after the reorder window.
    let order = target
        .and_then(|t| t.settings.ordering)
        .and_then(|ordering| Some((ordering, super::order_key::delivery_order(event)?)));
    if let Some((ordering, order)) = order {
        let window = i64::try_from(ordering.reorder_window.as_millis()).unwrap_or(i64::MAX);
        return NewDelivery {
            route: route.to_owned(),
            destination: destination.to_owned(),
            webhook_id,
            envelope: changed,
            state: DeliveryState::Pending {
                next_attempt_ms: crate::store::unix_ms().saturating_add(window),
            },
            attempts: Vec::new(),
            order: Some(order),
            stuck: None,
        };
    }
    let (attempts, state) = match target {
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
        stuck: StuckAmount::if_dead(&state, body),
        envelope: changed,
        state,
        attempts,
        order: None,
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
    if processed
        .iter()
        .any(|p| p.deliveries.iter().any(|d| d.order.is_some()))
    {
        ctx.deliveries_due.notify_one();
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
