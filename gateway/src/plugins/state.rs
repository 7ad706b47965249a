//! What a plugin's store holds: its WASI context, resource table, memory/table limits, its
//! settings, and the log lines it wrote during the current call.
//!
//! Also the host side of the `host` interface: `log` and `setting`.
//!
//! The WASI context grants no files, sockets, name lookups or inherited environment (only the
//! variables the plugin's `env` lists). It does grant what WASI gives every component by
//! default and language runtimes need to start: the wall clock and the monotonic clock (read
//! only; a wait on the monotonic clock is cut off at the call's deadline like any host call),
//! secure and insecure random, an empty stdin, stdout discarded and stderr kept (bounded).

use super::bindings::{self, Level};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Longest log line a plugin may write; the rest is cut.
const MAX_LOG_LINE: usize = 4096;
/// Most log lines kept per call.
const MAX_LOG_LINES: usize = 100;
/// Bytes of the plugin's stderr kept (panic messages land there).
pub(super) const STDERR_CAPACITY: usize = 16 * 1024;

/// One line a plugin logged through `host.log`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginLog {
    pub level: &'static str,
    pub message: String,
}

pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    settings: Arc<BTreeMap<String, String>>,
    pub(super) logs: Vec<PluginLog>,
    pub(super) stderr: MemoryOutputPipe,
    /// When the current call must stop; checked each time the epoch deadline is reached.
    pub(super) deadline: Instant,
    /// Set when the call pauses at the end of a time slice (not in a host call); the plugin
    /// threads' gate reads it (see `threads.rs`).
    pub(super) yielded: Arc<AtomicBool>,
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginState")
            .field("logs", &self.logs.len())
            .finish_non_exhaustive()
    }
}

impl PluginState {
    pub(super) fn new(
        limits: StoreLimits,
        settings: Arc<BTreeMap<String, String>>,
        env: &[(String, String)],
    ) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No preopened directories, no sockets or name lookups, no inherited environment,
        // stdin empty, stdout discarded; only what the plugin's config lists in `env`. Clocks
        // and random are WASI's read-only defaults (see the module docs).
        let mut builder = WasiCtx::builder();
        builder
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (k, v) in env {
            builder.env(k, v);
        }
        Self {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limits,
            settings,
            deadline: Instant::now(),
            yielded: Arc::new(AtomicBool::new(false)),
            logs: Vec::new(),
            stderr,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::TypesHost for PluginState {}

impl bindings::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.logs.push(PluginLog { level, message });
    }

    fn setting(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }
}
