//! The `gateway` binary: parse the command line and hand over to [`cli`].

mod cli;
mod plugin_cli;
mod send;
mod store_cli;

// The request path allocates many small strings; mimalloc keeps that off the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::Cli::parse().execute() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
