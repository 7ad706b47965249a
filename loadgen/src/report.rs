//! Counting answers and latencies, and printing the comparison table.

use hdrhistogram::Histogram;
use std::time::Duration;

/// What one phase against one target measured.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) accepted: u64,
    pub(crate) duplicate: u64,
    pub(crate) non_200: u64,
    pub(crate) errors: u64,
    /// Ack latency in microseconds.
    pub(crate) latency: Histogram<u64>,
    pub(crate) elapsed: Duration,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            accepted: 0,
            duplicate: 0,
            non_200: 0,
            errors: 0,
            // 1 us .. 60 s at 3 significant digits; these bounds are valid by construction.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
            elapsed: Duration::ZERO,
        }
    }
}

impl Stats {
    pub(crate) fn merge(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.duplicate += other.duplicate;
        self.non_200 += other.non_200;
        self.errors += other.errors;
        let _ = self.latency.add(&other.latency);
    }

    /// Answered 200 (accepted or duplicate) per second.
    pub(crate) fn acked_per_sec(&self) -> f64 {
        (self.accepted + self.duplicate) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

#[derive(Debug)]
pub(crate) struct Phase {
    target: &'static str,
    kind: &'static str,
    offered: Option<f64>,
    stats: Stats,
}

impl Phase {
    pub(crate) fn new(
        target: &'static str,
        kind: &'static str,
        offered: Option<f64>,
        stats: Stats,
    ) -> Self {
        Self {
            target,
            kind,
            offered,
            stats,
        }
    }
}

pub(crate) fn print(phases: &[Phase], fraction: f64) {
    println!();
    println!(
        "{:<8} {:<14} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "target",
        "phase",
        "acked/s",
        "accepted",
        "dup",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "non-200",
        "errors"
    );
    for p in phases {
        let s = &p.stats;
        let phase = match p.offered {
            Some(rate) => format!("open@{:.0}/s", rate),
            None => "max (closed)".to_owned(),
        };
        println!(
            "{:<8} {:<14} {:>11.0} {:>9} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>7}",
            p.target,
            phase,
            s.acked_per_sec(),
            s.accepted,
            s.duplicate,
            s.ms(0.5),
            s.ms(0.99),
            s.ms(0.999),
            s.non_200,
            s.errors
        );
    }
    let find = |target: &str, kind: &str| {
        phases
            .iter()
            .find(|p| p.target == target && p.kind == kind)
            .map(|p| &p.stats)
    };
    if let (Some(bare), Some(gw)) = (find("bare", "max"), find("gateway", "max")) {
        let ratio = gw.acked_per_sec() / bare.acked_per_sec().max(1e-9);
        println!();
        println!(
            "ratio gateway/bare at max rate: {ratio:.2} (target >= 0.50): {:.0} vs {:.0} acked/s",
            gw.acked_per_sec(),
            bare.acked_per_sec()
        );
    }
    if let Some(open) = find("gateway", "open") {
        println!(
            "gateway p99 ack latency at {:.0}% of its max rate: {:.3} ms (target < 5 ms)",
            fraction * 100.0,
            open.ms(0.99)
        );
    }
}
