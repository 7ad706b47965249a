//! The report on stdout: the machine and parameters, one table row per target and phase, and the
//! verdicts against the targets (gateway >= 50% of the bare server's rate; gateway p99 < 5 ms at
//! half its maximum rate), plus the checks that make the numbers trustworthy (duplicates
//! recognised, no failures, clean shutdown). With `--store postgres` the table has the
//! database's CPU and the CPU per event too, and the verdicts are the PostgreSQL targets of
//! issue 21 (one replica >= 20,000/s, two at least as many, p99 <= 20 ms at 10,000/s), from the
//! medians of alternating rounds (`replica_rounds.rs`) when they ran, from the targets' own
//! phases otherwise.

use crate::cli::{IngestArgs, Target};
use crate::cpu::EventCpu;
use crate::open_loop::Dispatch;
use crate::replica_rounds::{self, ReplicaRound, RoundPhases, median};
use crate::stats::Stats;
use std::process::ExitStatus;
use std::time::Duration;

const RATIO_TARGET: f64 = 0.5;
const P99_TARGET_MS: f64 = 5.0;
/// Issue 21: one gateway on PostgreSQL, acked events/s at its maximum rate.
const PG_RATE_TARGET: f64 = 20_000.0;
/// Issue 21: p99 ack latency at the fixed open-loop rate (10,000/s by default).
const PG_P99_TARGET_MS: f64 = 20.0;

/// Everything measured against one target.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) target: Target,
    /// The maximum-rate phases, one per connection count, in the order run.
    pub(crate) max: Vec<MaxPhase>,
    pub(crate) open_rate: f64,
    pub(crate) open: Option<(Stats, Dispatch)>,
    /// The open loop at `--fixed-rate` (`--store postgres` only).
    pub(crate) fixed: Option<(Stats, Dispatch)>,
    /// How each server process (each replica) stopped.
    pub(crate) stopped: Vec<Result<(ExitStatus, Duration), String>>,
    pub(crate) log_tail: String,
    /// What the servers themselves saw of each phase (metrics, PostgreSQL's statistics).
    pub(crate) notes: Vec<String>,
}

/// One closed-loop phase at a connection count.
#[derive(Debug)]
pub(crate) struct MaxPhase {
    pub(crate) connections: u16,
    pub(crate) stats: Stats,
}

/// The phase with the most 200s per second: the target's maximum rate.
pub(crate) fn best_of(phases: &[MaxPhase]) -> Option<&MaxPhase> {
    phases
        .iter()
        .max_by(|a, b| a.stats.acked_per_sec().total_cmp(&b.stats.acked_per_sec()))
}

#[derive(Debug)]
pub(crate) struct Run {
    args: IngestArgs,
    body_len: usize,
    /// The PostgreSQL server's settings (`--store postgres`).
    database: Option<String>,
    pub(crate) outcomes: Vec<Outcome>,
    /// pg-1 and pg-2 taking turns after their own phases (`--replica-rounds`).
    pub(crate) replica_rounds: Vec<ReplicaRound>,
}

impl Run {
    pub(crate) fn new(args: &IngestArgs, body_len: usize, database: Option<String>) -> Self {
        Self {
            args: args.clone(),
            body_len,
            database,
            outcomes: Vec::new(),
            replica_rounds: Vec::new(),
        }
    }

    /// Whether `target`'s own phases ran.
    pub(crate) fn measured(&self, target: Target) -> bool {
        self.find(target).is_some()
    }

    pub(crate) fn print_header(&self) {
        let a = &self.args;
        println!("ingest benchmark");
        print_machine();
        println!(
            "generator:  {} thread(s); open-loop schedule kept by its own thread",
            a.generator_threads
        );
        println!(
            "parameters: {:?} per phase after a {:?} warm-up; max rate: the best of {:?} \
             connections, {} in the open loop at {:.0}% of each target's max rate; {:.0}% exact \
             duplicates; {}-byte bodies",
            a.duration,
            a.warmup,
            a.connections,
            a.open_connections,
            a.open_fraction * 100.0,
            a.duplicates * 100.0,
            self.body_len
        );
        if let Some(settings) = &self.database {
            print_postgres_header(settings, a);
        }
    }

