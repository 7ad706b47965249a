//! `loadgen ingest`: runs the whole benchmark. For each target in turn (the bare server, then
//! the gateway, each its own child process started here and stopped before the next; with
//! `--store postgres` then one gateway and then two on a throwaway PostgreSQL cluster), a
//! closed-loop warm-up, a closed-loop maximum-rate phase, and an open-loop phase at a fraction
//! of the maximum rate measured for that same target (with `--store postgres` also one at a
//! fixed rate, the same for all; and after each phase on PostgreSQL a wait until the routing
//! backlog the phase left has drained); with pg-1 and pg-2 both measured, then the rounds in
//! which they take turns (`replica_rounds.rs`); then prints the report.

use crate::child::Server;
use crate::cli::{IngestArgs, PostgresArgs, RoutePlugin, Target};
use crate::cpu::Meter;
use crate::database::{self, Counters, Database};
use crate::report::{MaxPhase, Outcome, Run, best_of};
use crate::signing::{EventSource, EventStreams, SECRET, SECRET_ENV};
use crate::stats::Stats;
use crate::{closed_loop, consoles, open_loop, replica_rounds, server_view};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The variable the PostgreSQL configs name in `[store] url` (a secret reference).
pub(crate) const DATABASE_URL_ENV: &str = "GATEWAY_DATABASE_URL";

/// Which `[store]` a gateway config gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// `path`: a SQLite file under the config's temp dir.
    Sqlite,
    /// `url = "env:GATEWAY_DATABASE_URL"`, the connection string set per gateway process, and
    /// `ack_writers` and `ack_spacing` when given.
    Postgres {
        ack_writers: Option<u16>,
        ack_spacing: Option<Duration>,
    },
}

