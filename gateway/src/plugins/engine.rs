//! The wasmtime engine, set up once for every plugin: component model, pooling instance
//! allocator, fuel and epoch interruption, the on-disk cache of compiled code, and the threads
//! plugin calls run on (`threads.rs`).
//!
//! One background thread advances the epoch every [`EPOCH_TICK`] while a call runs (and sleeps
//! otherwise); at every tick a running call looks at the clock, so a plugin stuck in a loop is
//! interrupted within about one tick after its wall-clock timeout, never before it.
//!
//! WASI is linked in its async form (`add_to_linker_async`), and every call is async (a wasm
//! fiber): the only way to bound a call that waits inside a host call. The sync linker blocks
//! the calling thread in `poll` / `pollable.block` (a far clock is a `pending()` future that
//! never ends) and in the `blocking-*` stream ops, where neither fuel nor the epoch can reach
//! it, and language runtimes (Rust std, componentize-py, componentize-js) import those, so they
//! cannot simply be left out. Relinking our own deadline-aware copies of each blocking function
//! would leave every function we missed (or a new wasmtime-wasi adds) unbounded; an async call
//! instead runs under a timeout at its deadline, and dropping it cancels whatever host call it
//! is in. Cost: a fiber switch per call and a yield per 1 ms tick of wasm (figures in
//! docs/reliability.md).

use super::PluginError;
use super::loaded::LoadedPlugin;
use super::state::PluginState;
use super::threads::PluginThreads;
use crate::config::{MAX_PLUGIN_MEMORY, MAX_TABLE_ELEMENTS, PluginSettings};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

/// Epoch granularity: deadlines are enforced to within one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Instance slots in the pool, shared by all plugins (fresh instances return theirs at once).
const POOL_INSTANCES: u32 = 256;

/// Advances the engine's epoch while a plugin call is running, until dropped. With no call
/// running it sleeps instead of waking 1,000 times a second: a gateway whose routes call no
/// plugin (or an idle one) pays nothing for it.
#[derive(Debug)]
struct EpochTicker {
    /// The thread's shared state and handle, as every call sees them.
    demand: EpochDemand,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct TickerShared {
    stop: AtomicBool,
    /// Calls running now (see [`EpochDemand::hold`]).
    calls: AtomicUsize,
    /// Epochs advanced so far (tests read it).
    ticks: AtomicU64,
}

impl EpochTicker {
    fn start(engine: Engine) -> Result<Self, PluginError> {
        let shared = Arc::new(TickerShared::default());
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                // Epochs follow the wall clock, not the number of wake-ups: on a busy machine a
                // 1 ms sleep can last 10 ms, and counting wake-ups would stretch every plugin
                // deadline by as much. Missed ticks are caught up at once; time spent parked
                // (no call running) is not owed.
                let mut since = std::time::Instant::now();
                let mut ticks: u128 = 0;
                while !state.stop.load(Ordering::Acquire) {
                    if state.calls.load(Ordering::Acquire) == 0 {
                        // A call starting now unparks us; an unpark before this park makes it
                        // return at once, so no wake-up is lost.
                        std::thread::park();
                        since = std::time::Instant::now();
                        ticks = 0;
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    let due = since.elapsed().as_nanos() / EPOCH_TICK.as_nanos().max(1);
                    while ticks < due {
                        engine.increment_epoch();
                        state.ticks.fetch_add(1, Ordering::Relaxed);
                        ticks += 1;
                    }
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            demand: EpochDemand {
                shared,
                thread: thread.thread().clone(),
            },
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.demand.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            self.demand.thread.unpark();
            drop(t.join());
        }
    }
}

/// Keeps the epoch advancing for the length of a call: every call holds it from before its
/// deadline is armed until it returns.
#[derive(Debug, Clone)]
pub(super) struct EpochDemand {
    shared: Arc<TickerShared>,
    thread: std::thread::Thread,
}

impl EpochDemand {
    pub(super) fn hold(&self) -> EpochHold<'_> {
        if self.shared.calls.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        EpochHold(&self.shared)
    }
}

/// A running call's claim on the epoch thread; released when dropped.
#[derive(Debug)]
pub(super) struct EpochHold<'a>(&'a TickerShared);

