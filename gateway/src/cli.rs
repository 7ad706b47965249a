//! The command line: `gateway run`, `check`, `migrate`, `backup`, `store`, `send` and the
//! plugin tools. Parses
//! arguments, sets up logging, binds the listener and hands over to the library; no gateway
//! logic lives here.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use gateway::config::{self, ConfigIssue, GatewayConfig, StoreBackend, StoreLocation};
use gateway::metrics::Metrics;
use gateway::plugins::PluginEngine;
use gateway::reload::build_pipeline;
use gateway::store::{PgOptions, PgStore, SqliteStore, Store, WriterThread};
use gateway::worker::Pipeline;
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
    /// With a PostgreSQL store, also connect and say whether its schema is current.
    Check(ConfigArg),
    /// Bring the store's schema to this gateway's version and exit (PostgreSQL: exit 1 if the
    /// database's schema is newer, 2 if it cannot be reached).
    Migrate(ConfigArg),
    /// Copy the store to a new file while a gateway may be serving from it (a consistent
    /// snapshot; never overwrites), fsync it and print what it holds.
    Backup(BackupArgs),
    /// Store tools.
    #[command(subcommand)]
    Store(crate::store_cli::StoreCommand),
    /// Send a sample event of any provider and type (or a body from a file) to a running
    /// gateway, signed as the provider would, and print the answer. Exit 1 when the gateway
    /// refuses, 2 when nothing could be sent.
    Send(crate::send::SendArgs),
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

#[derive(Debug, Args)]
struct BackupArgs {
    /// The TOML config file: only `[store] path` is read (secrets need not resolve). A
    /// PostgreSQL store is refused: use pg_dump or pg_basebackup.
    #[arg(long, short, default_value = "config/gateway.toml")]
    config: PathBuf,
    /// The file to create. It must not exist.
    #[arg(long)]
    to: PathBuf,
    /// Database pages copied per step (8 KiB each); fewer leave the disk to the gateway more
    /// often, for a longer copy.
    #[arg(long, default_value_t = gateway::store::DEFAULT_PAGES_PER_STEP, value_parser = clap::value_parser!(u32).range(1..))]
    pages_per_step: u32,
}

impl Cli {
    pub(crate) fn execute(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Check(args) => Ok(check(&args.config)),
            Command::Run(args) => run(&args.config),
            Command::Migrate(args) => migrate(&args.config),
            Command::Backup(args) => backup(&args),
            Command::Store(command) => crate::store_cli::store(&command),
            Command::Send(args) => Ok(crate::send::run(&args).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                ExitCode::from(2)
            })),
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

