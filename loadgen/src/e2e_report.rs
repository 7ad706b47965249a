//! The report of `loadgen e2e` on stdout: the header, per gateway run a table of its phases
//! (rates, losses, duplicates, CPU; with PostgreSQL also the database's CPU and its own account
//! of each phase), the latency table, the verdicts against the targets, and the checks that make
//! the figures trustworthy (the sink's counts, the backlog at rest, clean shutdown, the
//! gateway's WARN/ERROR lines). It measures nothing itself.

use crate::cli::E2eArgs;
use crate::cpu::Usage;
use crate::open_loop::Dispatch;
use crate::report::{cores, print_machine, verdict};
use crate::sink::Sink;
use crate::stats::Stats;
use hdrhistogram::Histogram;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// The targets a store is held to: sustained end-to-end rate with nothing lost, and p99
/// POST-to-sink latency at half of that rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    rate: f64,
    p99_ms: f64,
}

/// The SQLite gateway's (issue 14).
pub(crate) const SQLITE_TARGETS: Targets = Targets {
    rate: 20_000.0,
    p99_ms: 50.0,
};
/// One gateway on PostgreSQL (issue 21 sets the rate; the latency target stays SQLite's).
pub(crate) const PG_TARGETS: Targets = Targets {
    rate: 10_000.0,
    p99_ms: 50.0,
};

/// Lines of the gateway's log quoted in the report when it warned or failed.
const LOG_QUOTE: usize = 8;

/// One measured phase.
#[derive(Debug)]
pub(crate) struct Phase {
    pub(crate) name: String,
    /// The client's view: answers, ack latency, accepted ids with send times.
    pub(crate) stats: Stats,
    pub(crate) dispatch: Option<Dispatch>,
    /// Sink requests (any id, repeats included) during the send window.
    pub(crate) sink_requests: u64,
    /// Acked events that reached the sink, and the last of their first arrivals (from the
    /// phase's start).
    pub(crate) delivered: u64,
    pub(crate) last_arrival: Option<Duration>,
    /// From the end of sending until every acked event had arrived (or the timeout).
    pub(crate) drain: Duration,
    pub(crate) lost: u64,
    /// Extra deliveries of this phase's acked events, counted after the drain.
    pub(crate) duplicates: u64,
    /// POST-to-sink latency of each acked event that arrived, in microseconds.
    pub(crate) e2e: Histogram<u64>,
    /// CPU over window plus drain (over the send window alone: `stats.usage`).
    pub(crate) usage_with_drain: Usage,
    /// PostgreSQL's own account of the phase (gateways on PostgreSQL only).
    pub(crate) notes: Vec<String>,
}

impl Phase {
    pub(crate) fn acked(&self) -> u64 {
        self.stats.accepted
    }

    /// 200 answers per second of the send window.
    pub(crate) fn acked_per_sec(&self) -> f64 {
        self.stats.acked_per_sec()
    }

    pub(crate) fn sink_per_sec(&self) -> f64 {
        self.sink_requests as f64 / self.stats.elapsed.as_secs_f64().max(1e-9)
    }

    /// Acked events delivered per second, from the first send to the last first arrival.
    pub(crate) fn end_to_end_per_sec(&self) -> f64 {
        match self.last_arrival {
            Some(t) => self.delivered as f64 / t.as_secs_f64().max(1e-9),
            None => 0.0,
        }
    }

    pub(crate) fn e2e_ms(&self, quantile: f64) -> f64 {
        self.e2e.value_at_quantile(quantile) as f64 / 1000.0
    }
}

pub(crate) fn print_header(args: &E2eArgs, plugin: &Path, body_len: usize) {
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

pub(crate) fn print_results(args: &E2eArgs, phases: &[&Phase], open_rate: f64, targets: &Targets) {
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

pub(crate) fn print_checks(
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
