//! The alternating rounds behind the pg-2 verdict. Its target compares two maximum rates, and a
//! single phase of each, a minute apart, compares the host's minutes as much as the targets: on
//! this 2-core machine the same build measured pg-2/pg-1 anywhere from 0.75 to 1.14 in one
//! afternoon (docs/performance.md, "Replica ratios from alternating rounds"). So after every
//! target's own phases, one gateway and two gateways take turns. Each round measures both over
//! the largest `--connections` count (the same for both: a best count picked from one noisy
//! phase each would compare counts too), each on a fresh database dropped after its phase (so
//! nothing one left behind, such as an autovacuum, falls on the other). The first of the pair
//! alternates from round to round (an even count puts each first equally often), and the
//! verdict is the median of the rounds' ratios.
//!
//! This module only runs the rounds; the report prints them and the verdict.

use crate::child::Server;
use crate::cli::{IngestArgs, Target};
use crate::closed_loop;
use crate::cpu::Meter;
use crate::database::Database;
use crate::ingest::{start_postgres_servers, take};
use crate::signing::EventStreams;
use std::path::Path;

/// One target's closed-loop phase in a round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundRate {
    pub(crate) acked_per_sec: f64,
    /// Gateways' and PostgreSQL's CPU microseconds per 200 answer.
    pub(crate) us_per_event: Option<f64>,
}

/// Both targets' phases in one round, and which of them ran first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaRound {
    pub(crate) first: Target,
    pub(crate) one: RoundRate,
    pub(crate) two: RoundRate,
}

impl ReplicaRound {
    /// pg-2's rate over pg-1's.
    pub(crate) fn ratio(&self) -> f64 {
        self.two.acked_per_sec / self.one.acked_per_sec.max(1e-9)
    }
}

/// The median of the rounds' ratios (the mean of the middle two for an even count).
pub(crate) fn median_ratio(rounds: &[ReplicaRound]) -> Option<f64> {
    let mut ratios: Vec<f64> = rounds.iter().map(ReplicaRound::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(ratios[n / 2]),
        _ => Some((ratios[n / 2 - 1] + ratios[n / 2]) / 2.0),
    }
}

/// Where the rounds' gateways come from: the binary, its PostgreSQL config, the cluster, and
/// the directory for their logs.
pub(crate) struct Setup<'a> {
    pub(crate) gateway: &'a Path,
    pub(crate) config: &'a Path,
    pub(crate) database: &'a Database,
    pub(crate) logs: &'a Path,
}

/// The connection count both targets run over in every round: the largest `--connections`.
pub(crate) fn connections(args: &IngestArgs) -> u16 {
    args.connections.iter().max().copied().unwrap_or(256)
}

/// Runs `args.replica_rounds` rounds.
pub(crate) async fn run(
    args: &IngestArgs,
    setup: &Setup<'_>,
    streams: &mut EventStreams,
) -> anyhow::Result<Vec<ReplicaRound>> {
    let mut rounds = Vec::with_capacity(usize::from(args.replica_rounds));
    for round in 1..=args.replica_rounds {
        let (first, second) = if round % 2 == 1 {
            (Target::PgOne, Target::PgTwo)
        } else {
            (Target::PgTwo, Target::PgOne)
        };
        let a = phase(args, setup, streams, first, round).await?;
        let b = phase(args, setup, streams, second, round).await?;
        let (one, two) = if first == Target::PgOne {
            (a, b)
        } else {
            (b, a)
        };
        rounds.push(ReplicaRound { first, one, two });
    }
    Ok(rounds)
}

/// One target on a fresh database: started, warmed up, measured, stopped.
async fn phase(
    args: &IngestArgs,
    setup: &Setup<'_>,
    streams: &mut EventStreams,
    target: Target,
    round: u16,
) -> anyhow::Result<RoundRate> {
    let connections = connections(args);
    let label = format!("{}_round_{round}", target.name().replace('-', "_"));
    let conninfo = setup.database.fresh(&label)?;
    let servers = start_postgres_servers(
        target,
        setup.gateway,
        setup.config,
        &conninfo,
        setup.logs,
        &label,
    )?;
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    closed_loop::run(&addrs, take(streams, connections), args.warmup, false).await?;
    let meter = Meter::of(&pids, setup.database.postmaster());
    let mut stats =
        closed_loop::run(&addrs, take(streams, connections), args.duration, false).await?;
    stats.usage = meter.usage();
    for server in servers {
        if let Err(e) = server.stop() {
            eprintln!("{}: {e:#}", target.name());
        }
    }
    if let Err(e) = setup.database.discard(&label) {
        eprintln!("{}: {e:#}", target.name());
    }
    let acked_per_sec = stats.acked_per_sec();
    eprintln!(
        "replica round {round}, {}: {acked_per_sec:.0}/s over {connections} connections",
        target.name()
    );
    Ok(RoundRate {
        acked_per_sec,
        us_per_event: stats.usage.us_per_event(acked_per_sec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(one: f64, two: f64) -> ReplicaRound {
        let rate = |acked_per_sec| RoundRate {
            acked_per_sec,
            us_per_event: None,
        };
        ReplicaRound {
            first: Target::PgOne,
            one: rate(one),
            two: rate(two),
        }
    }

    #[test]
    fn the_verdict_is_the_median_of_the_rounds_ratios() {
        assert_eq!(median_ratio(&[]), None);
        let odd = [round(100.0, 80.0), round(100.0, 120.0), round(100.0, 95.0)];
        assert_eq!(median_ratio(&odd), Some(0.95));
        let even = [round(100.0, 80.0), round(100.0, 120.0)];
        assert_eq!(median_ratio(&even), Some(1.0));
    }
}
