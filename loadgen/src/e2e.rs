//! `loadgen e2e`: the gateway end to end. A signed POST is stored and acked, a worker takes it
//! from the store through one plugin (the `threshold` example in warm mode, flagging every event)
//! and delivers it by HTTP to a sink that runs in this process ([`crate::sink`]); the sink notes
//! when each event id first arrived.
//!
//! Phases, all with unique Ledger `transaction.completed` events (no duplicates are sent):
//! a closed-loop warm-up (drained), a closed-loop maximum-rate phase, then an open-loop phase at
//! a fraction of the END-TO-END maximum. After sending stops, each phase drains: it waits until
//! every acked event id has reached the sink (or `--drain-timeout`). Each phase reports acked/s,
//! sink receipts/s over the same window, the end-to-end rate (acked events delivered / time from
//! the first send to the last first-arrival), lost (acked, never received), duplicates
//! (received more than once), POST-to-sink latency per event id (send time of the request,
//! intended send time in the open loop, to the sink's receive time) and ack latency, the
//! gateway's CPU and its own view from `/metrics`; printed by [`crate::e2e_report`].
//!
//! With `--store postgres` the same phases run twice in one run: against the gateway on SQLite,
//! then against one gateway on a throwaway PostgreSQL cluster (a fresh database), each with a
//! sink of its own; the PostgreSQL server's CPU and statistics are added to its figures.

use crate::child::Server;
use crate::cli::E2eArgs;
use crate::cpu::Meter;
use crate::database::{self, Database};
use crate::e2e_report::{
    PG_TARGETS, Phase, SQLITE_TARGETS, print_checks, print_header, print_results,
};
use crate::ingest::{DATABASE_URL_ENV, StoreKind, base_config, gateway_command, take, toml_path};
use crate::open_loop::Dispatch;
use crate::report::si;
use crate::signing::EventStreams;
use crate::sink::Sink;
use crate::stats::Stats;
use crate::{closed_loop, open_loop, server_view};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sink destination's signing secret (`whsec_` + base64), passed in this variable.
const SINK_SECRET_ENV: &str = "LOADGEN_SINK_SECRET";
const SINK_SECRET: &str = "whsec_bG9hZGdlbi1lMmUtc2luay1zZWNyZXQh";
/// Latencies are recorded in microseconds, clamped to this (ten minutes).
const MAX_US: u64 = 600_000_000;
/// A little more than the gateway's backlog gauge period.
const BACKLOG_REFRESH: Duration = Duration::from_millis(1200);
pub(crate) async fn run(args: E2eArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| exe.with_file_name("gateway"));
    anyhow::ensure!(
        gateway.is_file(),
        "no gateway binary at {} (run `cargo build --release -p gateway -p loadgen` first, or pass --gateway PATH)",
        gateway.display()
    );
    let plugin = args
        .plugin
        .clone()
        .unwrap_or_else(|| PathBuf::from(plugin_artifacts::THRESHOLD));
    anyhow::ensure!(
        plugin.is_file(),
        "no plugin component at {}",
        plugin.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("loadgen-e2e-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let database = if args.postgres() {
        eprintln!("postgres: starting a throwaway cluster");
        Some(Database::start(
            args.pg_statements,
            &args.postgres.settings,
        )?)
    } else {
        None
    };
    let mut streams = EventStreams::new(0.0, args.body_size)?;
    let body_len = streams.take().next_delivery().body.len();
    print_header(&args, &plugin, body_len);
    let gateway_run = GatewayRun {
        args: &args,
        gateway: &gateway,
        plugin: &plugin,
        ordered: false,
    };
    if let Some(subjects) = args.ordered {
        measure_orderings(&gateway_run, &mut streams, dir.path(), None, subjects).await?;
        if let Some(db) = &database {
            let pg_dir = dir.path().join("pg");
            std::fs::create_dir_all(&pg_dir)
                .with_context(|| format!("cannot create {}", pg_dir.display()))?;
            measure_orderings(&gateway_run, &mut streams, &pg_dir, Some(db), subjects).await?;
        }
        return Ok(());
    }
    match &database {
        None => {
            gateway_run.measure(&mut streams, dir.path(), None).await?;
        }
        Some(db) => {
            println!(
                "postgres:   throwaway-pg cluster, unix socket, as read back: {}",
                db.describe_settings()
            );
            println!(
                "            (set on top of throwaway-pg's defaults: {}); one gateway, [store] \
                 url, {}, on a fresh database; PostgreSQL, the gateway, the generator and the \
                 sink share the machine's cores",
                crate::database::settings_text(),
                args.postgres.describe_store()
            );
            println!();
            println!("=== the gateway on SQLite ===");
            let sqlite = gateway_run.measure(&mut streams, dir.path(), None).await?;
            println!();
            println!("=== one gateway on PostgreSQL ===");
            let pg_dir = dir.path().join("pg");
            std::fs::create_dir_all(&pg_dir)
                .with_context(|| format!("cannot create {}", pg_dir.display()))?;
            let pg = gateway_run.measure(&mut streams, &pg_dir, Some(db)).await?;
            println!();
            println!(
                "end to end, PostgreSQL/SQLite: {:.0}/s vs {:.0}/s sustained ({:.2}); CPU per \
                 delivered event {} us (gateway + PostgreSQL) vs {} us (gateway)",
                pg.end_to_end,
                sqlite.end_to_end,
                pg.end_to_end / sqlite.end_to_end.max(1e-9),
                pg.us_per_event
                    .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}")),
                sqlite
                    .us_per_event
                    .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}")),
            );
        }
    }
    if args.keep {
        println!(
            "kept: {} (config, store, gateway.log)",
            dir.keep().display()
        );
    }
    Ok(())
}

