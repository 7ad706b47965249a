//! `gateway plugin run`: run one plugin on one event and print the verdict, the plugin's log
//! lines, the time and the fuel used, as JSON. It is how a plugin author tests a plugin, so
//! the events it prints are the ones delivery would send: `data` exactly as the plugin
//! returned it, never re-encoded. `gateway plugin bench`: the per-call overhead.

use crate::cli::print_line;
use anyhow::{Context as _, bail};
use clap::Args;
use gateway::config::{ConfigIssue, HealthPolicy, InstanceMode, PluginLimits, PluginSettings};
use gateway::envelope::Envelope;
use gateway::plugins::{PluginEngine, PluginEvent, PluginLog, PluginOutcome};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub(crate) struct PluginRunArgs {
    /// The plugin component (.wasm).
    wasm: PathBuf,
    /// The event: an envelope (JSON with `specversion`) or a raw provider payload, which is
    /// normalized first (see --provider).
    #[arg(long)]
    event: PathBuf,
    /// A plugin setting, as key=value (repeatable).
    #[arg(long = "setting", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Provider of a raw payload: ledger or ledig (default: guessed from the payload).
    #[arg(long)]
    provider: Option<String>,
    /// Source name for a raw payload (default: the provider name).
    #[arg(long)]
    source: Option<String>,
    /// Wall-clock deadline for the call.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Fuel budget (instructions); unlimited if not given.
    #[arg(long)]
    fuel: Option<u64>,
    /// Largest linear memory, e.g. 64MiB.
    #[arg(long, default_value = "256MiB")]
    memory: String,
    /// Run the event this many times on one warm instance and report the last call (to see
    /// the warm per-call cost).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Where compiled code is cached.
    #[arg(long, default_value = "data/wasm-cache")]
    cache_dir: PathBuf,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not key=value"))
}

/// Reads an envelope, or a raw provider payload and normalizes it as the gateway would.
fn read_event(
    path: &Path,
    provider: Option<&str>,
    source: Option<&str>,
) -> anyhow::Result<PluginEvent> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    if value.get("specversion").is_some() {
        let envelope: Envelope = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid envelope", path.display()))?;
        return Ok(PluginEvent::from(&envelope));
    }
    let provider = match provider {
        Some(p) if p == "ledger" || p == "ledig" => p.to_owned(),
        Some(p) => bail!("unknown provider `{p}` (ledger or ledig)"),
        // Ledger bodies have `createdAt` and a dotted `type`; everything else is Ledig-shaped.
        None if value.get("createdAt").is_some()
            || value
                .get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.contains('.')) =>
        {
            "ledger".to_owned()
        }
        None => "ledig".to_owned(),
    };
    let source = source.unwrap_or(&provider);
    let normalized = gateway::providers::normalize_local_payload(
        &provider,
        source,
        &bytes,
        gateway::envelope::now_unix_ms(),
    )
    .with_context(|| format!("cannot normalize {}", path.display()))?;
    Ok(PluginEvent::from(&normalized.envelope))
}

/// Settings for a plugin run from the command line rather than from a config file.
fn command_line_plugin(
    wasm: &Path,
    mode: InstanceMode,
    limits: PluginLimits,
    settings: &[(String, String)],
) -> PluginSettings {
    PluginSettings {
        name: wasm
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned()),
        wasm: wasm.to_path_buf(),
        mode,
        limits,
        // An author running a plugin wants to see every outcome.
        health: HealthPolicy::NEVER_UNHEALTHY,
        settings: settings.iter().cloned().collect(),
        env: Vec::new(),
        // Load errors then name the file itself; there is no config line to point at.
        at: ConfigIssue {
            file: wasm.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: String::new(),
        },
    }
}

/// What `gateway plugin run` prints: the verdict's fields, then how the call went.
#[derive(serde::Serialize)]
struct RunReport<'a> {
    #[serde(flatten)]
    outcome: &'a PluginOutcome,
    logs: &'a [PluginLog],
    elapsed_us: u64,
    fuel_used: u64,
    load_ms: u64,
}