impl Drop for EpochHold<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Compiles and links plugins; shared by every loaded plugin.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    ticker: Arc<EpochTicker>,
    threads: Arc<PluginThreads>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// Builds the engine; compiled code is cached under `cache_dir` (created if missing). At
    /// most `threads` plugin calls run wasm at once (`workers.plugin_threads`), each on a
    /// thread of its own; calls waiting in a host call do not count.
    pub fn new(cache_dir: Option<&Path>, threads: usize) -> Result<Self, PluginError> {
        let engine_err = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .total_stacks(POOL_INSTANCES)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            .max_memory_size(usize::try_from(MAX_PLUGIN_MEMORY).unwrap_or(usize::MAX))
            .table_elements(usize::try_from(MAX_TABLE_ELEMENTS).unwrap_or(usize::MAX))
            .max_core_instance_size(16 << 20)
            .max_component_instance_size(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                PluginError::Engine(format!("cannot create cache dir {}: {e}", dir.display()))
            })?;
            // wasmtime's cache wants an absolute path; configs name it relative to the cwd.
            let dir = std::path::absolute(dir).map_err(|e| {
                PluginError::Engine(format!("cannot resolve cache dir {}: {e}", dir.display()))
            })?;
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(dir);
            config.cache(Some(Cache::new(cache_config).map_err(engine_err)?));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        super::bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        let ticker = EpochTicker::start(engine.clone())?;
        let threads = PluginThreads::start(threads)?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            ticker: Arc::new(ticker),
            threads: Arc::new(threads),
        })
    }

    /// Compiles (or takes from the cache) and pre-links one plugin. Fails with a clear
    /// message if the file is missing, is not a component, imports something the host does
    /// not provide, or does not implement the plugin world.
    pub fn load(&self, settings: &PluginSettings) -> Result<LoadedPlugin, PluginError> {
        let bytes = std::fs::read(&settings.wasm).map_err(|e| PluginError::Load {
            plugin: settings.name.clone(),
            reason: format!("cannot read {}: {e}", settings.wasm.display()),
        })?;
        self.load_bytes(settings, &bytes)
    }

    pub(super) fn load_bytes(
        &self,
        settings: &PluginSettings,
        bytes: &[u8],
    ) -> Result<LoadedPlugin, PluginError> {
        let fail = |reason: String| PluginError::Load {
            plugin: settings.name.clone(),
            reason,
        };
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            fail(format!(
                "{} is not a valid WebAssembly component: {e:#}",
                settings.wasm.display()
            ))
        })?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            fail(format!(
                "{} needs something the gateway does not grant: {e:#}",
                settings.wasm.display()
            ))
        })?;
        let pre = super::bindings::PluginPre::new(pre).map_err(|e| {
            fail(format!(
                "{} does not implement the world webhook-gateway:plugin/plugin: {e:#}",
                settings.wasm.display()
            ))
        })?;
        Ok(LoadedPlugin::new(
            self.engine.clone(),
            self.ticker.demand.clone(),
            Arc::clone(&self.threads),
            pre,
            settings,
            fingerprint(settings, bytes),
        ))
    }
}

/// What identifies a plugin's behaviour: its bytes and every setting that shapes a call.
fn fingerprint(settings: &PluginSettings, bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let shape = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        settings.mode, settings.limits, settings.health, settings.settings, settings.env
    );
    let mut hash = Sha256::new();
    hash.update(bytes);
    hash.update(shape.as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::PluginEngine;
    use crate::config::{ConfigIssue, InstanceMode, PluginLimits, PluginSettings};
    use crate::plugins::{PluginEvent, PluginOutcome};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    fn spin_with_deadline(timeout: Duration) -> PluginSettings {
        PluginSettings {
            name: "spin".into(),
            wasm: plugin_artifacts::SPIN.into(),
            mode: InstanceMode::Fresh,
            limits: PluginLimits {
                fuel: None,
                timeout,
                memory: 16 << 20,
                table_elements: 10_000,
            },
            health: crate::config::HealthPolicy::NEVER_UNHEALTHY,
            settings: Default::default(),
            env: Vec::new(),
            at: ConfigIssue {
                file: plugin_artifacts::SPIN.into(),
                line: 0,
                column: 0,
                key: String::new(),
                message: String::new(),
            },
        }
    }

    fn event() -> PluginEvent {
        PluginEvent {
            id: "evt_1".into(),
            source: "test".into(),
            event_type: "test".into(),
            provider: "ledger".into(),
            subject: None,
            time: None,
            data: serde_json::value::RawValue::from_string("{}".into()).expect("raw json"),
            extensions: Vec::new(),
        }
    }

    /// An idle engine's epoch thread sleeps; a call wakes it, its deadline still ends a loop,
    /// and the thread sleeps again once no call runs.
    #[test]
    fn the_epoch_advances_only_while_a_call_runs() {
        let plugins = PluginEngine::new(None, 2).expect("engine");
        let ticks = || plugins.ticker.demand.shared.ticks.load(Ordering::Relaxed);
        let quiet = Duration::from_millis(30);
        std::thread::sleep(quiet);
        assert_eq!(ticks(), 0, "no call has run: the epoch thread never ticked");

        let deadline = Duration::from_millis(60);
        let spin = plugins
            .load(&spin_with_deadline(deadline))
            .expect("load spin");
        let started = Instant::now();
        let call = spin.call(&event());
        let took = started.elapsed();
        assert!(
            matches!(&call.outcome, PluginOutcome::Timeout(why) if why == "exceeded its deadline of 60ms"),
            "{:?}",
            call.outcome
        );
        assert!(took >= deadline, "stopped early: {took:?}");
        assert!(
            ticks() >= 30,
            "the call was ticked through: {} ticks",
            ticks()
        );

        // A tick already under way may still land; then nothing more while idle.
        std::thread::sleep(Duration::from_millis(5));
        let after = ticks();
        std::thread::sleep(quiet);
        assert_eq!(ticks(), after, "idle again: the epoch thread sleeps");
    }

    /// A ticker that falls behind (a busy machine) catches up with a burst of ticks; the
    /// burst must not end a call before its wall-clock deadline.
    #[test]
    fn a_burst_of_late_epoch_ticks_does_not_end_a_call_early() {
        let plugins = PluginEngine::new(None, 2).expect("engine");
        let deadline = Duration::from_millis(200);
        let spin = plugins
            .load(&spin_with_deadline(deadline))
            .expect("load spin");
        let event = event();
        let engine = plugins.engine.clone();
        let burst = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            for _ in 0..10_000 {
                engine.increment_epoch();
            }
        });
        let started = Instant::now();
        let call = spin.call(&event);
        let took = started.elapsed();
        burst.join().expect("burst thread");
        assert!(
            matches!(&call.outcome, PluginOutcome::Timeout(why) if why == "exceeded its deadline of 200ms"),
            "{:?}",
            call.outcome
        );
        assert!(took >= deadline, "stopped early: {took:?}");
    }
}