/// `--ordered`: the same phases with `ordering = "none"`, then `"subject"`, each on a fresh
/// store, and the two compared.
async fn measure_orderings(
    run: &GatewayRun<'_>,
    streams: &mut EventStreams,
    dir: &Path,
    db: Option<&Database>,
    subjects: u64,
) -> anyhow::Result<()> {
    let store = if db.is_some() { "PostgreSQL" } else { "SQLite" };
    let mut results = Vec::new();
    for (name, ordered) in [("none", false), ("subject", true)] {
        println!();
        println!("=== {store}, ordering = \"{name}\", {subjects} subjects per phase ===");
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub)
            .with_context(|| format!("cannot create {}", sub.display()))?;
        let ordered_run = GatewayRun { ordered, ..*run };
        let summary = ordered_run
            .measure_with(streams, &sub, db, Some(subjects))
            .await?;
        results.push(summary);
    }
    let (none, subject) = (&results[0], &results[1]);
    println!();
    println!(
        "{store}, end to end, ordering subject/none: {:.0}/s vs {:.0}/s sustained ({:.2}); \
         order violations at the sink: {} vs {} ({} vs {} subjects seen)",
        subject.end_to_end,
        none.end_to_end,
        subject.end_to_end / none.end_to_end.max(1e-9),
        subject.order_violations,
        none.order_violations,
        subject.subjects_seen,
        none.subjects_seen,
    );
    Ok(())
}

/// What the PostgreSQL section is compared by.
#[derive(Debug)]
struct Summary {
    /// The maximum phase's sustained end-to-end rate.
    end_to_end: f64,
    /// Gateway (+ database) CPU over sending and drain, per event delivered.
    us_per_event: Option<f64>,
    /// Deliveries the sink saw out of order within their subject (`--ordered` only).
    order_violations: u64,
    subjects_seen: usize,
}

/// One gateway measured end to end: the same phases whatever its store.
#[derive(Clone, Copy)]
struct GatewayRun<'a> {
    args: &'a E2eArgs,
    gateway: &'a Path,
    plugin: &'a Path,
    /// The sink destination has `ordering = "subject"`.
    ordered: bool,
}

