//! `loadgen ingest`: runs the whole benchmark. For each target in turn (the bare server, then
//! the gateway, each its own child process started here and stopped before the next), a
//! closed-loop warm-up, a closed-loop maximum-rate phase, and an open-loop phase at a fraction
//! of the maximum rate measured for that same target; then prints the report.

use crate::child::Server;
use crate::cli::{IngestArgs, RoutePlugin, Target};
use crate::cpu::Meter;
use crate::report::{MaxPhase, Outcome, Run, best_of};
use crate::signing::{EventSource, EventStreams, SECRET, SECRET_ENV};
use crate::{closed_loop, open_loop, server_view};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let targets = args.targets();
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| exe.with_file_name("gateway"));
    if targets.contains(&Target::Gateway) && !args.bare_as_gateway {
        anyhow::ensure!(
            gateway.is_file(),
            "no gateway binary at {} (run `cargo build --release --workspace` first, or pass --gateway PATH)",
            gateway.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("loadgen-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let config = write_config(dir.path(), args.route_plugin)?;
    let mut streams = EventStreams::new(args.duplicates, args.body_size)?;
    let mut run = Run::new(&args, streams.take().next_delivery().body.len());
    run.print_header();

    for target in targets {
        let command = match target {
            Target::Gateway if !args.bare_as_gateway => gateway_command(&gateway, &config),
            _ => bare_command(&exe),
        };
        let log = dir.path().join(format!("{}.log", target.name()));
        let server = Server::start(target.name(), command, &log)?;
        let addr = server.addr;
        let name = target.name();
        eprintln!(
            "{name}: listening on {addr}; warming up for {:?}",
            args.warmup
        );
        let first = args.connections.first().copied().unwrap_or(64);
        let sources = take(&mut streams, first);
        let warmup = closed_loop::run(addr, sources, args.warmup, false).await?;
        if warmup.accepted + warmup.duplicate == 0 {
            eprintln!(
                "{name}: warning: no 200 answers in the warm-up (non-200: {}, errors: {}){}",
                warmup.sample_non_200.as_deref().unwrap_or("none"),
                warmup.sample_error.as_deref().unwrap_or("none"),
                server.log_tail()
            );
        }
        let mut max = Vec::with_capacity(args.connections.len());
        for &connections in &args.connections {
            eprintln!("{name}: maximum rate, {connections} connections");
            let sources = take(&mut streams, connections);
            let meter = Meter::start(server.pid());
            let before = server_side(target, addr).await;
            let mut stats = closed_loop::run(addr, sources, args.duration, false).await?;
            stats.usage = meter.usage();
            let phase = format!("maximum rate, {connections} connections");
            report_server_side(target, addr, before, &phase, args.duration).await;
            max.push(MaxPhase { connections, stats });
        }
        let best = best_of(&max).map_or(0.0, |m| m.stats.acked_per_sec());
        let rate = args.open_rate.unwrap_or(best * args.open_fraction);
        let open = if rate >= 1.0 {
            eprintln!(
                "{name}: open loop at {rate:.0}/s over {} connections",
                args.open_connections
            );
            let sources = take(&mut streams, args.open_connections);
            let meter = Meter::start(server.pid());
            let before = server_side(target, addr).await;
            let (mut stats, dispatch) =
                open_loop::run(addr, sources, rate, args.duration, false).await?;
            stats.usage = meter.usage();
            report_server_side(target, addr, before, "open loop", args.duration).await;
            Some((stats, dispatch))
        } else {
            eprintln!("{name}: no open-loop phase: the maximum rate was {rate:.1}/s");
            None
        };
        let log_tail = server.log_tail();
        let stopped = server.stop().map_err(|e| format!("{e:#}"));
        run.outcomes.push(Outcome {
            target,
            max,
            open_rate: rate,
            open,
            stopped,
            log_tail,
        });
    }
    run.print_results();
    Ok(())
}

/// The gateway's metrics before a phase (none for the bare server, which has no `/metrics`).
async fn server_side(target: Target, addr: std::net::SocketAddr) -> Option<server_view::Snapshot> {
    if target != Target::Gateway {
        return None;
    }
    server_view::scrape(addr)
        .await
        .map_err(|e| eprintln!("gateway: cannot read /metrics: {e:#}"))
        .ok()
}

async fn report_server_side(
    target: Target,
    addr: std::net::SocketAddr,
    before: Option<server_view::Snapshot>,
    phase: &str,
    duration: std::time::Duration,
) {
    if let (Some(before), Some(after)) = (before, server_side(target, addr).await) {
        eprintln!(
            "{}: {phase}, as the gateway saw it: {}",
            target.name(),
            server_view::describe(&before, &after, duration)
        );
    }
}

pub(crate) fn take(streams: &mut EventStreams, n: u16) -> Vec<EventSource> {
    (0..n).map(|_| streams.take()).collect()
}

fn bare_command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command.args(["bare-server", "--listen", "127.0.0.1:0"]);
    command
}

pub(crate) fn gateway_command(gateway: &Path, config: &Path) -> Command {
    let mut command = Command::new(gateway);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .env(SECRET_ENV, SECRET)
        .env("RUST_LOG", "warn");
    command
}

/// The gateway's config: one Ledger source, the store in the temp dir (fresh every run).
fn write_config(dir: &Path, plugin: Option<RoutePlugin>) -> anyhow::Result<PathBuf> {
    let mut text = base_config(dir)?;
    if let Some(plugin) = plugin {
        let wasm = match plugin {
            RoutePlugin::Echo => plugin_artifacts::ECHO,
            RoutePlugin::Spin => plugin_artifacts::SPIN,
            RoutePlugin::Panic => plugin_artifacts::PANIC,
        };
        let wasm = toml_path(Path::new(wasm))?;
        let audit = toml_path(&dir.join("data").join("delivered.jsonl"))?;
        let cache = toml_path(&dir.join("wasm-cache"))?;
        // The default unhealthy_after (10) and cool-down (30 s) apply.
        text.push_str(&format!(
            r#"
[wasm]
cache_dir = {cache}

[plugins.fixture]
wasm = {wasm}
timeout = "100ms"

[destinations.audit]
file = {audit}

[[routes]]
name = "through-fixture"
plugins = ["fixture"]
to = ["audit"]
"#
        ));
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// `path` as a TOML literal string (`'...'`).
pub(crate) fn toml_path(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    anyhow::ensure!(
        !text.contains(['\'', '\n']),
        "the path {text:?} cannot be a TOML literal string"
    );
    Ok(format!("'{text}'"))
}

/// The ingest config's text: one Ledger source, the store in `dir/data`. `loadgen e2e` adds
/// to it. The store is not next to the config, as in a real deployment: the gateway watches the
/// config's directory for changes, and a store there would wake that watcher on every commit.
pub(crate) fn base_config(dir: &Path) -> anyhow::Result<String> {
    let db = toml_path(&dir.join("data").join("gateway.db"))?;
    Ok(format!(
        r#"[server]
listen = "127.0.0.1:0"
max_body = "1MiB"

[store]
path = {db}

[sources.ledger]
provider = "ledger"
path = "/webhooks/ledger"
secrets = ["env:{SECRET_ENV}"]
signature = "ledger"
tolerance = "5m"
"#
    ))
}
