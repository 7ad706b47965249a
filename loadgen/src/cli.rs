//! The command line: `loadgen ingest` (the ingest benchmark), `loadgen e2e` (the end-to-end one:
//! POST -> store -> plugin -> HTTP delivery), `loadgen stall` (the unauthenticated memory
//! attack, peak RSS) and `loadgen bare-server` (the ingest baseline).
//! Every knob of a run lives here, with defaults that make a whole run take about a minute
//! (`--store postgres`: about four).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Ingest benchmark for the webhook gateway")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Benchmark the gateway against a bare hyper server, in one run.
    Ingest(IngestArgs),
    /// Benchmark end to end: signed POST -> store -> one plugin -> HTTP delivery to a sink run
    /// by loadgen itself; rate, losses, duplicates and POST-to-sink latency.
    E2e(E2eArgs),
    /// The unauthenticated memory attack: many connections each send a large body but its
    /// last KiB and stall; prints the gateway's peak RSS and what the connections got.
    Stall(StallArgs),
    /// The baseline: a hyper server that answers every request 200 {"ok":true}.
    BareServer {
        /// Address to listen on; the first stdout line names the bound address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

/// A server the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    Bare,
    /// The gateway on its default store, SQLite.
    Gateway,
    /// One gateway on PostgreSQL (`--store postgres`).
    #[value(name = "pg-1")]
    PgOne,
    /// Two gateways on the same PostgreSQL database, the connections spread over both.
    #[value(name = "pg-2")]
    PgTwo,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Gateway => "gateway",
            Self::PgOne => "pg-1",
            Self::PgTwo => "pg-2",
        }
    }

    /// Gateway processes started for this target (0: the bare server).
    pub(crate) fn replicas(self) -> usize {
        match self {
            Self::Bare => 0,
            Self::Gateway | Self::PgOne => 1,
            Self::PgTwo => 2,
        }
    }

    pub(crate) fn on_postgres(self) -> bool {
        matches!(self, Self::PgOne | Self::PgTwo)
    }
}

/// The gateway's store in a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Store {
    /// The default: one SQLite file (`[store] path`).
    Sqlite,
    /// Also a throwaway PostgreSQL cluster (fsync on) for `[store] url`, measured in the same
    /// run as SQLite (and, for `ingest`, the bare server).
    Postgres,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct IngestArgs {
    /// Length of each measured phase (maximum rate, then open loop), per target.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Closed-loop warm-up before the measured phases of each target.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Keep-alive connection counts for the closed-loop (maximum rate) phases: one phase per
    /// count, and a target's maximum rate is its best. A bare server peaks at few connections;
    /// a server that acks after a group commit needs more requests in flight to fill its
    /// batches (one fsync per batch), so a single count would understate one of them.
    #[arg(
        long,
        default_value = "64,128,256",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub(crate) connections: Vec<u16>,
    /// Connections the open-loop phase dispatches over (a free one takes each due request).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) open_connections: u16,
    /// Share of requests that are exact repeats (same bytes and headers) of a recent event.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub(crate) duplicates: f64,
    /// Request body size in bytes (padded with a `memo` field); 0 keeps the natural ~400 bytes.
    #[arg(long, default_value_t = 0)]
    pub(crate) body_size: usize,
    /// Open-loop rate as a fraction of the maximum rate measured for the same target.
    #[arg(long, default_value_t = 0.5, value_parser = share)]
    pub(crate) open_fraction: f64,
    /// A fixed open-loop rate (requests/s) instead of `--open-fraction`, to compare two
    /// configurations (e.g. `--route-plugin echo` and `--route-plugin spin`) at the same load.
    #[arg(long)]
    pub(crate) open_rate: Option<f64>,
    /// Generator runtime threads (1: a current-thread runtime). Two measured best on 2 cores:
    /// the generator still uses about one core, but one descheduled thread no longer stalls
    /// every connection at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) generator_threads: u16,
    /// The gateway binary (default: `gateway` next to this executable).
    #[arg(long)]
    pub(crate) gateway: Option<PathBuf>,
    /// Measure only these targets (default: bare and gateway; with `--store postgres` also
    /// pg-1 and pg-2; each ratio needs both of its targets).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) only: Vec<Target>,
    /// `postgres`: also one gateway, then two, on a throwaway PostgreSQL cluster, and an
    /// open-loop phase at `--fixed-rate` for every target.
    #[arg(long, value_enum)]
    pub(crate) store: Option<Store>,
    /// With `--store postgres`: the rate (requests/s) of the extra open-loop phase, the same
    /// for every target; the p99 target is set at 10,000/s.
    #[arg(long, default_value_t = 10_000.0)]
    pub(crate) fixed_rate: f64,
    /// Connections the fixed-rate phase dispatches over: as many as the largest closed-loop
    /// count, since a gateway on PostgreSQL needs that many requests in flight to fill its
    /// batches; with fewer, the phase measures the connection count, not the server.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) fixed_connections: u16,
    /// With `--store postgres`, after every target's own phases: rounds in which one gateway
    /// and two take turns (the first of the pair alternating), each on a fresh database, at
    /// its maximum rate over the largest `--connections` count and then at `--fixed-rate`;
    /// the PostgreSQL verdicts are the medians of the rounds (pg-1's maximum rate, pg-2/pg-1,
    /// each target's p99). 0: none, and the verdicts are the targets' own phases.
    #[arg(long, default_value_t = 4)]
    pub(crate) replica_rounds: u16,
    #[command(flatten)]
    pub(crate) postgres: PostgresArgs,
    /// With `--store postgres`: load `pg_stat_statements` and print, after every phase on
    /// PostgreSQL, the statements that took the server's time, per acked event (execution time,
    /// calls, rows, WAL records). Costs the server a few percent: for finding where the time
    /// goes, not for the figures.
    #[arg(long)]
    pub(crate) pg_statements: bool,
    /// Testing the benchmark itself: run a second bare server in the gateway's place.
    #[arg(long, hide = true)]
    pub(crate) bare_as_gateway: bool,
    /// Route every event through a plugin fixture from `plugins/fixtures` to a file
    /// destination while ingesting: `echo` passes every event (a healthy plugin: the baseline),
    /// `spin` loops until its 100 ms deadline, `panic` traps at once; to see what a plugin
    /// failing on every event costs the ack path. Default: no routes.
    #[arg(long, value_enum)]
    pub(crate) route_plugin: Option<RoutePlugin>,
    /// Operator consoles open on the overview (each polls `/admin/overview` every 5 s, as the
    /// page does): after the open-loop phase, that phase is run again `--ab-rounds` times
    /// without and with them, alternating, and the ack latencies of each run are printed.
    #[arg(long, default_value_t = 0)]
    pub(crate) consoles: u16,
    /// Rounds of the consoles' A/B (each one run without and one with).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) ab_rounds: u16,
}

