//! The command line: `gateway run` and `gateway check`. Parses arguments, sets up logging,
//! binds the listener and hands over to the library; no gateway logic lives here.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use gateway::config::{self, ConfigIssue, GatewayConfig};
use gateway::metrics::Metrics;
use gateway::plugins::{LoadedPlugin, PluginEngine, PluginError};
use gateway::store::{SqliteStore, Store};
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for the store writer to commit what is queued.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Webhook gateway: verify, normalize, deduplicate, store and route payment webhooks"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve webhooks with the given config.
    Run(ConfigArg),
    /// Validate a config (secrets resolve, keys known, sources protected, plugins load) and exit.
    Check(ConfigArg),
    /// Plugin tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run one plugin on one event and print the verdict, logs, time and fuel as JSON.
    /// Exit 0 for pass/drop/emit, 1 for retry/fatal/trap/timeout.
    Run(crate::plugin_cli::PluginRunArgs),
    /// Measure per-event plugin overhead (instantiate + call + verdict) in fresh and warm mode.
    Bench(crate::plugin_cli::PluginBenchArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short, default_value = "config/gateway.toml")]
    config: PathBuf,
}

impl Cli {
    pub(crate) fn execute(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Check(args) => Ok(check(&args.config)),
            Command::Run(args) => run(&args.config),
            Command::Plugin(PluginCommand::Run(args)) => crate::plugin_cli::run(&args),
            Command::Plugin(PluginCommand::Bench(args)) => crate::plugin_cli::bench(&args),
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A full disk must not turn a failed log write into a panic (the default reports it
        // with `eprintln!`, which panics when stderr cannot be written).
        .log_internal_errors(false)
        .init();
}

/// Compiles (or takes from the cache) and pre-links every configured plugin; each failure is
/// reported at the plugin's `wasm` key.
fn load_plugins(
    config: &GatewayConfig,
    metrics: Option<&Metrics>,
) -> Result<Vec<LoadedPlugin>, Vec<ConfigIssue>> {
    if config.plugins.is_empty() {
        return Ok(Vec::new());
    }
    let engine = PluginEngine::new(Some(&config.wasm_cache_dir)).map_err(|e| {
        vec![ConfigIssue {
            file: config.file.clone(),
            line: 0,
            column: 0,
            key: "wasm.cache_dir".into(),
            message: e.to_string(),
        }]
    })?;
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for p in &config.plugins {
        match engine.load(p) {
            Ok(plugin) => match metrics {
                Some(m) => loaded.push(plugin.with_metrics(m.for_plugin(&p.name))),
                None => loaded.push(plugin),
            },
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

/// Loads the config and its plugins, printing every problem as `file:line:col: key: message`
/// on stderr.
fn load(
    path: &std::path::Path,
    metrics: Option<&Metrics>,
) -> Option<(GatewayConfig, Vec<LoadedPlugin>)> {
    match config::load(path) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            match load_plugins(&config, metrics) {
                Ok(plugins) => Some((config, plugins)),
                Err(problems) => {
                    for issue in &problems {
                        eprintln!("{issue}");
                    }
                    eprintln!(
                        "error: {} has {} problem(s)",
                        path.display(),
                        problems.len()
                    );
                    None
                }
            }
        }
        Err(e) => {
            for issue in &e.issues {
                eprintln!("{issue}");
            }
            eprintln!(
                "error: {} has {} problem(s)",
                path.display(),
                e.issues.len()
            );
            None
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path, None) {
        Some((config, plugins)) => {
            println!(
                "{}: OK ({} source(s), {} plugin(s))",
                path.display(),
                config.sources.len(),
                plugins.len()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    init_logging();
    let metrics = Metrics::new()?;
    let Some((config, plugins)) = load(path, Some(&metrics)) else {
        return Ok(ExitCode::FAILURE);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, metrics, plugins))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    config: GatewayConfig,
    metrics: Metrics,
    plugins: Vec<LoadedPlugin>,
) -> anyhow::Result<()> {
    let shutdown = gateway::shutdown::on_signals().context("cannot install signal handlers")?;
    // Loaded (compiled, cached, validated) at start; routing them is the routing stage's job.
    let _plugins = plugins;
    let (store, writer) = SqliteStore::open(
        &config.store.path,
        config.store.dedup_window,
        metrics.clone(),
    )
    .with_context(|| format!("cannot open the store at {}", config.store.path.display()))?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // The first stdout line is a contract: scripts and tests read the port from it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}").context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")?;
    drop(out);
    tracing::info!(%addr, sources = config.sources.len(), store = %config.store.path.display(), "gateway started");

    let store: Arc<dyn Store> = Arc::new(store);
    gateway::run(listener, &config, store, metrics, shutdown).await;

    // Every store handle is gone once the server has drained; wait for the last commit.
    let joined = tokio::task::spawn_blocking(move || writer.join());
    if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, joined)
        .await
        .is_err()
    {
        tracing::warn!("store writer did not finish in time");
    }
    tracing::info!("gateway stopped");
    Ok(())
}
