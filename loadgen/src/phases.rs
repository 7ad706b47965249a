//! The benchmark's phases: warm-up, closed loop at maximum rate, open loop at a fraction of it,
//! run against each target in turn with the same generator settings.

use crate::IngestArgs;
use crate::child::Server;
use crate::client::{Answer, Connection};
use crate::report::{Phase, Stats};
use crate::signer::{EventSource, SECRET};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

/// Distinguishes the event ids of every phase of one run.
#[derive(Debug)]
struct Streams {
    nonce: u64,
    next: usize,
    duplicates: f64,
}

impl Streams {
    fn take(&mut self) -> EventSource {
        self.next += 1;
        EventSource::new(self.nonce, self.next, self.duplicates)
    }
}

pub(crate) async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let gateway = match &args.gateway {
        Some(p) => p.clone(),
        None => exe.with_file_name("gateway"),
    };
    anyhow::ensure!(
        gateway.exists(),
        "gateway binary not found at {} (build it with `cargo build --release --workspace` or pass --gateway)",
        gateway.display()
    );
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut streams = Streams {
        nonce,
        next: 0,
        duplicates: args.duplicates,
    };
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n\
             [sources.ledger]\nprovider = \"ledger\"\npath = \"/webhooks/ledger\"\n\
             secrets = [\"env:LOADGEN_LEDGER_SECRET\"]\nsignature = \"ledger\"\ntolerance = \"5m\"\n",
            dir.path().join("gateway.db").display()
        ),
    )?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "ingest benchmark: {cores} cores, {} per phase, {} connections (closed loop), {} (open loop), {:.0}% duplicates",
        humantime::format_duration(args.duration),
        args.connections,
        args.open_connections,
        args.duplicates * 100.0
    );

    let mut bare_cmd = Command::new(&exe);
    bare_cmd.args(["bare-server", "--listen", "127.0.0.1:0"]);
    let mut gw_cmd = Command::new(&gateway);
    gw_cmd
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("LOADGEN_LEDGER_SECRET", SECRET)
        .env("RUST_LOG", "warn");

    let mut phases = Vec::new();
    let mut targets = vec![("bare", bare_cmd), ("gateway", gw_cmd)];
    if args.gateway_only {
        targets.remove(0);
    }
    for (target, cmd) in targets {
        let server = Server::start(cmd)?;
        eprintln!("{target}: listening on {}", server.addr);
        let _ = closed_loop(server.addr, &args, args.warmup, &mut streams).await?;
        let max = closed_loop(server.addr, &args, args.duration, &mut streams).await?;
        let rate = max.acked_per_sec() * args.open_fraction;
        phases.push(Phase::new(target, "max", None, max));
        let open = open_loop(server.addr, &args, rate, &mut streams).await?;
        phases.push(Phase::new(target, "open", Some(rate), open));
        drop(server);
    }
    crate::report::print(&phases, args.open_fraction);
    Ok(())
}

async fn closed_loop(
    addr: SocketAddr,
    args: &IngestArgs,
    duration: Duration,
    streams: &mut Streams,
) -> anyhow::Result<Stats> {
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let mut source = streams.take();
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr).await?;
            let mut stats = Stats::default();
            while Instant::now() < until {
                let d = source.next();
                let sent = Instant::now();
                match conn.send(&d).await {
                    Ok(answer) => stats.record(answer, sent.elapsed()),
                    Err(_) => {
                        stats.errors += 1;
                        conn = Connection::open(addr).await?;
                    }
                }
            }
            anyhow::Ok(stats)
        }));
    }
    let mut total = Stats::default();
    for t in tasks {
        total.merge(t.await??);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Open loop: request k is due at `start + k / rate`, and connection i sends requests
/// i, i + C, i + 2C, ... (as wrk2 does). A connection still waiting for an earlier answer sends
/// late, and that delay counts: latency is measured from the intended send time.
async fn open_loop(
    addr: SocketAddr,
    args: &IngestArgs,
    rate: f64,
    streams: &mut Streams,
) -> anyhow::Result<Stats> {
    let conns = args.open_connections.max(1);
    let total = (rate * args.duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push((Connection::open(addr).await?, streams.take()));
    }
    let started = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for (i, (mut conn, mut source)) in opened.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut k = i as u64;
            while k < total {
                let intended = started + interval.mul_f64(k as f64);
                tokio::time::sleep_until(intended).await;
                let d = source.next();
                match conn.send(&d).await {
                    Ok(answer) => stats.record(answer, intended.elapsed()),
                    Err(_) => {
                        stats.errors += 1;
                        conn = Connection::open(addr).await?;
                    }
                }
                k += conns as u64;
            }
            anyhow::Ok(stats)
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        stats.merge(t.await??);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

impl Stats {
    fn record(&mut self, answer: Answer, latency: Duration) {
        match answer {
            Answer::Accepted => self.accepted += 1,
            Answer::Duplicate => self.duplicate += 1,
            Answer::Status(_) => self.non_200 += 1,
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.latency.record(us.min(self.latency.high()));
    }
}