impl GatewayRun<'_> {
    /// Starts a gateway with its config in `dir` (on `db` if given, else on SQLite under
    /// `dir`), runs every phase against a sink of its own, stops it and prints the report.
    async fn measure(
        &self,
        streams: &mut EventStreams,
        dir: &Path,
        db: Option<&Database>,
    ) -> anyhow::Result<Summary> {
        self.measure_with(streams, dir, db, None).await
    }

    /// [`Self::measure`]; with `subjects`, each phase's events are about that many subjects
    /// (spread over its connections) and the sink counts order violations.
    async fn measure_with(
        &self,
        streams: &mut EventStreams,
        dir: &Path,
        db: Option<&Database>,
        subjects: Option<u64>,
    ) -> anyhow::Result<Summary> {
        let args = self.args;
        let (sink, sink_addr) = Sink::start(subjects.is_some()).await?;
        let per_source = |connections: u16| subjects.map(|n| n.div_ceil(u64::from(connections)));
        let store = if db.is_some() {
            StoreKind::Postgres {
                ack_writers: args.postgres.ack_writers,
                ack_spacing: args.postgres.ack_spacing,
            }
        } else {
            StoreKind::Sqlite
        };
        let config = write_config(dir, sink_addr, self.plugin, args, store, self.ordered)?;
        let log = dir.join("gateway.log");
        let mut command = gateway_command(self.gateway, &config);
        command.env(SINK_SECRET_ENV, SINK_SECRET);
        if let Some(db) = db {
            let name = if self.ordered { "e2e_ordered" } else { "e2e" };
            command.env(DATABASE_URL_ENV, db.fresh(name)?);
        }
        let server = Server::start("gateway", command, &log)?;
        let addr = server.addr;
        eprintln!(
            "gateway: listening on {addr}, sink on {sink_addr}; warming up for {:?}",
            args.warmup
        );

        streams.set_subjects_per_source(per_source(args.connections));
        let sources = take(streams, args.connections);
        sink.reserve(room_for(RATE_CEILING, args.warmup));
        let warmup = closed_loop::run(&[addr], sources, args.warmup, true).await?;
        if warmup.accepted == 0 {
            eprintln!(
                "gateway: warning: no 200 answers in the warm-up (non-200: {}, errors: {}){}",
                warmup.sample_non_200.as_deref().unwrap_or("none"),
                warmup.sample_error.as_deref().unwrap_or("none"),
                server.log_tail()
            );
        }
        let ids = ids(&warmup);
        let (waited, missing) = sink.wait_for(&ids, args.drain_timeout).await;
        eprintln!(
            "gateway: warm-up: {} acked, {} at the sink after a {waited:.2?} drain",
            ids.len(),
            ids.len() - missing
        );

        eprintln!("gateway: maximum rate, {} connections", args.connections);
        let duration = args.duration;
        streams.set_subjects_per_source(per_source(args.connections));
        let sources = take(streams, args.connections);
        sink.reserve(room_for(RATE_CEILING, duration));
        let max = measure(args, &server, db, &sink, "max", |track| async move {
            let stats = closed_loop::run(&[addr], sources, duration, track).await?;
            Ok((stats, None))
        })
        .await?;

        let rate = max.end_to_end_per_sec() * args.open_fraction;
        let open = if rate >= 1.0 {
            eprintln!(
                "gateway: open loop at {rate:.0}/s ({:.0}% of the end-to-end max) over {} connections",
                args.open_fraction * 100.0,
                args.open_connections
            );
            streams.set_subjects_per_source(per_source(args.open_connections));
            let sources = take(streams, args.open_connections);
            sink.reserve(room_for(rate * 1.1, duration));
            let name = format!("open@{}", si(rate));
            Some(
                measure(args, &server, db, &sink, &name, |track| async move {
                    let (stats, dispatch) =
                        open_loop::run(&[addr], sources, rate, duration, track).await?;
                    Ok((stats, Some(dispatch)))
                })
                .await?,
            )
        } else {
            eprintln!("gateway: no open-loop phase: the end-to-end maximum was {rate:.1}/s");
            None
        };

        // The backlog gauges refresh about once a second: wait for a fresh value, which should
        // say that nothing is left.
        tokio::time::sleep(BACKLOG_REFRESH).await;
        let at_rest = scrape(addr).await.map(|s| s.backlog());

        // Everything acked in any phase, to tell events the gateway delivered without a 200.
        let acked_ids = ids.len() as u64 - missing as u64
            + max.delivered
            + open.as_ref().map_or(0, |o| o.delivered);
        let stopped = server.stop().map_err(|e| format!("{e:#}"));
        let phases: Vec<&Phase> = std::iter::once(&max).chain(open.as_ref()).collect();
        let targets = if db.is_some() {
            PG_TARGETS
        } else {
            SQLITE_TARGETS
        };
        print_results(args, &phases, rate, &targets);
        print_checks(args, &phases, &sink, acked_ids, at_rest, &stopped, &log);
        let with_drain = max.stats.elapsed + max.drain;
        let delivered_per_sec = max.delivered as f64 / with_drain.as_secs_f64().max(1e-9);
        if subjects.is_some() {
            println!(
                "order:      {} violations at the sink over {} subjects (a delivery older than \
                 one already delivered of its subject)",
                sink.order_violations(),
                sink.subjects()
            );
        }
        streams.set_subjects_per_source(None);
        Ok(Summary {
            end_to_end: max.end_to_end_per_sec(),
            us_per_event: max.usage_with_drain.us_per_event(delivered_per_sec),
            order_violations: sink.order_violations(),
            subjects_seen: sink.subjects(),
        })
    }
}