    pub(crate) fn print_results(&self) {
        if self.database.is_some() {
            self.print_postgres_results();
            return;
        }
        println!();
        println!(
            "{:<8} {:<12} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>7} {:>7}",
            "target",
            "phase",
            "200s/s",
            "accepted",
            "dup",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "non-200",
            "errors",
            "gen cpu",
            "srv cpu"
        );
        for o in &self.outcomes {
            let best = best_of(&o.max).map(|m| m.connections);
            for m in &o.max {
                let mark = if Some(m.connections) == best { "*" } else { "" };
                row(o.target, &format!("max@{}{mark}", m.connections), &m.stats);
            }
        }
        for o in &self.outcomes {
            if let Some((open, _)) = &o.open {
                row(o.target, &format!("open@{}", si(o.open_rate)), open);
            }
        }
        println!(
            "(max@N: closed loop over N connections, * the best = the target's max rate; 200s/s: \
             answers 200 per second; accepted/dup: 200 without/with \"duplicate\":true; latency \
             from the actual send (max) or the intended send time (open); cpu: cores used)"
        );
        println!();
        self.print_verdicts();
        self.print_checks();
    }

    fn find(&self, target: Target) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.target == target)
    }

    fn print_verdicts(&self) {
        let (bare, gateway) = (self.find(Target::Bare), self.find(Target::Gateway));
        let best = |o: &Outcome| best_of(&o.max).map(|m| (m.stats.acked_per_sec(), m.connections));
        if let (Some((b_rate, b_at)), Some((g_rate, g_at))) =
            (bare.and_then(best), gateway.and_then(best))
        {
            let ratio = g_rate / b_rate.max(1e-9);
            println!(
                "ratio gateway/bare at max rate: {ratio:.2} ({g_rate:.0} over {g_at} connections \
                 vs {b_rate:.0} over {b_at} 200s/s; target >= {RATIO_TARGET:.2}): {}",
                verdict(ratio >= RATIO_TARGET)
            );
        }
        if let Some(g) = gateway {
            match &g.open {
                Some((open, _)) => {
                    let p99 = open.ms(0.99);
                    println!(
                        "gateway p99 ack latency at {:.0}% of its max rate ({:.0}/s): {p99:.2} ms \
                         (target < {P99_TARGET_MS} ms): {}",
                        self.args.open_fraction * 100.0,
                        g.open_rate,
                        verdict(p99 < P99_TARGET_MS)
                    );
                }
                None => println!("gateway p99 at half max rate: not measured (no 200 answers)"),
            }
        }
    }

    fn print_checks(&self) {
        for o in &self.outcomes {
            let name = o.target.name();
            let phases = o
                .max
                .iter()
                .map(|m| (format!("max@{}", m.connections), &m.stats))
                .chain(o.open.as_ref().map(|(s, _)| ("open".to_owned(), s)))
                .chain(o.fixed.as_ref().map(|(s, _)| ("fixed".to_owned(), s)));
            for (phase, s) in phases {
                if o.target != Target::Bare && s.duplicate != s.repeats_sent {
                    println!(
                        "check: {name} {phase}: {} exact repeats sent, {} answered \"duplicate\":true",
                        s.repeats_sent, s.duplicate
                    );
                }
                if let Some(sample) = &s.sample_non_200 {
                    println!("check: {name} {phase}: first non-200 answer: {sample}");
                }
                if let Some(sample) = &s.sample_error {
                    println!("check: {name} {phase}: first error: {sample}");
                }
            }
            if o.target != Target::Bare {
                let (sent, dup) = phases_sum(o);
                println!(
                    "{name} duplicates: {sent} sent as exact repeats, {dup} answered \"duplicate\":true"
                );
            }
            if let Some((_, d)) = &o.open {
                self.print_schedule(name, "open-loop", o.open_rate, d);
            }
            if let Some((_, d)) = &o.fixed {
                self.print_schedule(name, "fixed-rate", self.args.fixed_rate, d);
            }
            for stopped in &o.stopped {
                match stopped {
                    Ok((status, took)) => {
                        println!("{name} stopped by SIGTERM in {took:.2?} ({status})");
                        if !status.success() && !o.log_tail.is_empty() {
                            println!("{}", o.log_tail);
                        }
                    }
                    Err(e) => println!("{name} did not stop cleanly: {e}"),
                }
            }
        }
    }

    fn print_schedule(&self, name: &str, which: &str, rate: f64, d: &Dispatch) {
        println!(
            "{name} {which} schedule: {} of {} requests sent; hand-over lag p50 {:.3} ms, \
             p99 {:.3} ms (counted in latency); {} found every connection busy",
            d.scheduled,
            (rate * self.args.duration.as_secs_f64()).round(),
            d.lag.value_at_quantile(0.5) as f64 / 1000.0,
            d.lag.value_at_quantile(0.99) as f64 / 1000.0,
            d.waited
        );
    }

    /// `--store postgres`: one table for all four targets with the database's CPU and the CPU
    /// per event, the servers' own view of each phase, then the verdicts and ratios.
    fn print_postgres_results(&self) {
        println!();
        println!(
            "{:<8} {:<12} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7}",
            "target",
            "phase",
            "200s/s",
            "accepted",
            "dup",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "non-200",
            "errors",
            "gen cpu",
            "srv cpu",
            "db cpu",
            "us/ev"
        );
        for o in &self.outcomes {
            let best = best_of(&o.max).map(|m| m.connections);
            for m in &o.max {
                let mark = if Some(m.connections) == best { "*" } else { "" };
                pg_row(o.target, &format!("max@{}{mark}", m.connections), &m.stats);
            }
            if let Some((open, _)) = &o.open {
                pg_row(o.target, &format!("open@{}", si(o.open_rate)), open);
            }
            if let Some((fixed, _)) = &o.fixed {
                pg_row(
                    o.target,
                    &format!("fixed@{}", si(self.args.fixed_rate)),
                    fixed,
                );
            }
        }
        println!(
            "(gateway: on SQLite; pg-1: one gateway on PostgreSQL; pg-2: two gateways on one \
             database, connection i to replica i mod 2. max@N: closed loop over N connections, \
             * the best = the target's max rate; open: open loop at {:.0}% of that; fixed: open \
             loop at the same rate for every target; latency from the actual send (max) or the \
             intended send time (open, fixed); cpu: cores used, srv summed over replicas, db: \
             the PostgreSQL server (postmaster and children); us/ev: (srv + db) CPU microseconds \
             per 200 answer)",
            self.args.open_fraction * 100.0
        );
        println!();
        println!("as the servers saw each phase:");
        for o in &self.outcomes {
            for note in &o.notes {
                println!("  {note}");
            }
        }
        println!();
        self.print_verdicts();
        self.print_postgres_verdicts();
        self.print_checks();
    }

    fn print_postgres_verdicts(&self) {
        let best = |t: Target| {
            self.find(t)
                .and_then(|o| best_of(&o.max))
                .map(|m| (m.stats.acked_per_sec(), m.connections))
        };
        let (bare, sqlite) = (best(Target::Bare), best(Target::Gateway));
        let (one, two) = (best(Target::PgOne), best(Target::PgTwo));
        // With rounds, the targets' own phases are printed for the record and the verdicts
        // are the rounds' medians (`print_replica_rounds`).
        let rounds = !self.replica_rounds.is_empty();
        let judged = |ok: bool| {
            if rounds {
                "see the rounds"
            } else {
                verdict(ok)
            }
        };
        if let Some((rate, at)) = one {
            println!(
                "pg-1 max rate{}: {rate:.0} 200s/s over {at} connections (target >= \
                 {PG_RATE_TARGET:.0}): {}",
                if rounds { " in its own phases" } else { "" },
                judged(rate >= PG_RATE_TARGET)
            );
        }
        if let (Some((two, at)), Some((one, _))) = (two, one) {
            println!(
                "pg-2 max rate{}: {two:.0} 200s/s over {at} connections, {:.2} x pg-1 (target: \
                 at least as many as one replica): {}",
                if rounds { " in its own phases" } else { "" },
                two / one.max(1e-9),
                judged(two >= one)
            );
        }
        for target in [Target::PgOne, Target::PgTwo] {
            if let Some((fixed, _)) = self.find(target).and_then(|o| o.fixed.as_ref()) {
                let p99 = fixed.ms(0.99);
                let answered = fixed.accepted + fixed.duplicate;
                println!(
                    "{} p99 ack latency at {:.0}/s{}: {p99:.2} ms, {answered} answered 200, {} \
                     not (target <= {PG_P99_TARGET_MS} ms): {}",
                    target.name(),
                    self.args.fixed_rate,
                    if rounds { " in its own phase" } else { "" },
                    fixed.non_200 + fixed.errors,
                    judged(p99 <= PG_P99_TARGET_MS && fixed.non_200 + fixed.errors == 0)
                );
            }
        }
        self.print_replica_rounds();
        let ratio = |name: &str, a: Option<(f64, u16)>, b: Option<(f64, u16)>| {
            if let (Some((a, _)), Some((b, _))) = (a, b) {
                println!("ratio {name} at max rate: {:.2}", a / b.max(1e-9));
            }
        };
        ratio("pg-1/gateway (PostgreSQL/SQLite)", one, sqlite);
        ratio("pg-2/pg-1", two, one);
        ratio("pg-1/bare", one, bare);
        ratio("pg-2/bare", two, bare);
        for o in &self.outcomes {
            // A PostgreSQL target's figure says what its gateways and the database each used.
            let show = |usage: &crate::cpu::Usage, per_sec: f64| match usage.per_event(per_sec) {
                Some(cpu) if o.target.on_postgres() => cpu.to_string(),
                Some(cpu) => format!("{:.0} us/event", cpu.total()),
                None => "-".to_owned(),
            };
            let max = best_of(&o.max).map_or_else(
                || "-".to_owned(),
                |m| show(&m.stats.usage, m.stats.acked_per_sec()),
            );
            let fixed = o.fixed.as_ref().map_or_else(
                || "-".to_owned(),
                |(s, _)| show(&s.usage, s.acked_per_sec()),
            );
            println!(
                "{} CPU per event: {max} at its max rate, {fixed} at {}/s{}",
                o.target.name(),
                si(self.args.fixed_rate),
                if o.target.on_postgres() {
                    ""
                } else {
                    " (the server)"
                }
            );
        }
    }
}

