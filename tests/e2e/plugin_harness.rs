//! Plugin test harness: one shared [`PluginEngine`] (with the compiled-code cache under the
//! test target dir, so JavaScript and Python components compile once, not per test or per run),
//! real components built from `plugins/` by `tests/plugin-artifacts`, events normalized from the
//! provider fixtures exactly as the gateway normalizes a request, and a helper that runs
//! `gateway plugin run` (the real binary) and parses its JSON.

use gateway::config::{ConfigIssue, HealthPolicy, InstanceMode, PluginLimits, PluginSettings};
use gateway::plugins::{LoadedPlugin, PluginEngine, PluginEvent, PluginOutcome};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

/// Compiled components survive between test runs here (the gateway's on-disk cache).
pub(crate) const CACHE_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/wasm-cache");

static ENGINE: LazyLock<PluginEngine> =
    LazyLock::new(|| PluginEngine::new(Some(Path::new(CACHE_DIR)), 4).expect("plugin engine"));

pub(crate) fn engine() -> &'static PluginEngine {
    &ENGINE
}

/// Tests that measure deadlines hold this shared; the one that deliberately saturates every
/// core holds it exclusively, so it never skews their clocks.
static TIMING: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub(crate) fn timing_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    TIMING
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn timing_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    TIMING
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The limits a plugin gets when its config says nothing but the deadline.
pub(crate) fn limits(timeout: Duration) -> PluginLimits {
    PluginLimits {
        fuel: None,
        timeout,
        memory: 64 * 1024 * 1024,
        table_elements: 100_000,
    }
}

pub(crate) fn warm() -> InstanceMode {
    InstanceMode::Warm {
        max_events_per_instance: 10_000,
    }
}

pub(crate) fn plugin_settings(
    wasm: &str,
    mode: InstanceMode,
    limits: PluginLimits,
    settings: &[(&str, &str)],
) -> PluginSettings {
    PluginSettings {
        name: Path::new(wasm)
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned()),
        wasm: wasm.into(),
        mode,
        limits,
        health: HealthPolicy::NEVER_UNHEALTHY,
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        env: Vec::new(),
        at: ConfigIssue {
            file: wasm.into(),
            line: 0,
            column: 0,
            key: String::new(),
            message: String::new(),
        },
    }
}

/// Loads a plugin with a 1 s deadline and 64 MiB of memory.
pub(crate) fn load(wasm: &str, mode: InstanceMode, settings: &[(&str, &str)]) -> LoadedPlugin {
    engine()
        .load(&plugin_settings(
            wasm,
            mode,
            limits(Duration::from_secs(1)),
            settings,
        ))
        .unwrap_or_else(|e| panic!("load {wasm}: {e}"))
}

/// A provider fixture normalized as the gateway does it on ingest.
pub(crate) fn fixture_event(provider: &str, name: &str) -> PluginEvent {
    let path = format!(
        "{}/../tests/fixtures/{provider}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let normalized = gateway::providers::normalize_local_payload(
        provider,
        provider,
        &body,
        gateway::envelope::now_unix_ms(),
    )
    .unwrap_or_else(|e| panic!("normalize {path}: {e}"));
    PluginEvent::from(&normalized.envelope)
}

/// An event with the given JSON `data`, for tests that need a particular payload.
pub(crate) fn event_with_data(id: &str, data: &str) -> PluginEvent {
    let mut event = fixture_event("ledger", "webhook.test");
    event.id = id.to_owned();
    event.data = serde_json::value::RawValue::from_string(data.to_owned()).expect("JSON data");
    event
}

pub(crate) fn extension<'a>(event: &'a PluginEvent, name: &str) -> Option<&'a str> {
    event
        .extensions
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn data(event: &PluginEvent) -> Value {
    serde_json::from_str(event.data.get()).expect("data is JSON")
}

#[track_caller]
pub(crate) fn expect_pass(outcome: PluginOutcome) -> PluginEvent {
    match outcome {
        PluginOutcome::Pass(e) => e,
        other => panic!("expected pass, got {}", other.to_json()),
    }
}

#[track_caller]
pub(crate) fn expect_emit(outcome: PluginOutcome) -> Vec<PluginEvent> {
    match outcome {
        PluginOutcome::Emit(list) => list,
        other => panic!("expected emit, got {}", other.to_json()),
    }
}

/// `(result label, reason)` of a verdict that carries a reason (drop and the failures).
#[track_caller]
pub(crate) fn reason(outcome: &PluginOutcome) -> (&'static str, &str) {
    match outcome {
        PluginOutcome::Drop(r)
        | PluginOutcome::Retry(r)
        | PluginOutcome::Fatal(r)
        | PluginOutcome::Trap(r)
        | PluginOutcome::Timeout(r) => (outcome.label(), r),
        other => panic!("expected a reason, got {}", other.to_json()),
    }
}

/// What `gateway plugin run` printed and how it exited.
pub(crate) struct CliRun {
    pub(crate) code: Option<i32>,
    pub(crate) report: Value,
    /// stdout as printed (the report, before parsing).
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `gateway plugin run WASM --event FIXTURE ARGS...` with the shared cache.
pub(crate) fn plugin_run(wasm: &str, event_fixture: &str, args: &[&str]) -> CliRun {
    let event = format!(
        "{}/../tests/fixtures/{event_fixture}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    plugin_run_on(wasm, Path::new(&event), args)
}

/// Runs `gateway plugin run WASM --event EVENT_FILE ARGS...` with the shared cache.
pub(crate) fn plugin_run_on(wasm: &str, event: &Path, args: &[&str]) -> CliRun {
    let out = Command::new(crate::harness::gateway_bin())
        .args(["plugin", "run", wasm, "--event"])
        .arg(event)
        .args(["--cache-dir", CACHE_DIR])
        .args(args)
        .output()
        .expect("run gateway plugin run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    CliRun {
        code: out.status.code(),
        report,
        stdout,
        stderr,
    }
}