pub(crate) async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    anyhow::ensure!(
        args.postgres() || !args.only.iter().any(|t| t.on_postgres()),
        "pg-1 and pg-2 are measured with --store postgres"
    );
    let targets = args.targets();
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| exe.with_file_name("gateway"));
    if targets.iter().any(|t| t.replicas() > 0) && !args.bare_as_gateway {
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
    let config = write_config(dir.path(), args.route_plugin, StoreKind::Sqlite)?;
    if args.consoles > 0 {
        // The admin API on the webhook port, as without `[admin] listen`.
        let mut text = std::fs::read_to_string(&config)?;
        text = text.replacen(
            "[store]",
            &format!(
                "[admin]\ntoken = \"env:{}\"\n\n[store]",
                consoles::ADMIN_TOKEN_ENV
            ),
            1,
        );
        std::fs::write(&config, text)?;
    }
    let database = if args.postgres() {
        eprintln!("postgres: starting a throwaway cluster");
        Some(Database::start(
            args.pg_statements,
            &args.postgres.settings,
        )?)
    } else {
        None
    };
    let pg_config = match &database {
        Some(_) => {
            let pg_dir = dir.path().join("pg");
            std::fs::create_dir_all(&pg_dir)
                .with_context(|| format!("cannot create {}", pg_dir.display()))?;
            Some(write_config(
                &pg_dir,
                args.route_plugin,
                StoreKind::Postgres {
                    ack_writers: args.postgres.ack_writers,
                    ack_spacing: args.postgres.ack_spacing,
                },
            )?)
        }
        None => None,
    };
    let mut streams = EventStreams::new(args.duplicates, args.body_size)?;
    let mut run = Run::new(
        &args,
        streams.take().next_delivery().body.len(),
        database.as_ref().map(Database::describe_settings),
    );
    run.print_header();

    for target in targets {
        let name = target.name();
        let label = name.replace('-', "_");
        let servers = match (target, &database, &pg_config) {
            (Target::PgOne | Target::PgTwo, Some(db), Some(pg_config)) => {
                // A fresh database per target: the second is not slowed by the first's rows.
                let conninfo = db.fresh(&label)?;
                start_postgres_servers(
                    target,
                    &args.postgres,
                    &gateway,
                    pg_config,
                    &conninfo,
                    dir.path(),
                    &label,
                )?
            }
            (Target::PgOne | Target::PgTwo, ..) => {
                anyhow::bail!("{name} needs --store postgres")
            }
            (Target::Gateway, ..) if !args.bare_as_gateway => {
                let log = dir.path().join(format!("{name}.log"));
                let mut command = gateway_command(&gateway, &config);
                command.env(consoles::ADMIN_TOKEN_ENV, consoles::ADMIN_TOKEN);
                vec![Server::start(name, command, &log)?]
            }
            _ => {
                let log = dir.path().join(format!("{name}.log"));
                vec![Server::start(name, bare_command(&exe), &log)?]
            }
        };
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
        let db = database.as_ref().filter(|_| target.on_postgres());
        let postmaster = db.and_then(Database::postmaster);
        let shown = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        eprintln!(
            "{name}: listening on {shown}; warming up for {:?}",
            args.warmup
        );
        let first = args.connections.first().copied().unwrap_or(64);
        let sources = take(&mut streams, first);
        let warmup = closed_loop::run(&addrs, sources, args.warmup, false).await?;
        if warmup.accepted + warmup.duplicate == 0 {
            let tails: String = servers.iter().map(Server::log_tail).collect();
            eprintln!(
                "{name}: warning: no 200 answers in the warm-up (non-200: {}, errors: {}){tails}",
                warmup.sample_non_200.as_deref().unwrap_or("none"),
                warmup.sample_error.as_deref().unwrap_or("none"),
            );
        }
        let mut notes = Vec::new();
        let mut max = Vec::with_capacity(args.connections.len());
        for &connections in &args.connections {
            eprintln!("{name}: maximum rate, {connections} connections");
            let sources = take(&mut streams, connections);
            let meter = Meter::of(&pids, postmaster);
            let before = Probe::read(target, &addrs, db).await;
            let mut stats = closed_loop::run(&addrs, sources, args.duration, false).await?;
            stats.usage = meter.usage();
            let phase = format!("maximum rate, {connections} connections");
            notes.extend(before.report(&phase, args.duration, &stats).await);
            notes.extend(drain_routing(target, &addrs).await);
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
            let meter = Meter::of(&pids, postmaster);
            let before = Probe::read(target, &addrs, db).await;
            let (mut stats, dispatch) =
                open_loop::run(&addrs, sources, rate, args.duration, false).await?;
            stats.usage = meter.usage();
            notes.extend(before.report("open loop", args.duration, &stats).await);
            notes.extend(drain_routing(target, &addrs).await);
            Some((stats, dispatch))
        } else {
            eprintln!("{name}: no open-loop phase: the maximum rate was {rate:.1}/s");
            None
        };
        if args.consoles > 0 && target == Target::Gateway && rate >= 1.0 {
            notes.extend(consoles_ab(&args, &addrs, &mut streams, rate).await?);
        }
        let fixed = if args.postgres() {
            let rate = args.fixed_rate;
            eprintln!(
                "{name}: open loop at the fixed {rate:.0}/s over {} connections",
                args.fixed_connections
            );
            let sources = take(&mut streams, args.fixed_connections);
            let meter = Meter::of(&pids, postmaster);
            let before = Probe::read(target, &addrs, db).await;
            let (mut stats, dispatch) =
                open_loop::run(&addrs, sources, rate, args.duration, false).await?;
            stats.usage = meter.usage();
            let phase = format!("open loop at {rate:.0}/s");
            notes.extend(before.report(&phase, args.duration, &stats).await);
            notes.extend(drain_routing(target, &addrs).await);
            Some((stats, dispatch))
        } else {
            None
        };
        let log_tail = servers.iter().map(Server::log_tail).collect();
        let stopped = servers
            .into_iter()
            .map(|s| s.stop().map_err(|e| format!("{e:#}")))
            .collect();
        // Dropped once its gateways stopped, as the rounds' are: left in the cluster, its rows
        // were autovacuumed during the next target's or the rounds' phases (a worker on `pg_2`
        // for 24 s of round 1, whose p99s at 10,000/s were 27 and 32 ms against 15 and 15 ms
        // in round 2, which no such worker overlapped).
        if let Some(db) = db
            && let Err(e) = db.discard(&label)
        {
            eprintln!("{name}: {e:#}");
        }
        run.outcomes.push(Outcome {
            target,
            max,
            open_rate: rate,
            open,
            fixed,
            stopped,
            log_tail,
            notes,
        });
    }
    if let (Some(db), Some(pg_config)) = (&database, &pg_config)
        && run.measured(Target::PgOne)
        && run.measured(Target::PgTwo)
        && args.replica_rounds > 0
    {
        let setup = replica_rounds::Setup {
            gateway: &gateway,
            config: pg_config,
            database: db,
            logs: dir.path(),
        };
        // A round that cannot run (a gateway that does not start) costs the rounds, not the
        // figures already measured: the verdicts are then the targets' own phases.
        match replica_rounds::run(&args, &setup, &mut streams).await {
            Ok(rounds) => run.replica_rounds = rounds,
            Err(e) => eprintln!("replica rounds: {e:#}; the verdicts are the targets' own phases"),
        }
    }
    run.print_results();
    Ok(())
}

