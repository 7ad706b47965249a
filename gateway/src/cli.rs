//! The command line: `gateway run` and `gateway check`. Parses arguments, sets up logging,
//! binds the listener and hands over to the library; no gateway logic lives here.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use gateway::config::{self, GatewayConfig};
use gateway::metrics::Metrics;
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
    /// Validate a config (secrets resolve, keys known, sources protected) and exit.
    Check(ConfigArg),
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

/// Loads the config, printing every problem as `file:line:col: key: message` on stderr.
fn load(path: &std::path::Path) -> Option<GatewayConfig> {
    match config::load(path) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            Some(config)
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
    match load(path) {
        Some(config) => {
            println!(
                "{}: OK ({} source(s))",
                path.display(),
                config.sources.len()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    init_logging();
    let Some(config) = load(path) else {
        return Ok(ExitCode::FAILURE);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: GatewayConfig) -> anyhow::Result<()> {
    let shutdown = gateway::shutdown::on_signals().context("cannot install signal handlers")?;
    let metrics = Metrics::new()?;
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