/// The `postgres:` header lines: what the server runs with, and what each target is.
fn print_postgres_header(settings: &str, a: &IngestArgs) {
    println!("postgres:   throwaway-pg cluster, unix socket, as read back: {settings}");
    println!(
        "            (set on top of throwaway-pg's defaults: {})",
        crate::database::settings_text()
    );
    println!(
        "targets:    bare; gateway (SQLite); pg-1 (one gateway, [store] url, {}, a fresh \
         database); pg-2 (two gateways on one fresh database, {}, connections alternating \
         between them); all share the machine's cores with PostgreSQL and the generator; each \
         also an open loop at a fixed {:.0}/s over {} connections",
        a.postgres.describe_store(),
        a.postgres
            .replica_threads(Target::PgTwo.replicas())
            .map_or_else(
                || "each with the gateway's default runtime threads".to_owned(),
                |n| format!("each with {n} runtime thread(s): the cores split between them")
            ),
        a.fixed_rate,
        a.fixed_connections
    );
    if a.replica_rounds > 0 {
        println!(
            "            then {} alternating rounds of pg-1 and pg-2, each on a fresh database, \
             at the maximum rate over {} connections and at {:.0}/s, for the PostgreSQL verdicts",
            a.replica_rounds,
            replica_rounds::connections(a),
            a.fixed_rate
        );
    }
}

