//! The alternating rounds behind the PostgreSQL verdicts. On this 2-core machine a single phase
//! of a target compares the host's minutes as much as the targets: the same build measured
//! pg-2/pg-1 anywhere from 0.75 to 1.14 in one afternoon, and pg-1's maximum 16.3k to 24.1k/s
//! within four minutes (docs/performance.md, "Replica ratios from alternating rounds"). So after
//! every target's own phases, one gateway and two gateways take turns. In each round each of
//! them gets a fresh database (dropped after, so nothing one left behind, such as an
//! autovacuum, falls on the other), a closed loop over the largest `--connections` count (the
//! same for both: a best count picked from one noisy phase each would compare counts too), and
//! then the open loop at `--fixed-rate`. The first of the pair alternates from round to round
//! (an even count puts each first equally often). The verdicts are medians of the rounds: pg-1's
//! maximum rate, the ratio pg-2/pg-1, and each target's p99 at the fixed rate.
//!
//! This module only runs the rounds; the report prints them and the verdicts.

use crate::child::Server;
use crate::cli::{IngestArgs, Target};
use crate::closed_loop;
use crate::cpu::{EventCpu, Meter};
use crate::database::Database;
use crate::ingest::{drain_routing, start_postgres_servers, take};
use crate::open_loop;
use crate::signing::EventStreams;
use std::path::Path;

/// One target's phases in a round: its maximum rate, then the fixed rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundPhases {
    pub(crate) acked_per_sec: f64,
    /// Gateways' and PostgreSQL's CPU per 200 answer.
    pub(crate) cpu: Option<EventCpu>,
    pub(crate) fixed: FixedRate,
}

/// The open loop at `--fixed-rate` in a round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedRate {
    pub(crate) p99_ms: f64,
    /// Requests answered with something other than 200, or not at all.
    pub(crate) failed: u64,
    /// How late the generator itself handed over its p99 request (counted in the latency).
    pub(crate) lag_p99_ms: f64,
    pub(crate) cpu: Option<EventCpu>,
}

/// Both targets' phases in one round, and which of them ran first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaRound {
    pub(crate) first: Target,
    pub(crate) one: RoundPhases,
    pub(crate) two: RoundPhases,
}

impl ReplicaRound {
    /// pg-2's rate over pg-1's.
    pub(crate) fn ratio(&self) -> f64 {
        self.two.acked_per_sec / self.one.acked_per_sec.max(1e-9)
    }

    /// `target`'s phases in this round (pg-1's for anything but pg-2).
    pub(crate) fn of(&self, target: Target) -> &RoundPhases {
        if target == Target::PgTwo {
            &self.two
        } else {
            &self.one
        }
    }
}

/// The median of what `figure` reads from each round (the mean of the middle two for an even
/// count); `None` without rounds.
pub(crate) fn median(
    rounds: &[ReplicaRound],
    figure: impl Fn(&ReplicaRound) -> f64,
) -> Option<f64> {
    let mut figures: Vec<f64> = rounds.iter().map(figure).collect();
    figures.sort_by(f64::total_cmp);
    let n = figures.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(figures[n / 2]),
        _ => Some((figures[n / 2 - 1] + figures[n / 2]) / 2.0),
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
) -> anyhow::Result<RoundPhases> {
    let connections = connections(args);
    let label = format!("{}_round_{round}", target.name().replace('-', "_"));
    let conninfo = setup.database.fresh(&label)?;
    let servers = start_postgres_servers(
        target,
        &args.postgres,
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
    drain_routing(target, &addrs).await;
    let meter = Meter::of(&pids, setup.database.postmaster());
    let sources = take(streams, args.fixed_connections);
    let (mut fixed, dispatch) =
        open_loop::run(&addrs, sources, args.fixed_rate, args.duration, false).await?;
    fixed.usage = meter.usage();
    for server in servers {
        if let Err(e) = server.stop() {
            eprintln!("{}: {e:#}", target.name());
        }
    }
    if let Err(e) = setup.database.discard(&label) {
        eprintln!("{}: {e:#}", target.name());
    }
    let acked_per_sec = stats.acked_per_sec();
    let fixed = FixedRate {
        p99_ms: fixed.ms(0.99),
        failed: fixed.non_200 + fixed.errors,
        lag_p99_ms: dispatch.lag.value_at_quantile(0.99) as f64 / 1000.0,
        cpu: fixed.usage.per_event(fixed.acked_per_sec()),
    };
    eprintln!(
        "replica round {round}, {}: {acked_per_sec:.0}/s over {connections} connections, p99 \
         {:.2} ms at {:.0}/s",
        target.name(),
        fixed.p99_ms,
        args.fixed_rate
    );
    Ok(RoundPhases {
        acked_per_sec,
        cpu: stats.usage.per_event(acked_per_sec),
        fixed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(one: f64, two: f64) -> ReplicaRound {
        let rate = |acked_per_sec| RoundPhases {
            acked_per_sec,
            cpu: None,
            fixed: FixedRate {
                p99_ms: 0.0,
                failed: 0,
                lag_p99_ms: 0.0,
                cpu: None,
            },
        };
        ReplicaRound {
            first: Target::PgOne,
            one: rate(one),
            two: rate(two),
        }
    }

    #[test]
    fn the_verdicts_are_medians_of_the_rounds() {
        assert_eq!(median(&[], ReplicaRound::ratio), None);
        let odd = [round(100.0, 80.0), round(100.0, 120.0), round(100.0, 95.0)];
        assert_eq!(median(&odd, ReplicaRound::ratio), Some(0.95));
        let even = [round(100.0, 80.0), round(90.0, 120.0)];
        assert_eq!(
            median(&even, ReplicaRound::ratio),
            Some((0.8 + 120.0 / 90.0) / 2.0)
        );
        assert_eq!(
            median(&even, |r| r.of(Target::PgOne).acked_per_sec),
            Some(95.0)
        );
        assert_eq!(
            median(&even, |r| r.of(Target::PgTwo).acked_per_sec),
            Some(100.0)
        );
    }
}