/// Runs one phase (`send` with id tracking on), then drains and follows every acked id to
/// the sink.
async fn measure<F, Fut>(
    args: &E2eArgs,
    server: &Server,
    db: Option<&Database>,
    sink: &Arc<Sink>,
    name: &str,
    send: F,
) -> anyhow::Result<Phase>
where
    F: FnOnce(bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Stats, Option<Dispatch>)>>,
{
    let addr = server.addr;
    let before = scrape(addr).await;
    if let Some(db) = db {
        db.reset_statements();
    }
    let db_before = db.and_then(Database::counters);
    let meter = Meter::of(&[server.pid()], db.and_then(Database::postmaster));
    let sink_before = sink.requests();
    let started = Instant::now();
    let (mut stats, dispatch) = send(true).await?;
    let sink_requests = sink.requests() - sink_before;
    stats.usage = meter.usage();
    let mut notes = Vec::new();
    if let (Some(db), Some(b)) = (db, &db_before)
        && let Some(a) = db.counters()
    {
        notes.push(format!(
            "{name}, as PostgreSQL saw the send window: {}",
            database::describe(b, &a, stats.elapsed.as_secs_f64(), stats.accepted)
        ));
    }
    let sent = scrape(addr).await;
    if let (Some(b), Some(a)) = (&before, &sent) {
        eprintln!(
            "gateway: {name}, as the gateway saw the send window: {}",
            server_view::describe(b, a, args.duration)
        );
        eprintln!(
            "gateway: {name}, after the ack: {}",
            server_view::describe_flow(b, a)
        );
    }

    let acked = stats.acked.take().unwrap_or_default();
    let ids: Vec<_> = acked.iter().map(|(id, _)| id.clone()).collect();
    let (drain, _) = sink.wait_for(&ids, args.drain_timeout).await;
    let usage_with_drain = meter.usage();
    if let (Some(db), Some(b)) = (db, &db_before)
        && let Some(a) = db.counters()
    {
        let seconds = (stats.elapsed + drain).as_secs_f64();
        notes.push(format!(
            "{name}, as PostgreSQL saw sending and the drain: {}",
            database::describe(b, &a, seconds, stats.accepted)
        ));
        notes.extend(db.statements(stats.accepted));
    }
    for note in &notes {
        eprintln!("gateway: {note}");
    }
    let drained = scrape(addr).await;
    if let (Some(b), Some(a)) = (&before, &drained) {
        eprintln!(
            "gateway: {name}, after the drain ({drain:.2?}): {}",
            server_view::describe_flow(b, a)
        );
    }

    let mut e2e = Histogram::new_with_bounds(1, MAX_US, 3)?;
    let (mut delivered, mut lost, mut duplicates) = (0, 0, 0);
    let mut last_arrival = None;
    for ((_, sent), receipt) in acked.iter().zip(sink.receipts(&ids)) {
        let Some(r) = receipt else {
            lost += 1;
            continue;
        };
        delivered += 1;
        duplicates += u64::from(r.count.saturating_sub(1));
        let us =
            u64::try_from(r.first.saturating_duration_since(*sent).as_micros()).unwrap_or(MAX_US);
        e2e.saturating_record(us.clamp(1, MAX_US));
        let at = r.first.saturating_duration_since(started);
        last_arrival = last_arrival.max(Some(at));
    }
    stats.acked = Some(acked);
    Ok(Phase {
        name: name.to_owned(),
        stats,
        dispatch,
        sink_requests,
        delivered,
        last_arrival,
        drain,
        lost,
        duplicates,
        e2e,
        usage_with_drain,
        notes,
    })
}

