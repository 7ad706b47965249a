//! One loaded plugin and a call of it on one event, under its limits.
//!
//! Fresh mode builds a new store and instance per event from the pre-linked [`PluginPre`]
//! (pooled, so this is cheap). Warm mode keeps instances in a small pool, reuses them, and
//! throws one away after any trap or timeout and after `max_events_per_instance` events, so
//! state corrupted by a failing event never reaches the next one.
//!
//! A call ends at its deadline whatever it is doing: running wasm is interrupted by the epoch
//! (or stopped by fuel), and a call waiting in a host call (a WASI sleep or poll) is dropped
//! by a timeout at the deadline, which unwinds it. Either way the outcome is `Timeout`, which
//! the health breaker counts. Calls run on the engine's plugin threads (`threads.rs`), never
//! on the caller's async threads.

use super::bindings::{self, Failure, PluginPre, Verdict};
use super::event::PluginEvent;
use super::health::{Admission, PluginHealth};
use super::state::{PluginLog, PluginState, STDERR_CAPACITY};
use super::threads::PluginThreads;
use super::{PluginOutcome, engine::EpochDemand};
use crate::config::{InstanceMode, PluginLimits, PluginSettings};
use crate::metrics::PluginMetrics;
use crate::metrics::events::{
    PluginCalled, PluginHealthChanged, PluginSkipped, plugin_health_gauge,
};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline};

/// Fuel given when the config sets no fuel limit (the deadline still applies).
const UNLIMITED_FUEL: u64 = u64::MAX / 2;
/// Most idle warm instances kept per plugin.
const MAX_IDLE_WARM: usize = 16;

/// The result of one call: the outcome plus what an author needs to debug it.
#[derive(Debug)]
pub struct PluginCall {
    pub outcome: PluginOutcome,
    pub logs: Vec<PluginLog>,
    pub elapsed: Duration,
    pub fuel_used: u64,
    /// A `retry` that is pointless before this long (the plugin is unhealthy until its next
    /// probe); the retry schedule waits at least this.
    pub retry_after: Option<Duration>,
}

struct WarmInstance {
    store: Store<PluginState>,
    plugin: bindings::Plugin,
    calls: u64,
}