fn pg_row(target: Target, phase: &str, s: &Stats) {
    println!(
        "{:<8} {:<12} {:>9.0} {:>9} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7}",
        target.name(),
        phase,
        s.acked_per_sec(),
        s.accepted,
        s.duplicate,
        s.ms(0.5),
        s.ms(0.99),
        s.ms(0.999),
        s.max_ms(),
        s.non_200,
        s.errors,
        cores(s.usage.generator),
        cores(s.usage.server),
        cores(s.usage.database),
        s.usage
            .us_per_event(s.acked_per_sec())
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"))
    );
}

fn phases_sum(o: &Outcome) -> (u64, u64) {
    let open = o.open.as_ref().map(|(s, _)| s);
    let fixed = o.fixed.as_ref().map(|(s, _)| s);
    let phases = || o.max.iter().map(|m| &m.stats).chain(open).chain(fixed);
    let sent = phases().map(|s| s.repeats_sent).sum();
    let dup = phases().map(|s| s.duplicate).sum();
    (sent, dup)
}

fn row(target: Target, phase: &str, s: &Stats) {
    println!(
        "{:<8} {:<12} {:>9.0} {:>9} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>6} {:>7} {:>7}",
        target.name(),
        phase,
        s.acked_per_sec(),
        s.accepted,
        s.duplicate,
        s.ms(0.5),
        s.ms(0.99),
        s.ms(0.999),
        s.max_ms(),
        s.non_200,
        s.errors,
        cores(s.usage.generator),
        cores(s.usage.server)
    );
}