pub(crate) fn run(args: &PluginRunArgs) -> anyhow::Result<ExitCode> {
    let event = read_event(
        &args.event,
        args.provider.as_deref(),
        args.source.as_deref(),
    )?;
    let memory = args
        .memory
        .parse::<bytesize::ByteSize>()
        .map_err(|e| anyhow::anyhow!("--memory: {e}"))?
        .as_u64();
    let mode = if args.repeat > 1 {
        InstanceMode::Warm {
            max_events_per_instance: u64::from(args.repeat) + 1,
        }
    } else {
        InstanceMode::Fresh
    };
    let limits = PluginLimits {
        fuel: args.fuel,
        timeout: args.timeout,
        memory,
        table_elements: gateway::config::MAX_TABLE_ELEMENTS,
    };
    let settings = command_line_plugin(&args.wasm, mode, limits, &args.settings);
    let engine = PluginEngine::new(Some(&args.cache_dir), 1)?;
    let compile_started = Instant::now();
    let plugin = engine.load(&settings)?;
    let compile = compile_started.elapsed();
    let mut call = plugin.call(&event);
    for _ in 1..args.repeat {
        call = plugin.call(&event);
    }
    let failed = matches!(
        call.outcome,
        PluginOutcome::Retry(_)
            | PluginOutcome::Fatal(_)
            | PluginOutcome::Trap(_)
            | PluginOutcome::Timeout(_)
    );
    let report = RunReport {
        outcome: &call.outcome,
        logs: &call.logs,
        elapsed_us: u64::try_from(call.elapsed.as_micros()).unwrap_or(u64::MAX),
        fuel_used: call.fuel_used,
        load_ms: u64::try_from(compile.as_millis()).unwrap_or(u64::MAX),
    };
    print_line(format_args!("{}", serde_json::to_string_pretty(&report)?))?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Args)]
pub(crate) struct PluginBenchArgs {
    /// Plugin components (.wasm) to measure.
    #[arg(required = true)]
    wasm: Vec<PathBuf>,
    /// The event each call gets (envelope or raw provider payload, as for `plugin run`).
    #[arg(long)]
    event: PathBuf,
    /// A plugin setting, as key=value (repeatable; given to every plugin).
    #[arg(long = "setting", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Most calls measured per plugin and mode.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Longest time spent measuring one plugin in one mode (fewer calls if it runs out).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    budget: Duration,
    /// Where compiled code is cached.
    #[arg(long, default_value = "data/wasm-cache")]
    cache_dir: PathBuf,
}

/// Per-event plugin overhead as the gateway pays it: `LoadedPlugin::call` is instantiate (fresh
/// mode) or take an idle instance (warm), convert the event, call, convert the verdict back.
pub(crate) fn bench(args: &PluginBenchArgs) -> anyhow::Result<ExitCode> {
    let event = read_event(&args.event, None, None)?;
    let engine = PluginEngine::new(Some(&args.cache_dir), 1)?;
    print_line(format_args!(
        "{:<24} {:<6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11}  verdict",
        "plugin", "mode", "calls", "mean us", "p50 us", "p99 us", "load ms", "fuel/call"
    ))?;
    for wasm in &args.wasm {
        let modes = [
            InstanceMode::Fresh,
            InstanceMode::Warm {
                max_events_per_instance: u64::MAX,
            },
        ];
        for mode in modes {
            let label = if mode == InstanceMode::Fresh {
                "fresh"
            } else {
                "warm"
            };
            let limits = PluginLimits {
                fuel: None,
                timeout: Duration::from_secs(1),
                memory: 256 * 1024 * 1024,
                table_elements: gateway::config::MAX_TABLE_ELEMENTS,
            };
            let settings = command_line_plugin(wasm, mode, limits, &args.settings);
            let load_started = Instant::now();
            let plugin = engine.load(&settings)?;
            let load = load_started.elapsed();
            // Warm-up: the first calls touch fresh pool slots and cold caches.
            let first = plugin.call(&event);
            for _ in 0..100 {
                plugin.call(&event);
            }
            let mut samples = Vec::with_capacity(args.iterations as usize);
            // Wasm instructions of a call: unlike the times, the same on a busy machine.
            let mut fuel = first.fuel_used;
            let measuring = Instant::now();
            while samples.is_empty()
                || (samples.len() < args.iterations as usize && measuring.elapsed() < args.budget)
            {
                let started = Instant::now();
                let call = plugin.call(&event);
                samples.push(started.elapsed());
                fuel = call.fuel_used;
            }
            samples.sort_unstable();
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let count = u32::try_from(samples.len()).unwrap_or(u32::MAX);
            let mean = samples.iter().sum::<Duration>() / count;
            let quantile = |q: f64| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let index = ((samples.len() - 1) as f64 * q) as usize;
                samples[index]
            };
            print_line(format_args!(
                "{:<24} {:<6} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>11}  {}",
                settings.name,
                label,
                samples.len(),
                us(mean),
                us(quantile(0.5)),
                us(quantile(0.99)),
                load.as_millis(),
                fuel,
                first.outcome.label()
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