/// A compiled, pre-linked plugin ready to run events.
pub struct LoadedPlugin {
    name: String,
    engine: Engine,
    epoch: EpochDemand,
    threads: Arc<PluginThreads>,
    pre: PluginPre<PluginState>,
    limits: PluginLimits,
    mode: InstanceMode,
    settings: Arc<BTreeMap<String, String>>,
    env: Arc<[(String, String)]>,
    warm: Mutex<Vec<WarmInstance>>,
    metrics: Option<PluginMetrics>,
    health: Arc<PluginHealth>,
    /// SHA-256 over the component bytes and every setting that shapes a call: a reload that
    /// leaves it unchanged keeps the plugin's health.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    pub(super) fn new(
        engine: Engine,
        epoch: EpochDemand,
        threads: Arc<PluginThreads>,
        pre: PluginPre<PluginState>,
        s: &PluginSettings,
        fingerprint: [u8; 32],
    ) -> Self {
        Self {
            name: s.name.clone(),
            engine,
            epoch,
            threads,
            pre,
            limits: s.limits,
            mode: s.mode,
            settings: Arc::new(s.settings.clone()),
            env: s.env.clone().into(),
            warm: Mutex::new(Vec::new()),
            metrics: None,
            health: Arc::new(PluginHealth::new(s.health)),
            fingerprint,
        }
    }

    /// Counts this plugin's calls in `gateway_plugin_calls_total` and its duration histogram.
    pub fn with_metrics(mut self, metrics: PluginMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets `gateway_plugin_unhealthy` to this plugin's health: called when its generation
    /// goes live (a generation that is built but refused must not change the gauge).
    pub fn show_health(&self) {
        if let Some(m) = &self.metrics {
            plugin_health_gauge(m, self.health.is_healthy());
        }
    }

    /// Takes over the health of the same plugin in the running generation, when nothing that
    /// shapes a call changed (same component, same settings); otherwise it starts healthy.
    pub fn keep_health_of(mut self, running: &LoadedPlugin) -> Self {
        if running.fingerprint == self.fingerprint {
            self.health = Arc::clone(&running.health);
        }
        self
    }

    pub fn health(&self) -> &PluginHealth {
        &self.health
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn new_store(&self) -> Store<PluginState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.limits.memory).unwrap_or(usize::MAX))
            .table_elements(usize::try_from(self.limits.table_elements).unwrap_or(usize::MAX))
            .trap_on_grow_failure(true)
            .build();
        let state = PluginState::new(limits, Arc::clone(&self.settings), &self.env);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Every tick the running call looks at the clock: past its deadline it is interrupted,
        // otherwise it yields (a 1 ms time slice), so the plugin threads can run timers and
        // cut off calls that wait in a host call. Ticks can arrive late and then in a burst, so
        // a tick is a cue to look at the clock, not a verdict: a call is interrupted once its
        // own wall-clock deadline has passed, never before.
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.deadline <= Instant::now() {
                return Ok(UpdateDeadline::Interrupt);
            }
            state.yielded.store(true, Ordering::Release);
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store
    }

    fn fuel_budget(&self) -> u64 {
        self.limits.fuel.unwrap_or(UNLIMITED_FUEL)
    }

    /// Sets the fuel and the deadline for one call; instantiation and `handle` share the
    /// call's deadline, so a slow start leaves less time to run.
    fn arm(
        &self,
        store: &mut Store<PluginState>,
        deadline: Instant,
    ) -> Result<(), wasmtime::Error> {
        store.set_fuel(self.fuel_budget())?;
        store.set_epoch_deadline(1);
        let state = store.data_mut();
        state.deadline = deadline;
        state.yielded.store(false, Ordering::Release);
        state.logs.clear();
        Ok(())
    }

    /// Runs the plugin on one event. Never panics and never fails the caller: every problem
    /// (trap, timeout, out of memory, invalid output) is an outcome with its reason. An
    /// unhealthy plugin is not run at all: the outcome is `retry` with the reason.
    ///
    /// The wasm runs on the thread that polls this future, so await it only on the plugin
    /// threads (in a task of [`Self::threads`]' `spawn`), never on the gateway's async threads.
    pub async fn call_async(&self, event: &PluginEvent) -> PluginCall {
        let admission = self.health.admit();
        if let Admission::Skip { reason, probe_in } = admission {
            PluginSkipped {
                metrics: self.metrics.as_ref(),
                plugin: &self.name,
                event_id: &event.id,
            }
            .emit();
            return PluginCall {
                outcome: PluginOutcome::Retry(reason),
                logs: Vec::new(),
                elapsed: Duration::ZERO,
                fuel_used: 0,
                retry_after: Some(probe_in),
            };
        }
        let call = self.run(event).await;
        let failure = match &call.outcome {
            PluginOutcome::Trap(r) | PluginOutcome::Timeout(r) => Some(r.as_str()),
            _ => None,
        };
        if let Some(transition) = self.health.record(&admission, failure) {
            PluginHealthChanged {
                metrics: self.metrics.as_ref(),
                plugin: &self.name,
                transition: &transition,
            }
            .emit();
        }
        call
    }

    /// The admin API's dry run: one call like any other (limits, metrics), but it neither
    /// waits for nor changes the plugin's health, so trying a plugin on a stored event never
    /// marks it unhealthy. (A `warm` plugin runs on a warm instance, as a real call would.)
    /// Await it on the plugin threads, as [`Self::call_async`].
    pub async fn dry_run(&self, event: &PluginEvent) -> PluginCall {
        self.run(event).await
    }

    /// The engine's plugin threads, where [`Self::call_async`] must run.
    pub fn threads(&self) -> &Arc<PluginThreads> {
        &self.threads
    }

    /// [`Self::call_async`] for synchronous callers (`gateway plugin run`, tests): blocks the
    /// calling thread, which runs the wasm, until the call ends. Panics in async code.
    pub fn call(&self, event: &PluginEvent) -> PluginCall {
        self.threads.block_on(self.call_async(event))
    }

    async fn run(&self, event: &PluginEvent) -> PluginCall {
        let place = self.threads.admit().await;
        // The epoch advances only while some call holds it: from before the deadline is armed
        // until this call returns.
        let _epoch = self.epoch.hold();
        let started = Instant::now();
        let deadline = started + self.limits.timeout;
        let warm = match self.mode {
            InstanceMode::Warm { .. } => self.warm.lock().ok().and_then(|mut idle| idle.pop()),
            InstanceMode::Fresh => None,
        };
        let (mut store, instance, calls) = match warm {
            Some(w) => (w.store, Some(w.plugin), w.calls),
            None => (self.new_store(), None, 0),
        };
        if let Err(e) = self.arm(&mut store, deadline) {
            let outcome = PluginOutcome::Trap(format!("cannot arm limits: {e:#}"));
            return self.finish(event, outcome, Vec::new(), started, 0);
        }
        let stderr_before = store.data().stderr.contents().len();
        let yielded = Arc::clone(&store.data().yielded);
        let input = event.to_wit();
        let store_ref = &mut store;
        let work = async move {
            let plugin = match instance {
                Some(p) => p,
                None => match self.pre.instantiate_async(&mut *store_ref).await {
                    Ok(p) => p,
                    Err(e) => return (None, Err(e)),
                },
            };
            let verdict = plugin.call_handle(&mut *store_ref, &input).await;
            (Some(plugin), verdict)
        };
        // The whole call, wherever it is, ends at the deadline: a wait in a host call (a WASI
        // sleep or poll, which fuel and the epoch cannot interrupt) is dropped there, which
        // unwinds the wasm. The store is then thrown away, never reused.
        let timed = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.threads.gated(place, yielded, work),
        )
        .await;
        let fuel_used = self
            .fuel_budget()
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let (outcome, instance) = match timed {
            Err(_) => (self.timed_out(), None),
            Ok((instance, Ok(verdict))) => (convert(verdict), instance),
            Ok((_, Err(e))) => {
                let mut outcome = self.classify_error(&e);
                if let PluginOutcome::Trap(reason) = &mut outcome {
                    let stderr = store.data().stderr.contents();
                    let tail = stderr_summary(stderr.get(stderr_before..).unwrap_or(&[]));
                    if !tail.is_empty() {
                        reason.push_str(": ");
                        reason.push_str(&tail);
                    }
                }
                (outcome, None)
            }
        };
        let logs = std::mem::take(&mut store.data_mut().logs);
        if let (
            InstanceMode::Warm {
                max_events_per_instance,
            },
            Some(plugin),
        ) = (self.mode, instance)
        {
            let calls = calls + 1;
            let healthy = !matches!(outcome, PluginOutcome::Trap(_) | PluginOutcome::Timeout(_));
            // The stderr pipe is bounded and cannot be emptied; an instance that has used half
            // of it is retired before a full pipe turns its next write into a trap.
            let stderr_room = store.data().stderr.contents().len() < STDERR_CAPACITY / 2;
            let reusable = healthy && stderr_room && calls < max_events_per_instance;
            if reusable
                && let Ok(mut idle) = self.warm.lock()
                && idle.len() < MAX_IDLE_WARM
            {
                idle.push(WarmInstance {
                    store,
                    plugin,
                    calls,
                });
            }
        }
        self.finish(event, outcome, logs, started, fuel_used)
    }

    fn timed_out(&self) -> PluginOutcome {
        PluginOutcome::Timeout(format!(
            "exceeded its deadline of {:?}",
            self.limits.timeout
        ))
    }

    fn finish(
        &self,
        event: &PluginEvent,
        outcome: PluginOutcome,
        logs: Vec<PluginLog>,
        started: Instant,
        fuel_used: u64,
    ) -> PluginCall {
        let elapsed = started.elapsed();
        PluginCalled {
            metrics: self.metrics.as_ref(),
            plugin: &self.name,
            event_id: &event.id,
            outcome: &outcome,
            logs: &logs,
            elapsed,
        }
        .emit();
        PluginCall {
            outcome,
            logs,
            elapsed,
            fuel_used,
            retry_after: None,
        }
    }

    fn classify_error(&self, e: &wasmtime::Error) -> PluginOutcome {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return self.timed_out(),
            Some(Trap::OutOfFuel) => {
                return PluginOutcome::Timeout(format!(
                    "ran out of fuel (limit {})",
                    self.fuel_budget()
                ));
            }
            _ => {}
        }
        // Every pooled slot is in use: a transient shortage, not this event's fault.
        if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return PluginOutcome::Retry(format!("no free plugin instance slot: {e}"));
        }
        let text = format!("{e:#}");
        if text.contains("forcing trap when growing memory") || text.contains("memory limit") {
            return PluginOutcome::Trap(format!(
                "exceeded its memory limit of {} bytes",
                self.limits.memory
            ));
        }
        // The wasm backtrace goes to the debug log; the reason keeps the cause only.
        tracing::debug!(plugin = %self.name, error = %text, "plugin trap details");
        PluginOutcome::Trap(format!("trapped: {}", e.root_cause()))
    }
}

/// The useful part of what a plugin wrote to stderr (e.g. a panic message), bounded.
fn stderr_summary(bytes: &[u8]) -> String {
    const MAX: usize = 1024;
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn convert(verdict: Result<Verdict, Failure>) -> PluginOutcome {
    let invalid =
        |r: String| PluginOutcome::Fatal(format!("plugin returned an invalid event: {r}"));
    match verdict {
        Ok(Verdict::Pass(e)) => match PluginEvent::from_wit(e) {
            Ok(e) => PluginOutcome::Pass(e),
            Err(r) => invalid(r),
        },
        Ok(Verdict::Drop(reason)) => PluginOutcome::Drop(reason),
        Ok(Verdict::Emit(events)) => {
            match events.into_iter().map(PluginEvent::from_wit).collect() {
                Ok(list) => PluginOutcome::Emit(list),
                Err(r) => invalid(r),
            }
        }
        Err(Failure::Retry(reason)) => PluginOutcome::Retry(reason),
        Err(Failure::Fatal(reason)) => PluginOutcome::Fatal(reason),
    }
}
