//! Routing: which routes take an event, and what each route's plugin chain makes of it.
//!
//! Owns the [`Router`] (the routes and plugins of one config generation) and the chain rules:
//! pass hands the (possibly changed) event to the next plugin, drop stops it, emit sends every
//! emitted event on down the rest of the chain. A chain is all or nothing: if any plugin call
//! in it asks for a retry or fails, the route's result is that retry or failure and none of its
//! events are delivered. A chain is async and runs on the plugin threads ([`Router::plugin_threads`]);
//! each plugin call ends by its deadline (see `plugins`). This module never touches the store
//! or the network.

use crate::config::RouteSettings;
use crate::plugins::{LoadedPlugin, PluginEvent, PluginOutcome, PluginThreads};
use crate::store::PluginStep;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Most events one chain may fan out to (emit inside emit), so a plugin cannot make one
/// webhook into an unbounded number of deliveries.
pub const MAX_FANOUT: usize = 1000;

/// The routes and plugins of one config generation.
#[derive(Debug, Default)]
pub struct Router {
    /// Shared, so routing an event takes its routes without copying them.
    routes: Vec<Arc<RouteSettings>>,
    plugins: HashMap<String, Arc<LoadedPlugin>>,
    /// Where chains run: the threads of the engine that loaded the plugins (one engine loads
    /// them all); none when there are no plugins.
    threads: Option<Arc<PluginThreads>>,
}

/// What one route made of one event.
#[derive(Debug)]
pub enum RouteResult {
    /// These events leave the chain, each to every destination of the route.
    Deliver(Vec<PluginEvent>),
    /// Every branch of the chain dropped the event (the last reason given).
    Dropped(String),
    /// A plugin asked to be called again later (not before the duration, if one is given).
    Retry(String, Option<Duration>),
    /// A plugin failed for good (fatal, trap, timeout, invalid output): a dead letter.
    Failed(String),
}

impl Router {
    /// `plugins` must hold every plugin the routes name (the config compile pass checks it).
    pub fn new(routes: Vec<RouteSettings>, plugins: HashMap<String, Arc<LoadedPlugin>>) -> Self {
        let threads = plugins.values().next().map(|p| Arc::clone(p.threads()));
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
            plugins,
            threads,
        }
    }

    /// The threads [`Self::run_chain`] must run on; `None` when no plugin is loaded.
    pub fn plugin_threads(&self) -> Option<&Arc<PluginThreads>> {
        self.threads.as_ref()
    }

    /// The loaded plugins of this generation, by name.
    pub fn plugins(&self) -> &HashMap<String, Arc<LoadedPlugin>> {
        &self.plugins
    }

    pub fn routes(&self) -> &[Arc<RouteSettings>] {
        &self.routes
    }

    /// Routes that take an event of `source` and `event_type`, in config order.
    pub fn matching<'a>(
        &'a self,
        source: &'a str,
        event_type: &'a str,
    ) -> impl Iterator<Item = &'a Arc<RouteSettings>> + 'a {
        self.routes
            .iter()
            .filter(move |r| r.matches(source, event_type))
    }

    pub fn route(&self, name: &str) -> Option<&Arc<RouteSettings>> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// Runs `route`'s plugins on `event`, recording each call in `steps`. Await it only on
    /// [`Self::plugin_threads`]: the plugins' wasm runs on the thread that polls it.
    pub async fn run_chain(
        &self,
        route: &RouteSettings,
        event: PluginEvent,
        steps: &mut Vec<PluginStep>,
    ) -> RouteResult {
        let mut current = vec![event];
        let mut last_drop = String::new();
        for name in &route.plugins {
            let Some(plugin) = self.plugins.get(name) else {
                return RouteResult::Failed(format!("plugin `{name}` is not loaded"));
            };
            let mut next = Vec::with_capacity(current.len());
            for event in current {
                let call = plugin.call_async(&event).await;
                let (reason, failure) = match &call.outcome {
                    PluginOutcome::Pass(_) | PluginOutcome::Emit(_) => (None, None),
                    PluginOutcome::Drop(r) => (Some(r.clone()), None),
                    PluginOutcome::Retry(r) => (Some(r.clone()), Some(true)),
                    PluginOutcome::Fatal(r)
                    | PluginOutcome::Trap(r)
                    | PluginOutcome::Timeout(r) => (Some(r.clone()), Some(false)),
                };
                steps.push(PluginStep {
                    route: route.name.clone(),
                    plugin: name.clone(),
                    result: call.outcome.label().to_owned(),
                    reason: reason.clone(),
                    micros: u64::try_from(call.elapsed.as_micros()).unwrap_or(u64::MAX),
                });
                let reason = reason.unwrap_or_default();
                let label = call.outcome.label();
                match (call.outcome, failure) {
                    (_, Some(true)) => {
                        return RouteResult::Retry(
                            format!("plugin `{name}` asked to retry: {reason}"),
                            call.retry_after,
                        );
                    }
                    (_, Some(false)) => {
                        return RouteResult::Failed(format!("plugin `{name}` {label}: {reason}"));
                    }
                    (PluginOutcome::Pass(e), None) => next.push(e),
                    (PluginOutcome::Emit(list), None) => next.extend(list),
                    (PluginOutcome::Drop(r), None) => {
                        last_drop = format!("plugin `{name}` dropped it: {r}")
                    }
                    (_, None) => {}
                }
                if next.len() > MAX_FANOUT {
                    return RouteResult::Failed(format!(
                        "plugin `{name}` emitted more than {MAX_FANOUT} events for one event"
                    ));
                }
            }
            if next.is_empty() {
                if last_drop.is_empty() {
                    last_drop = format!("plugin `{name}` emitted no events");
                }
                return RouteResult::Dropped(last_drop);
            }
            current = next;
        }
        RouteResult::Deliver(current)
    }
}
