//! `gateway plugin run`: run one plugin on one event and print the verdict, the plugin's log
//! lines, the time and the fuel used, as JSON. It is how a plugin author tests a plugin.

use anyhow::{Context as _, bail};
use clap::Args;
use gateway::config::{ConfigIssue, InstanceMode, PluginLimits, PluginSettings};
use gateway::envelope::Envelope;
use gateway::plugins::{PluginEngine, PluginEvent, PluginOutcome};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

fn read_event(args: &PluginRunArgs) -> anyhow::Result<PluginEvent> {
    let bytes = std::fs::read(&args.event)
        .with_context(|| format!("cannot read {}", args.event.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", args.event.display()))?;
    if value.get("specversion").is_some() {
        let envelope: Envelope = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid envelope", args.event.display()))?;
        return Ok(PluginEvent::from(&envelope));
    }
    let provider = match &args.provider {
        Some(p) if p == "ledger" || p == "ledig" => p.clone(),
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
    let source = args.source.clone().unwrap_or_else(|| provider.clone());
    let normalized = gateway::providers::normalize_local_payload(&provider, &source, &bytes)
        .with_context(|| format!("cannot normalize {}", args.event.display()))?;
    Ok(PluginEvent::from(&normalized.envelope))
}

pub(crate) fn run(args: &PluginRunArgs) -> anyhow::Result<ExitCode> {
    let event = read_event(args)?;
    let memory = args
        .memory
        .parse::<bytesize::ByteSize>()
        .map_err(|e| anyhow::anyhow!("--memory: {e}"))?
        .as_u64();
    let settings = PluginSettings {
        name: args
            .wasm
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned()),
        wasm: args.wasm.clone(),
        mode: if args.repeat > 1 {
            InstanceMode::Warm {
                max_events_per_instance: u64::from(args.repeat) + 1,
            }
        } else {
            InstanceMode::Fresh
        },
        limits: PluginLimits {
            fuel: args.fuel,
            timeout: args.timeout,
            memory,
            table_elements: gateway::config::MAX_TABLE_ELEMENTS,
        },
        settings: args.settings.iter().cloned().collect(),
        env: Vec::new(),
        at: ConfigIssue {
            file: args.wasm.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: String::new(),
        },
    };
    let engine = PluginEngine::new(Some(&args.cache_dir))?;
    let compile_started = std::time::Instant::now();
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
    let mut report = call.outcome.to_json();
    if let Some(map) = report.as_object_mut() {
        map.insert("logs".into(), serde_json::to_value(&call.logs)?);
        map.insert(
            "elapsed_us".into(),
            u64::try_from(call.elapsed.as_micros()).unwrap_or(u64::MAX).into(),
        );
        map.insert("fuel_used".into(), call.fuel_used.into());
        map.insert(
            "load_ms".into(),
            u64::try_from(compile.as_millis()).unwrap_or(u64::MAX).into(),
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