/// The plugin fixture of `--route-plugin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoutePlugin {
    Echo,
    Spin,
    Panic,
}

impl IngestArgs {
    pub(crate) fn postgres(&self) -> bool {
        self.store == Some(Store::Postgres)
    }

    pub(crate) fn targets(&self) -> Vec<Target> {
        let all: &[Target] = if self.postgres() {
            &[Target::Bare, Target::Gateway, Target::PgOne, Target::PgTwo]
        } else {
            &[Target::Bare, Target::Gateway]
        };
        all.iter()
            .copied()
            .filter(|t| self.only.is_empty() || self.only.contains(t))
            .collect()
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct E2eArgs {
    /// Length of the maximum-rate phase and of the open-loop phase (each then drains).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Closed-loop warm-up (drained before the measured phases).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Longest wait, after sending stops, for every acked event to reach the sink; what has
    /// not arrived by then counts as lost.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// Keep-alive connections in the closed-loop (maximum rate) phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) connections: u16,
    /// Connections the open-loop phase dispatches over (a free one takes each due request).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) open_connections: u16,
    /// Open-loop rate as a fraction of the measured end-to-end maximum.
    #[arg(long, default_value_t = 0.5, value_parser = share)]
    pub(crate) open_fraction: f64,
    /// Request body size in bytes (padded with a `memo` field); 0 keeps the natural ~400 bytes.
    #[arg(long, default_value_t = 0)]
    pub(crate) body_size: usize,
    /// Generator runtime threads (1: a current-thread runtime); the sink runs on it too.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) generator_threads: u16,
    /// The gateway binary (default: `gateway` next to this executable).
    #[arg(long)]
    pub(crate) gateway: Option<PathBuf>,
    /// The plugin component every event goes through (default: the `threshold` example, built
    /// by the `plugin-artifacts` crate), configured in warm mode as `threshold = "1"` (flag),
    /// so every benchmark event (amount 5.0) leaves it with the `largedeposit` extension.
    #[arg(long)]
    pub(crate) plugin: Option<PathBuf>,
    /// The gateway's `[workers] concurrency`.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) worker_concurrency: u32,
    /// The gateway's `[workers] plugin_threads`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) plugin_threads: u32,
    /// The sink destination's `concurrency` (attempts in flight to it).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) destination_concurrency: u32,
    /// Keep the temp dir (config, store, the gateway's log) after the run and print its path.
    #[arg(long)]
    pub(crate) keep: bool,
    /// `postgres`: after the SQLite gateway, the same phases on one gateway on a throwaway
    /// PostgreSQL cluster (fsync on).
    #[arg(long, value_enum)]
    pub(crate) store: Option<Store>,
    #[command(flatten)]
    pub(crate) postgres: PostgresArgs,
    /// With `--store postgres`: print the statements that took PostgreSQL's time in each
    /// phase, sending and drain together (as `ingest --pg-statements`).
    #[arg(long)]
    pub(crate) pg_statements: bool,
    /// Ordered delivery: the events of each phase are about this many distinct subjects, and
    /// the same phases run twice in one run, to a sink destination with `ordering = "none"`,
    /// then with `ordering = "subject"` (with `--store postgres`, then both again on one
    /// gateway on PostgreSQL); the sink counts order violations per subject.
    #[arg(long, value_name = "SUBJECTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ordered: Option<u64>,
}

impl E2eArgs {
    pub(crate) fn postgres(&self) -> bool {
        self.store == Some(Store::Postgres)
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct StallArgs {
    /// Connections opened at once, each stalling mid-body.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connections: u32,
    /// The body each declares (`Content-Length`, at most the config's `max_body` of 1 MiB);
    /// all but its last KiB is sent.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub(crate) body_size: usize,
    /// How long the connections are held before the peak is read (the gateway's
    /// `request_timeout` is 30 s, so a gateway that keeps them keeps them this long).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) hold: Duration,
    /// Send no signature header (refused from the headers) instead of a made-up one.
    #[arg(long)]
    pub(crate) unsigned: bool,
    /// `server.max_connections` for the gateway (default: the gateway's own).
    #[arg(long)]
    pub(crate) max_connections: Option<u32>,
    /// `server.max_body_buffer` for the gateway, e.g. `64MiB` (default: the gateway's own).
    #[arg(long)]
    pub(crate) max_body_buffer: Option<String>,
    /// Generator runtime threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) generator_threads: u16,
    /// The gateway binary (default: `gateway` next to this executable).
    #[arg(long)]
    pub(crate) gateway: Option<PathBuf>,
}

/// A number in [0, 1].
fn share(text: &str) -> Result<f64, String> {
    let v: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

/// What `ingest` and `e2e` alike change about their PostgreSQL targets: the server's settings
/// (`--pg-set`), the gateways' `[store]` (`--ack-writers`, `--ack-spacing`) and the runtime
/// threads of replicas sharing the machine (`--replica-threads`).
#[derive(Debug, Clone, Args)]
pub(crate) struct PostgresArgs {
    /// With `--store postgres`: set a PostgreSQL setting on top of the benchmark's own
    /// (repeatable: `--pg-set autovacuum=off`), to find out what it changes; the header reads
    /// it back. The figures of record use the benchmark's settings alone.
    #[arg(long = "pg-set", value_name = "NAME=VALUE", value_parser = crate::database::parse_setting)]
    pub(crate) settings: Vec<(String, String)>,
    /// With `--store postgres`: the gateways' `[store] ack_writers` (the ack commits the
    /// cluster keeps in flight), to tune it for a database; default: the gateway's own (2).
    #[arg(long = "ack-writers", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) ack_writers: Option<u16>,
    /// With `--store postgres`: the gateways' `[store] ack_spacing` (how soon after one of
    /// its ack batches started a writer may start the next; `0s`: at once), to see what it
    /// changes at a moderate rate; default: the gateway's own (2ms).
    #[arg(long = "ack-spacing", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) ack_spacing: Option<std::time::Duration>,
    /// With `--store postgres`: the runtime threads of each gateway of a target with several
    /// replicas on this machine (pg-2). Default: the machine's cores divided among the
    /// replicas, as a CPU limit of that share would give each (the gateway sizes its runtime
    /// from the cores it may use); 0: the gateway's own default, every core for each replica.
    #[arg(long = "replica-threads", value_name = "N")]
    pub(crate) replica_threads: Option<u16>,
}

impl PostgresArgs {
    /// The runtime threads each of `replicas` gateways sharing this machine gets; `None`: the
    /// gateway's own default (a lone gateway always has it).
    pub(crate) fn replica_threads(&self, replicas: usize) -> Option<usize> {
        if replicas < 2 {
            return None;
        }
        match self.replica_threads {
            Some(0) => None,
            Some(n) => Some(usize::from(n)),
            None => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                Some((cores / replicas).max(1))
            }
        }
    }

    /// How the PostgreSQL targets' `[store]` differs from the gateway's defaults, for the
    /// headers.
    pub(crate) fn describe_store(&self) -> String {
        let mut set = Vec::new();
        if let Some(n) = self.ack_writers {
            set.push(format!("ack_writers = {n}"));
        }
        if let Some(spacing) = self.ack_spacing {
            set.push(format!(
                "ack_spacing = \"{}\"",
                humantime::format_duration(spacing)
            ));
        }
        if set.is_empty() {
            "the gateway's default pool, lease and ack writers".to_owned()
        } else {
            format!("the gateway's defaults but {}", set.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PostgresArgs;

    #[test]
    fn replicas_sharing_the_machine_split_its_cores_unless_told_otherwise() {
        let args = |replica_threads| PostgresArgs {
            settings: Vec::new(),
            ack_writers: None,
            ack_spacing: None,
            replica_threads,
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(args(None).replica_threads(1), None);
        assert_eq!(args(Some(3)).replica_threads(1), None);
        assert_eq!(args(None).replica_threads(2), Some((cores / 2).max(1)));
        assert_eq!(args(None).replica_threads(cores * 2), Some(1));
        assert_eq!(args(Some(3)).replica_threads(2), Some(3));
        assert_eq!(args(Some(0)).replica_threads(2), None);
    }
}