/// The `machine:` header line, with a warning when the machine was busy before the run.
pub(crate) fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1: f64 = load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    println!(
        "machine:    {cores} cores, {}; 1-min load average {load1:.2} at start",
        cpu_model()
    );
    if load1 > 0.5 {
        println!(
            "            (something kept the CPU busy in the last minute: expect noisy numbers, \
             and rerun on a quiet machine)"
        );
    }
}

pub(crate) fn cores(used: Option<f64>) -> String {
    used.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"))
}

impl Run {
    /// Each alternating round of pg-1 and pg-2, then the verdicts on their medians.
    fn print_replica_rounds(&self) {
        let rounds = &self.replica_rounds;
        if rounds.is_empty() {
            return;
        }
        let fixed_rate = si(self.args.fixed_rate);
        let phases = |r: &RoundPhases| {
            let us = |cpu: Option<EventCpu>| cpu.map_or(String::new(), |cpu| format!(", {cpu}"));
            format!(
                "{:.0}/s{}; at {fixed_rate}/s p99 {:.2} ms (generator {:.2} ms late){}{}",
                r.acked_per_sec,
                us(r.cpu),
                r.fixed.p99_ms,
                r.fixed.lag_p99_ms,
                us(r.fixed.cpu),
                match r.fixed.failed {
                    0 => String::new(),
                    n => format!(", {n} not answered 200"),
                }
            )
        };
        println!(
            "replica rounds: pg-1 and pg-2 taking turns, each on a fresh database: {} \
             connections at the maximum rate, then {fixed_rate}/s over {}",
            replica_rounds::connections(&self.args),
            self.args.fixed_connections
        );
        for (i, r) in rounds.iter().enumerate() {
            println!(
                "replica round {} ({} first): pg-1 {} | pg-2 {} | pg-2/pg-1 {:.3}",
                i + 1,
                r.first.name(),
                phases(&r.one),
                phases(&r.two),
                r.ratio()
            );
        }
        let n = rounds.len();
        if let Some(rate) = median(rounds, |r| r.one.acked_per_sec) {
            println!(
                "pg-1 max rate, median of {n} alternating rounds: {rate:.0} 200s/s (target >= \
                 {PG_RATE_TARGET:.0}): {}",
                verdict(rate >= PG_RATE_TARGET)
            );
        }
        if let Some(ratio) = median(rounds, ReplicaRound::ratio) {
            println!(
                "pg-2/pg-1 at max rate, median of {n} alternating rounds: {ratio:.3} (target: at \
                 least as many as one replica): {}",
                verdict(ratio >= 1.0)
            );
        }
        for target in [Target::PgOne, Target::PgTwo] {
            let failed: u64 = rounds.iter().map(|r| r.of(target).fixed.failed).sum();
            if let Some(p99) = median(rounds, |r| r.of(target).fixed.p99_ms) {
                println!(
                    "{} p99 ack latency at {fixed_rate}/s, median of {n} alternating rounds: \
                     {p99:.2} ms, {failed} requests not answered 200 (target <= \
                     {PG_P99_TARGET_MS} ms, all answered 200): {}",
                    target.name(),
                    verdict(p99 <= PG_P99_TARGET_MS && failed == 0)
                );
            }
        }
    }
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// 47562.3 -> "47.6k"; small rates stay exact.
pub(crate) fn si(rate: f64) -> String {
    if rate >= 10_000.0 {
        format!("{:.1}k", rate / 1000.0)
    } else {
        format!("{rate:.0}")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
