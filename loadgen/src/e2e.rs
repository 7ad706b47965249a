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
//! gateway's CPU and its own view from `/metrics`.

use crate::child::Server;
use crate::cli::E2eArgs;
use crate::cpu::{Meter, Usage};
use crate::database::{self, Database};
use crate::ingest::{DATABASE_URL_ENV, StoreKind, base_config, gateway_command, take, toml_path};
use crate::open_loop::Dispatch;
use crate::report::{cores, print_machine, si, verdict};
use crate::signing::EventStreams;
use crate::sink::Sink;
use crate::stats::Stats;
use crate::{closed_loop, open_loop, server_view};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The targets a store is held to: sustained end-to-end rate with nothing lost, and p99
/// POST-to-sink latency at half of that rate.
#[derive(Debug, Clone, Copy)]
struct Targets {
    rate: f64,
    p99_ms: f64,
}

/// The SQLite gateway's (issue 14).
const SQLITE_TARGETS: Targets = Targets {
    rate: 20_000.0,
    p99_ms: 50.0,
};
/// One gateway on PostgreSQL (issue 21 sets the rate; the latency target stays SQLite's).
const PG_TARGETS: Targets = Targets {
    rate: 10_000.0,
    p99_ms: 50.0,
};

/// The sink destination's signing secret (`whsec_` + base64), passed in this variable.
const SINK_SECRET_ENV: &str = "LOADGEN_SINK_SECRET";
const SINK_SECRET: &str = "whsec_bG9hZGdlbi1lMmUtc2luay1zZWNyZXQh";
/// Latencies are recorded in microseconds, clamped to this (ten minutes).
const MAX_US: u64 = 600_000_000;
/// A little more than the gateway's backlog gauge period.
const BACKLOG_REFRESH: Duration = Duration::from_millis(1200);
/// Lines of the gateway's log quoted in the report when it warned or failed.
const LOG_QUOTE: usize = 8;

/// One measured phase.
#[derive(Debug)]
struct Phase {
    name: String,
    /// The client's view: answers, ack latency, accepted ids with send times.
    stats: Stats,
    dispatch: Option<Dispatch>,
    /// Sink requests (any id, repeats included) during the send window.
    sink_requests: u64,
    /// Acked events that reached the sink, and the last of their first arrivals (from the
    /// phase's start).
    delivered: u64,
    last_arrival: Option<Duration>,
    /// From the end of sending until every acked event had arrived (or the timeout).
    drain: Duration,
    lost: u64,
    /// Extra deliveries of this phase's acked events, counted after the drain.
    duplicates: u64,
    /// POST-to-sink latency of each acked event that arrived, in microseconds.
    e2e: Histogram<u64>,
    /// CPU over window plus drain (over the send window alone: `stats.usage`).
    usage_with_drain: Usage,
    /// PostgreSQL's own account of the phase (gateways on PostgreSQL only).
    notes: Vec<String>,
}

impl Phase {
    fn acked(&self) -> u64 {
        self.stats.accepted
    }

    /// 200 answers per second of the send window.
    fn acked_per_sec(&self) -> f64 {
        self.stats.acked_per_sec()
    }

    fn sink_per_sec(&self) -> f64 {
        self.sink_requests as f64 / self.stats.elapsed.as_secs_f64().max(1e-9)
    }

    /// Acked events delivered per second, from the first send to the last first arrival.
    fn end_to_end_per_sec(&self) -> f64 {
        match self.last_arrival {
            Some(t) => self.delivered as f64 / t.as_secs_f64().max(1e-9),
            None => 0.0,
        }
    }

    fn e2e_ms(&self, quantile: f64) -> f64 {
        self.e2e.value_at_quantile(quantile) as f64 / 1000.0
    }
}

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
        Some(Database::start()?)
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
    };
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
                 url, default pool and lease, on a fresh database; PostgreSQL, the gateway, \
                 the generator and the sink share the machine's cores",
                crate::database::SETTINGS
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
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

/// What the PostgreSQL section is compared by.
#[derive(Debug)]
struct Summary {
    /// The maximum phase's sustained end-to-end rate.
    end_to_end: f64,
    /// Gateway (+ database) CPU over sending and drain, per event delivered.
    us_per_event: Option<f64>,
}