/// A PostgreSQL target's gateways (one per replica) on the database `conninfo` names, their
/// logs in `logs` under `label`, each with the runtime threads `postgres` gives a replica of
/// `target` (tokio's `TOKIO_WORKER_THREADS`; see `PostgresArgs::replica_threads`).
pub(crate) fn start_postgres_servers(
    target: Target,
    postgres: &PostgresArgs,
    gateway: &Path,
    config: &Path,
    conninfo: &str,
    logs: &Path,
    label: &str,
) -> anyhow::Result<Vec<Server>> {
    let threads = postgres.replica_threads(target.replicas());
    let mut servers = Vec::with_capacity(target.replicas());
    for i in 0..target.replicas() {
        let mut command = gateway_command(gateway, config);
        command.env(DATABASE_URL_ENV, conninfo);
        if let Some(n) = threads {
            command.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        let log = logs.join(format!("{label}-{i}.log"));
        servers.push(Server::start(target.name(), command, &log)?);
    }
    Ok(servers)
}

/// The open-loop phase again, alternately without and with `--consoles` consoles polling the
/// overview: the ack latency of each run, and the polls answered.
async fn consoles_ab(
    args: &IngestArgs,
    addrs: &[SocketAddr],
    streams: &mut EventStreams,
    rate: f64,
) -> anyhow::Result<Vec<String>> {
    let Some(&first) = addrs.first() else {
        return Ok(Vec::new());
    };
    let mut lines = Vec::new();
    for round in 1..=args.ab_rounds {
        for with in [false, true] {
            let open = with.then(|| consoles::Consoles::open(first, args.consoles));
            let sources = take(streams, args.open_connections);
            let (stats, _) = open_loop::run(addrs, sources, rate, args.duration, false).await?;
            let polls = open.map(consoles::Consoles::close);
            let line = format!(
                "consoles A/B round {round}, {}: {:.0}/s acked, ack p50 {:.2} ms, p99 {:.2} ms, \
                 p99.9 {:.2} ms, max {:.2} ms{}",
                if with {
                    format!("{} consoles", args.consoles)
                } else {
                    "no console".to_owned()
                },
                stats.acked_per_sec(),
                stats.ms(0.5),
                stats.ms(0.99),
                stats.ms(0.999),
                stats.max_ms(),
                polls.map_or(String::new(), |(ok, failed)| format!(
                    " ({ok} overviews answered, {failed} failed)"
                )),
            );
            eprintln!("{line}");
            lines.push(line);
        }
    }
    Ok(lines)
}

/// The servers' own counters before a phase: each replica's `/metrics` (none for the bare
/// server, which has none) and, for gateways on PostgreSQL, the database server's.
struct Probe<'a> {
    target: Target,
    replicas: Vec<(SocketAddr, Option<server_view::Snapshot>)>,
    database: Option<(&'a Database, Option<Counters>)>,
}

impl<'a> Probe<'a> {
    async fn read(target: Target, addrs: &[SocketAddr], db: Option<&'a Database>) -> Self {
        let mut replicas = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            replicas.push((addr, server_side(target, addr).await));
        }
        if let Some(db) = db {
            db.reset_statements();
        }
        Self {
            target,
            replicas,
            database: db.map(|db| (db, db.counters())),
        }
    }

    /// Prints what the servers saw of the phase since [`Probe::read`] (on stderr, as the run
    /// goes) and returns the same lines for the report.
    async fn report(self, phase: &str, duration: Duration, stats: &Stats) -> Vec<String> {
        let name = self.target.name();
        let several = self.replicas.len() > 1;
        let mut lines = Vec::new();
        for (i, (addr, before)) in self.replicas.into_iter().enumerate() {
            let (Some(before), Some(after)) = (before, server_side(self.target, addr).await) else {
                continue;
            };
            let who = if several {
                format!("{name} replica {}", i + 1)
            } else {
                name.to_owned()
            };
            let mut line = format!(
                "{who}: {phase}, as the gateway saw it: {}",
                server_view::describe(&before, &after, duration)
            );
            // On PostgreSQL the ack does not wait for routing, which claims from the same
            // database: a growing queue means the phase's rate borrowed from later phases.
            if self.database.is_some() {
                line.push_str(&format!(
                    "; queue depth {:.0} at the end",
                    after.backlog().0
                ));
            }
            lines.push(line);
        }
        if let Some((db, Some(before))) = self.database
            && let Some(after) = db.counters()
        {
            lines.push(format!(
                "{name}: {phase}, as PostgreSQL saw it: {}",
                database::describe(
                    &before,
                    &after,
                    stats.elapsed.as_secs_f64(),
                    stats.accepted + stats.duplicate
                )
            ));
            lines.extend(db.statements(stats.accepted + stats.duplicate));
        }
        for line in &lines {
            eprintln!("{line}");
        }
        lines
    }
}

