//! `loadgen`: the gateway's ingest benchmark.
//!
//! `loadgen ingest` starts a bare hyper server and the gateway as separate processes and drives
//! each with the same signed, unique Ledger events (a share of them exact duplicates): first at
//! maximum rate (closed loop), then at half of that rate (open loop, latency measured from the
//! intended send time, so queueing is never hidden). It prints events/s and ack latency
//! percentiles for both and their ratio. `loadgen bare-server` is the baseline server itself.

mod bare;
mod child;
mod client;
mod phases;
mod report;
mod signer;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Ingest benchmark for the webhook gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark the gateway against a bare hyper server, in one run.
    Ingest(IngestArgs),
    /// The baseline: a hyper server that answers every request 200 {"ok":true}.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[derive(Debug, Clone, Args)]
pub(crate) struct IngestArgs {
    /// Length of each measured phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before the measured phases of each target.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Keep-alive connections in the closed-loop (maximum rate) phase.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections available to the open-loop phase (enough that one is free when a send is due).
    #[arg(long, default_value_t = 64)]
    open_connections: usize,
    /// Share of requests that are exact duplicates of an earlier request.
    #[arg(long, default_value_t = 0.1)]
    duplicates: f64,
    /// The gateway binary (default: `gateway` next to this executable).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Measure only the gateway (for quick iterations; the ratio needs both).
    #[arg(long)]
    gateway_only: bool,
    /// Fraction of the measured maximum rate used for the open-loop phase.
    #[arg(long, default_value_t = 0.5)]
    open_fraction: f64,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BareServer { listen } => bare::serve(&listen),
        Command::Ingest(args) => {
            // The generator runs on one thread so the servers keep the other core(s).
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            rt.block_on(phases::ingest(args))
        }
    }
}