/// Loads the config and its plugins, printing every problem as `file:line:col: key: message`
/// on stderr.
fn load(
    path: &std::path::Path,
    metrics: &Metrics,
) -> Option<(GatewayConfig, PluginEngine, Pipeline)> {
    match config::load(path) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            let built = engine(&config)
                .and_then(|e| build_pipeline(&e, &config, 1, None, metrics).map(|p| (e, p)));
            match built {
                Ok((engine, pipeline)) => Some((config, engine, pipeline)),
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

/// The plugin engine with the config's compiled-code cache and plugin threads.
fn engine(config: &GatewayConfig) -> Result<PluginEngine, Vec<ConfigIssue>> {
    PluginEngine::new(Some(&config.wasm_cache_dir), config.workers.plugin_threads).map_err(|e| {
        vec![ConfigIssue {
            file: config.file.clone(),
            line: 0,
            column: 0,
            key: "wasm.cache_dir".into(),
            message: e.to_string(),
        }]
    })
}

fn check(path: &std::path::Path) -> ExitCode {
    let Ok(metrics) = Metrics::new() else {
        eprintln!("error: cannot set up metrics");
        return ExitCode::FAILURE;
    };
    match load(path, &metrics) {
        Some((config, _, _)) => {
            if let StoreBackend::Postgres(pg) = &config.store.backend
                && !crate::store_cli::check_postgres(pg)
            {
                return ExitCode::FAILURE;
            }
            let written = print_line(format_args!(
                "{}: OK ({} source(s), {} plugin(s), {} destination(s), {} route(s))",
                path.display(),
                config.sources.len(),
                config.plugins.len(),
                config.destinations.len(),
                config.routes.len()
            ));
            if let Err(e) = written {
                eprintln!("error: cannot write to stdout: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    init_logging();
    let metrics = Metrics::new()?;
    let Some((config, engine, pipeline)) = load(path, &metrics) else {
        return Ok(ExitCode::FAILURE);
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.server.runtime_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, engine, pipeline, metrics))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    config: GatewayConfig,
    engine: PluginEngine,
    pipeline: Pipeline,
    metrics: Metrics,
) -> anyhow::Result<()> {
    let shutdown = gateway::shutdown::on_signals().context("cannot install signal handlers")?;
    let (store, writer, place): (Arc<dyn Store>, Option<WriterThread>, String) =
        match &config.store.backend {
            StoreBackend::Sqlite { path } => {
                let (store, writer) =
                    SqliteStore::open(path, config.store.dedup_window, metrics.clone())
                        .with_context(|| format!("cannot open the store at {}", path.display()))?;
                (Arc::new(store), Some(writer), path.display().to_string())
            }
            StoreBackend::Postgres(pg) => {
                let place = gateway::store::target_of(pg.conninfo())
                    .unwrap_or_else(|| "postgres".to_owned());
                let options = PgOptions {
                    routing_slots: config.workers.concurrency,
                    ..PgOptions::from(pg)
                };
                let store = PgStore::connect(pg.conninfo(), &options, metrics.clone())
                    .await
                    .with_context(|| format!("cannot open the store at {place}"))?;
                (Arc::new(store), None, place)
            }
        };
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let admin_listen = config.admin.as_ref().and_then(|a| a.listen);
    let admin_listener = match admin_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (admin.listen)"))?,
        ),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()
        .context("cannot read the admin listener's address")?;
    // Before the announcement: a SIGHUP or a config change right after it must reload.
    let triggers = gateway::reload::Triggers::install(&config);
    // The first stdout line is a contract: scripts and tests read the port from it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}").context("cannot write to stdout")?;
    // The second line, only with `[admin] listen`: where the admin API and console are.
    if let Some(admin_addr) = admin_addr {
        writeln!(out, "admin listening on http://{admin_addr}")
            .context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")?;
    drop(out);
    let runtime_threads = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(
        %addr,
        sources = config.sources.len(),
        store = %place,
        runtime_threads,
        "gateway started"
    );

    gateway::run(
        listener,
        admin_listener,
        triggers,
        config,
        engine,
        pipeline,
        store,
        metrics,
        shutdown,
    )
    .await;

    // Every store handle is gone once the server has drained; wait for the last commit
    // (SQLite: its writer thread; PostgreSQL answered each ingest after its commit already).
    if let Some(writer) = writer {
        let joined = tokio::task::spawn_blocking(move || writer.join());
        if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, joined)
            .await
            .is_err()
        {
            tracing::warn!("store writer did not finish in time");
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// `gateway migrate`: the config must be valid (the store's secret resolves), its plugins
/// are not loaded.
fn migrate(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match config::load(path) {
        Ok((config, _)) => crate::store_cli::migrate(&config.store.backend),
        Err(e) => {
            for issue in &e.issues {
                eprintln!("{issue}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let store = match config::store_location(&args.config) {
        Ok(StoreLocation::Sqlite(path)) => path,
        Ok(StoreLocation::Postgres(_)) => {
            eprintln!(
                "error: {}: the store is a PostgreSQL database (store.url); `gateway backup` \
                 copies a SQLite file. Back PostgreSQL up with its own tools: pg_dump for a \
                 logical copy, pg_basebackup (with WAL archiving) for point-in-time recovery",
                args.config.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            for issue in &e.issues {
                eprintln!("{issue}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let done = gateway::store::backup(&store, &args.to, args.pages_per_step)?;
    #[allow(clippy::cast_precision_loss, reason = "a size shown to one decimal")]
    let mib = done.bytes as f64 / (1024.0 * 1024.0);
    print_line(format_args!(
        "backed up {} to {}: {} events (last seq {}), {} bytes ({mib:.1} MiB, {} pages in {} \
         steps), in {:.2} s",
        store.display(),
        args.to.display(),
        done.events,
        done.last_seq,
        done.bytes,
        done.pages,
        done.steps,
        done.elapsed.as_secs_f64()
    ))
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes one line to stdout. A reader that went away (`gateway plugin run ... | head`) does
/// not want the rest: that is not worth a panic, which is what `println!` does then.
pub(crate) fn print_line(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