/// Longest wait for a PostgreSQL target's routing backlog to drain between phases.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// How often the queue-depth gauge is read while draining (it refreshes about once a second).
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// On PostgreSQL the ack does not wait for routing, and routing claims from the same database:
/// a phase that acked faster than the gateway routes leaves a queue, and the next phase would
/// pay for it. Waits until `gateway_queue_depth` reads 0 (or [`DRAIN_LIMIT`]) and says how
/// long that took. Nothing for the bare server and SQLite, whose runs stay as they were.
pub(crate) async fn drain_routing(target: Target, addrs: &[SocketAddr]) -> Option<String> {
    let addr = *addrs.first().filter(|_| target.on_postgres())?;
    let started = std::time::Instant::now();
    let first = server_side(target, addr).await?.backlog().0;
    let mut depth = first;
    while depth > 0.0 && started.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(DRAIN_POLL).await;
        depth = server_side(target, addr)
            .await
            .map_or(depth, |s| s.backlog().0);
    }
    let line = if depth > 0.0 {
        format!(
            "{}: routing backlog {first:.0} not drained in {DRAIN_LIMIT:?} ({depth:.0} left)",
            target.name()
        )
    } else {
        format!(
            "{}: routing backlog {first:.0} drained in {:.1?} before the next phase",
            target.name(),
            started.elapsed()
        )
    };
    eprintln!("{line}");
    Some(line)
}

/// The gateway's metrics before a phase (none for the bare server, which has no `/metrics`).
async fn server_side(target: Target, addr: SocketAddr) -> Option<server_view::Snapshot> {
    if target == Target::Bare {
        return None;
    }
    server_view::scrape(addr)
        .await
        .map_err(|e| eprintln!("{}: cannot read /metrics: {e:#}", target.name()))
        .ok()
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

/// The gateway's config: one Ledger source, the store in the temp dir (fresh every run) or on
/// PostgreSQL.
fn write_config(
    dir: &Path,
    plugin: Option<RoutePlugin>,
    store: StoreKind,
) -> anyhow::Result<PathBuf> {
    let mut text = base_config(dir, store)?;
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

/// The ingest config's text: one Ledger source, the store in `dir/data` (or on PostgreSQL, with
/// the gateway's default pool and lease). `loadgen e2e` adds to it. The store is not next to the
/// config, as in a real deployment: the gateway watches the config's directory for changes, and
/// a store there would wake that watcher on every commit.
pub(crate) fn base_config(dir: &Path, store: StoreKind) -> anyhow::Result<String> {
    let store = match store {
        StoreKind::Sqlite => format!(
            "path = {}",
            toml_path(&dir.join("data").join("gateway.db"))?
        ),
        StoreKind::Postgres {
            ack_writers,
            ack_spacing,
        } => {
            let mut store = format!("url = \"env:{DATABASE_URL_ENV}\"");
            if let Some(n) = ack_writers {
                store.push_str(&format!("\nack_writers = {n}"));
            }
            if let Some(spacing) = ack_spacing {
                let spacing = humantime::format_duration(spacing);
                store.push_str(&format!("\nack_spacing = \"{spacing}\""));
            }
            store
        }
    };
    Ok(format!(
        r#"[server]
listen = "127.0.0.1:0"
max_body = "1MiB"

[store]
{store}

[sources.ledger]
provider = "ledger"
path = "/webhooks/ledger"
secrets = ["env:{SECRET_ENV}"]
signature = "ledger"
tolerance = "5m"
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::{StoreKind, base_config};

    #[test]
    fn postgres_configs_carry_the_ack_keys_only_when_given() {
        let dir = std::path::Path::new("/tmp/loadgen-test");
        let store_of = |ack_writers, ack_spacing| {
            let kind = StoreKind::Postgres {
                ack_writers,
                ack_spacing,
            };
            let text = base_config(dir, kind).expect("a config");
            let store = text.split("[store]\n").nth(1).expect("a [store] table");
            store.split("\n\n").next().unwrap_or_default().to_owned()
        };
        assert_eq!(
            store_of(Some(3), None),
            "url = \"env:GATEWAY_DATABASE_URL\"\nack_writers = 3"
        );
        assert_eq!(
            store_of(None, Some(std::time::Duration::ZERO)),
            "url = \"env:GATEWAY_DATABASE_URL\"\nack_spacing = \"0s\""
        );
        assert_eq!(
            store_of(None, Some(std::time::Duration::from_micros(1500))),
            "url = \"env:GATEWAY_DATABASE_URL\"\nack_spacing = \"1ms 500us\""
        );
        assert_eq!(store_of(None, None), "url = \"env:GATEWAY_DATABASE_URL\"");
    }
}