/// Receipts the sink makes room for before a closed-loop phase: above any end-to-end rate
/// this machine reaches, so the sink's map never grows while a phase is measured.
const RATE_CEILING: f64 = 60_000.0;

/// How many receipts a phase of `duration` at `rate` events/s can produce.
fn room_for(rate: f64, duration: Duration) -> usize {
    // `as` saturates; the product is far below usize::MAX anyway.
    (rate * duration.as_secs_f64()).ceil() as usize
}

fn ids(stats: &Stats) -> Vec<http::HeaderValue> {
    stats
        .acked
        .iter()
        .flatten()
        .map(|(id, _)| id.clone())
        .collect()
}

async fn scrape(addr: SocketAddr) -> Option<server_view::Snapshot> {
    server_view::scrape(addr)
        .await
        .map_err(|e| eprintln!("gateway: cannot read /metrics: {e:#}"))
        .ok()
}

/// The ingest config plus the plugin, the sink destination, one route and the workers.
fn write_config(
    dir: &Path,
    sink: SocketAddr,
    plugin: &Path,
    args: &E2eArgs,
    store: StoreKind,
    ordered: bool,
) -> anyhow::Result<PathBuf> {
    let mut text = base_config(dir, store)?;
    let wasm = toml_path(&plugin.canonicalize().unwrap_or_else(|_| plugin.to_owned()))?;
    let cache = toml_path(&dir.join("wasm-cache"))?;
    text.push_str(&format!(
        r#"
[wasm]
cache_dir = {cache}

[plugins.threshold]
wasm = {wasm}
mode = "warm"
timeout = "1s"
settings = {{ threshold = "1", mode = "flag" }}

[destinations.sink]
http = "http://{sink}/hook"
# The sink runs on this machine.
allow_private_network = true
secret = "env:{SINK_SECRET_ENV}"
timeout = "5s"
max_attempts = 8
concurrency = {}
ordering = "{}"

[[routes]]
name = "bench"
match = {{ type = ["ledger.transaction.*"] }}
plugins = ["threshold"]
to = ["sink"]

[workers]
concurrency = {}
plugin_threads = {}
"#,
        args.destination_concurrency,
        if ordered { "subject" } else { "none" },
        args.worker_concurrency,
        args.plugin_threads
    ));
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
