//! Config generations: building one from a config file, and hot reload.
//!
//! A generation is parsed, validated, its plugins compiled (or taken from the cache) and its
//! destinations built entirely off the request path; only a complete, valid generation is
//! swapped in, atomically per stage (the ingress endpoints, then the workers' pipeline). A bad
//! change (TOML error, unknown key, missing plugin, plugin that fails to load) keeps the running
//! generation and is logged with file, line and key, and counted. Settings that only a restart
//! can change (listen address, store, workers, plugin cache) are reported, never half-applied.
//!
//! `watch` triggers a reload when the config file or any plugin .wasm it names changes
//! (debounced), and on SIGHUP.

mod watch;

pub use watch::{Triggers, watch};

use crate::admin::ReloadRecord;
use crate::config::{self, ConfigIssue, GatewayConfig};
use crate::ingress::Gateway;
use crate::metrics::Metrics;
use crate::metrics::flow_events::{ConfigApplied, ConfigRejected};
use crate::plugins::{LoadedPlugin, PluginEngine, PluginError};
use crate::worker::Pipeline;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Compiles (or takes from the cache) and pre-links every plugin of `config`; each failure is
/// reported at the plugin's `wasm` key.
pub fn load_plugins(
    engine: &PluginEngine,
    config: &GatewayConfig,
    metrics: Option<&Metrics>,
    running: Option<&HashMap<String, Arc<LoadedPlugin>>>,
) -> Result<HashMap<String, Arc<LoadedPlugin>>, Vec<ConfigIssue>> {
    let mut loaded = HashMap::new();
    let mut problems = Vec::new();
    for p in &config.plugins {
        match engine.load(p) {
            Ok(plugin) => {
                let plugin = match metrics {
                    Some(m) => plugin.with_metrics(m.for_plugin(&p.name)),
                    None => plugin,
                };
                let plugin = match running.and_then(|r| r.get(&p.name)) {
                    Some(same_name) => plugin.keep_health_of(same_name),
                    None => plugin,
                };
                loaded.insert(p.name.clone(), Arc::new(plugin));
            }
            Err(e) => problems.push(p.issue(match e {
                PluginError::Load { reason, .. } => reason,
                other => other.to_string(),
            })),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

/// Builds the workers' side of a generation: plugins and destinations.
pub fn build_pipeline(
    engine: &PluginEngine,
    config: &GatewayConfig,
    generation: u64,
    previous: Option<&Pipeline>,
    metrics: &Metrics,
) -> Result<Pipeline, Vec<ConfigIssue>> {
    let running = previous.map(|p| p.router.plugins());
    let plugins = load_plugins(engine, config, Some(metrics), running)?;
    Pipeline::build(config, plugins, generation, previous, metrics).map_err(|e| {
        vec![ConfigIssue {
            file: config.file.clone(),
            line: 0,
            column: 0,
            key: "destinations".into(),
            message: e.to_string(),
        }]
    })
}

/// Applies config changes to a running gateway.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    engine: PluginEngine,
    metrics: Metrics,
    gateway: Arc<Gateway>,
    pipeline: Arc<ArcSwap<Pipeline>>,
    /// The config of the running generation.
    current: Mutex<Arc<GatewayConfig>>,
    /// Serializes reloads (a SIGHUP and a file change at once apply one after the other).
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        config: GatewayConfig,
        engine: PluginEngine,
        metrics: Metrics,
        gateway: Arc<Gateway>,
        pipeline: Arc<ArcSwap<Pipeline>>,
    ) -> Self {
        Self {
            path: config.file.clone(),
            engine,
            metrics,
            gateway,
            pipeline,
            current: Mutex::new(Arc::new(config)),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config in force.
    pub fn current(&self) -> Arc<GatewayConfig> {
        self.current
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Reads, validates and builds the file's config off the async threads, then swaps it in.
    /// On any problem the running generation stays and the problems are returned.
    pub async fn reload(self: &Arc<Self>) -> Result<u64, Vec<String>> {
        let _one_at_a_time = self.busy.lock().await;
        let this = Arc::clone(self);
        let built = tokio::task::spawn_blocking(move || this.build_next()).await;
        let outcome = match built {
            Ok(Ok((config, pipeline))) => Ok(self.swap(config, pipeline)),
            Ok(Err(problems)) => Err(problems),
            Err(e) => Err(vec![format!("reload task failed: {e}")]),
        };
        if let Err(problems) = &outcome {
            ConfigRejected {
                metrics: &self.metrics,
                problems,
            }
            .emit();
        }
        // For the console's overview: the last result, with each problem's file:line.
        self.gateway.admin_state().record_reload(ReloadRecord {
            at: crate::store::unix_ms(),
            ok: outcome.is_ok(),
            generation: Some(self.pipeline.load().generation),
            problems: outcome.as_ref().err().cloned().unwrap_or_default(),
        });
        outcome
    }

    fn build_next(&self) -> Result<(GatewayConfig, Pipeline), Vec<String>> {
        let render = |issues: Vec<ConfigIssue>| -> Vec<String> {
            issues.iter().map(ToString::to_string).collect()
        };
        let (config, warnings) = config::load(&self.path).map_err(|e| render(e.issues))?;
        for w in warnings {
            tracing::warn!(warning = %w, "config warning");
        }
        let running = self.pipeline.load_full();
        let pipeline = build_pipeline(
            &self.engine,
            &config,
            running.generation + 1,
            Some(&running),
            &self.metrics,
        )
        .map_err(render)?;
        Ok((config, pipeline))
    }

    fn swap(&self, config: GatewayConfig, pipeline: Pipeline) -> u64 {
        let generation = pipeline.generation;
        let running = self.current();
        let needs_restart = restart_only_changes(&running, &config);
        self.gateway.reconfigure(&config, pipeline.router.plugins());
        self.pipeline.store(Arc::new(pipeline));
        if let Ok(mut current) = self.current.lock() {
            *current = Arc::new(config);
        }
        ConfigApplied {
            metrics: &self.metrics,
            generation,
            file: &self.path,
            reload: true,
            needs_restart: &needs_restart,
        }
        .emit();
        generation
    }
}

/// Keys whose new values only a restart applies (the running values stay in force).
fn restart_only_changes(old: &GatewayConfig, new: &GatewayConfig) -> Vec<String> {
    let mut keys = Vec::new();
    if old.server.listen != new.server.listen {
        keys.push("server.listen".to_owned());
    }
    // The admin listener is bound once at start (or not at all).
    let admin_listen = |c: &GatewayConfig| c.admin.as_ref().and_then(|a| a.listen);
    if admin_listen(old) != admin_listen(new) {
        keys.push("admin.listen".to_owned());
    }
    if old.server.header_timeout != new.server.header_timeout {
        keys.push("server.header_timeout".to_owned());
    }
    if old.server.write_timeout != new.server.write_timeout {
        keys.push("server.write_timeout".to_owned());
    }
    // The runtime's threads are started once.
    if old.server.runtime_threads != new.server.runtime_threads {
        keys.push("server.runtime_threads".to_owned());
    }
    // The backend (SQLite file or PostgreSQL database, and the pool's settings) is opened
    // once at start: the running store stays until a restart.
    for key in old.store.backend.changed_keys(&new.store.backend) {
        keys.push(key.to_owned());
    }
    if old.store.dedup_window != new.store.dedup_window {
        keys.push("store.dedup_window".to_owned());
    }
    if old.store.retention != new.store.retention {
        keys.push("store.retention".to_owned());
    }
    if old.store.quarantine_retention != new.store.quarantine_retention {
        keys.push("store.quarantine_retention".to_owned());
    }
    if old.wasm_cache_dir != new.wasm_cache_dir {
        keys.push("wasm.cache_dir".to_owned());
    }
    if old.workers != new.workers {
        keys.push("workers".to_owned());
    }
    keys
}