/// One gateway measured end to end: the same phases whatever its store.
struct GatewayRun<'a> {
    args: &'a E2eArgs,
    gateway: &'a Path,
    plugin: &'a Path,
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
        let args = self.args;
        let (sink, sink_addr) = Sink::start().await?;
        let store = if db.is_some() {
            StoreKind::Postgres
        } else {
            StoreKind::Sqlite
        };
        let config = write_config(dir, sink_addr, self.plugin, args, store)?;
        let log = dir.join("gateway.log");
        let mut command = gateway_command(self.gateway, &config);
        command.env(SINK_SECRET_ENV, SINK_SECRET);
        if let Some(db) = db {
            command.env(DATABASE_URL_ENV, db.fresh("e2e")?);
        }
        let server = Server::start("gateway", command, &log)?;
        let addr = server.addr;
        eprintln!(
            "gateway: listening on {addr}, sink on {sink_addr}; warming up for {:?}",
            args.warmup
        );

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
        let targets = if db.is_some() { PG_TARGETS } else { SQLITE_TARGETS };
        print_results(args, &phases, rate, &targets);
        print_checks(args, &phases, &sink, acked_ids, at_rest, &stopped, &log);
        let with_drain = max.stats.elapsed + max.drain;
        let delivered_per_sec = max.delivered as f64 / with_drain.as_secs_f64().max(1e-9);
        Ok(Summary {
            end_to_end: max.end_to_end_per_sec(),
            us_per_event: max.usage_with_drain.us_per_event(delivered_per_sec),
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

[[routes]]
name = "bench"
match = {{ type = ["ledger.transaction.*"] }}
plugins = ["threshold"]
to = ["sink"]

[workers]
concurrency = {}
plugin_threads = {}
"#,
        args.destination_concurrency, args.worker_concurrency, args.plugin_threads
    ));
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn print_header(args: &E2eArgs, plugin: &Path, body_len: usize) {
    println!("end-to-end benchmark: signed POST -> store -> plugin -> HTTP delivery to a sink");
    print_machine();
    println!(
        "generator:  {} thread(s), shared with the sink (127.0.0.1, answers 200, verifies nothing)",
        args.generator_threads
    );
    println!(
        "gateway:    plugin {} (warm, threshold=1, flag); destination concurrency {}; workers \
         concurrency {}, plugin_threads {}",
        plugin.display(),
        args.destination_concurrency,
        args.worker_concurrency,
        args.plugin_threads
    );
    println!(
        "parameters: {:?} per phase after a {:?} warm-up, each drained (at most {:?}); {} \
         connections at max rate, {} in the open loop at {:.0}% of the end-to-end max; unique \
         events, {body_len}-byte bodies",
        args.duration,
        args.warmup,
        args.drain_timeout,
        args.connections,
        args.open_connections,
        args.open_fraction * 100.0,
    );
}

fn print_results(args: &E2eArgs, phases: &[&Phase], open_rate: f64, targets: &Targets) {
    println!();
    println!(
        "{:<11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>7} {:>6} {:>7} {:>7} {:>7}",
        "phase",
        "acked",
        "acked/s",
        "sink/s",
        "e2e/s",
        "drain s",
        "lost",
        "dup",
        "non-200",
        "errors",
        "gen cpu",
        "gw cpu",
        "gw+drn"
    );
    for p in phases {
        println!(
            "{:<11} {:>8} {:>8.0} {:>8.0} {:>8.0} {:>8.2} {:>5} {:>5} {:>7} {:>6} {:>7} {:>7} {:>7}",
            p.name,
            p.acked(),
            p.acked_per_sec(),
            p.sink_per_sec(),
            p.end_to_end_per_sec(),
            p.drain.as_secs_f64(),
            p.lost,
            p.duplicates,
            p.stats.non_200,
            p.stats.errors,
            cores(p.stats.usage.generator),
            cores(p.stats.usage.server),
            cores(p.usage_with_drain.server),
        );
    }
    println!(
        "(acked/s: 200s per second of sending; sink/s: deliveries the sink received in the same \
         window; e2e/s: acked events delivered / (first send -> last first arrival); drain: wait \
         after sending until every acked event had arrived; lost: acked, never arrived; dup: \
         extra arrivals; cpu: cores used while sending (gen: loadgen incl. the sink), gw+drn: \
         the gateway over sending plus drain)"
    );
    if phases.iter().any(|p| p.stats.usage.database.is_some()) {
        print_database_share(phases);
    }
    println!();
    println!(
        "{:<11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "phase",
        "ack p50",
        "ack p99",
        "ack max",
        "e2e p50",
        "e2e p90",
        "e2e p99",
        "e2e max",
        "events"
    );
    for p in phases {
        println!(
            "{:<11} {:>8.3} {:>8.3} {:>8.3} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8}",
            p.name,
            p.stats.ms(0.5),
            p.stats.ms(0.99),
            p.stats.max_ms(),
            p.e2e_ms(0.5),
            p.e2e_ms(0.9),
            p.e2e_ms(0.99),
            p.e2e.max() as f64 / 1000.0,
            p.e2e.len()
        );
    }
    println!(
        "(milliseconds; ack: POST to 200; e2e: POST to the sink's first receipt of that event id, \
         for acked events that arrived; both from the actual send at max rate, from the intended \
         send time in the open loop)"
    );
    println!();
    if let Some(max) = phases.first() {
        let rate = max.end_to_end_per_sec();
        println!(
            "end-to-end maximum, sustained: {rate:.0} events/s with {} lost (target >= {:.0}/s \
             with 0 lost): {}",
            max.lost,
            targets.rate,
            verdict(rate >= targets.rate && max.lost == 0)
        );
    }
    match phases.get(1) {
        Some(open) => {
            let p99 = open.e2e_ms(0.99);
            println!(
                "p99 POST-to-sink at {:.0}% of that ({open_rate:.0}/s): {p99:.2} ms with {} lost \
                 (target < {} ms at half the rate): {}",
                args.open_fraction * 100.0,
                open.lost,
                targets.p99_ms,
                verdict(p99 < targets.p99_ms && open.lost == 0 && !open.e2e.is_empty())
            );
        }
        None => println!("p99 POST-to-sink at half the rate: not measured"),
    }
}

