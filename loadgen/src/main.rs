//! `loadgen`: the gateway's benchmarks, run by
//! `cargo build --release --workspace && target/release/loadgen ingest` (or `... e2e`).
//!
//! `loadgen ingest` starts a bare hyper server and the gateway as separate processes and drives
//! each with the same correctly signed, unique Ledger events (a share of them exact duplicates):
//! first at maximum rate (closed loop), then at half of that rate (open loop, latency measured
//! from the intended send time, so queueing is never hidden). It prints events/s and p50/p99/
//! p99.9 ack latency for both, and their ratio. `loadgen bare-server` is the baseline server.
//!
//! With `--store postgres`, `loadgen ingest` also measures one gateway and then two replicas on
//! a throwaway PostgreSQL cluster (fsync on) in the same run, then lets the two take turns in
//! rounds whose medians are the verdicts (`replica_rounds.rs`), and `loadgen e2e` one gateway
//! on it after the SQLite one; see `database.rs`.
//!
//! `loadgen e2e` measures the whole path instead: signed POST -> store -> one plugin -> HTTP
//! delivery to a sink run inside loadgen; see `e2e.rs`. `loadgen stall` replays the
//! unauthenticated memory attack (connections stalling mid-body) and prints the gateway's peak
//! RSS; see `stall.rs`.
//!
//! This file only picks the generator's runtime (`--generator-threads`, default 2; 1 gives a
//! current-thread runtime); the servers under test run in their own processes.

// loadgen only talks to processes it started itself on loopback, whose answers are small.
#![allow(
    clippy::disallowed_methods,
    reason = "whole bodies from our own gateway and sink, never from the network"
)]

mod bare;
mod child;
mod cli;
mod client;
mod closed_loop;
mod consoles;
mod cpu;
mod database;
mod e2e;
mod e2e_report;
mod ingest;
mod open_loop;
mod replica_rounds;
mod report;
mod server_view;
mod signing;
mod sink;
mod stall;
mod stats;

use anyhow::Context as _;
use clap::Parser as _;
use cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BareServer { listen } => bare::serve(&listen),
        Command::Ingest(args) => runtime(args.generator_threads)?.block_on(ingest::run(args)),
        Command::E2e(args) => runtime(args.generator_threads)?.block_on(e2e::run(args)),
        Command::Stall(args) => runtime(args.generator_threads)?.block_on(stall::run(args)),
    }
}

/// The generator's runtime: `threads` workers (1: a current-thread runtime).
fn runtime(threads: u16) -> anyhow::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(threads))
            .enable_all()
            .build()
    }
    .context("cannot start the runtime")
}