/// The PostgreSQL server's CPU next to the gateway's, the CPU per delivered event, and the
/// server's own account of each phase.
fn print_database_share(phases: &[&Phase]) {
    println!();
    println!(
        "{:<11} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "phase", "gw cpu", "db cpu", "gw+drn", "db+drn", "us/ev"
    );
    for p in phases {
        let with_drain = (p.stats.elapsed + p.drain).as_secs_f64().max(1e-9);
        let us = p
            .usage_with_drain
            .us_per_event(p.delivered as f64 / with_drain)
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"));
        println!(
            "{:<11} {:>7} {:>7} {:>7} {:>7} {:>8}",
            p.name,
            cores(p.stats.usage.server),
            cores(p.stats.usage.database),
            cores(p.usage_with_drain.server),
            cores(p.usage_with_drain.database),
            us
        );
    }
    println!(
        "(db: the PostgreSQL server, postmaster and children; us/ev: gateway + PostgreSQL CPU \
         microseconds over sending plus drain, per acked event delivered)"
    );
    for p in phases {
        for note in &p.notes {
            println!("{note}");
        }
    }
}

fn print_checks(
    args: &E2eArgs,
    phases: &[&Phase],
    sink: &Sink,
    acked_delivered: u64,
    at_rest: Option<(f64, f64)>,
    stopped: &Result<(ExitStatus, Duration), String>,
    log: &Path,
) {
    for p in phases {
        if let Some(sample) = &p.stats.sample_non_200 {
            println!("check: {}: first non-200 answer: {sample}", p.name);
        }
        if let Some(sample) = &p.stats.sample_error {
            println!("check: {}: first error: {sample}", p.name);
        }
        if p.lost > 0 {
            println!(
                "check: {}: {} acked events never reached the sink within {:?} of the end of sending",
                p.name, p.lost, args.drain_timeout
            );
        }
        if p.sink_per_sec() < 0.9 * p.acked_per_sec() {
            println!(
                "check: {}: the gateway acked {:.0}/s but delivered {:.0}/s while taking load: its \
                 backlog grew by about {:.0} events, drained in {:.2?}; above this rate ingest \
                 outpaces routing (sustainable: between sink/s and e2e/s)",
                p.name,
                p.acked_per_sec(),
                p.sink_per_sec(),
                p.acked() as f64 - p.sink_requests as f64,
                p.drain
            );
        }
        if let Some(d) = &p.dispatch {
            println!(
                "{} schedule: {} requests sent; hand-over lag p50 {:.3} ms, p99 {:.3} ms (counted \
                 in latency); {} found every connection busy",
                p.name,
                d.scheduled,
                d.lag.value_at_quantile(0.5) as f64 / 1000.0,
                d.lag.value_at_quantile(0.99) as f64 / 1000.0,
                d.waited
            );
        }
    }
    let (requests, distinct) = (sink.requests(), sink.distinct() as u64);
    println!(
        "sink: {requests} requests, {distinct} distinct event ids ({} repeats overall), {} with \
         the plugin's largedeposit extension, {} without webhook-id; {} ids never acked 200",
        requests.saturating_sub(distinct + sink.missing_id()),
        sink.flagged(),
        sink.missing_id(),
        distinct.saturating_sub(acked_delivered),
    );
    if sink.flagged() < requests {
        println!(
            "check: {} deliveries lack the plugin's extension (did every event pass the plugin?)",
            requests - sink.flagged()
        );
    }
    if let Some((queue, dead)) = at_rest {
        println!(
            "gateway at rest after the last drain: queue depth {queue:.0}, dead letters {dead:.0}"
        );
    }
    match stopped {
        Ok((status, took)) => println!("gateway stopped by SIGTERM in {took:.2?} ({status})"),
        Err(e) => println!("gateway did not stop cleanly: {e}"),
    }
    print_log_summary(log);
}

/// Counts the gateway's WARN and ERROR lines and quotes the first few.
fn print_log_summary(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(strip_ansi).collect();
    let has = |l: &String, level: &str| l.split_whitespace().take(3).any(|w| w == level);
    let warns = lines.iter().filter(|l| has(l, "WARN")).count();
    let errors = lines.iter().filter(|l| has(l, "ERROR")).count();
    println!(
        "gateway log: {} lines, {warns} WARN, {errors} ERROR (RUST_LOG=warn)",
        lines.len()
    );
    for l in lines
        .iter()
        .filter(|l| has(l, "WARN") || has(l, "ERROR"))
        .take(LOG_QUOTE)
    {
        println!("  {l}");
    }
}

/// Removes ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[33m WARN\u{1b}[0m gateway: x"),
            " WARN gateway: x"
        );
    }
}
