//! The store's one-shot commands: `gateway migrate`, the store line of `gateway check`, and
//! `gateway store copy`. Each connects, does its one thing and says what it found in one or a
//! few lines; none serves. Connection strings are never printed: only hosts and database.
//!
//! Exit codes shared by them: 0 done, 1 refused (a schema newer than this gateway, a target
//! that is not empty, a store it cannot read), 2 the database cannot be reached.

use crate::cli::print_line;
use clap::{Args, Subcommand};
use gateway::config::{PostgresSettings, SecretRef, StoreBackend};
use gateway::metrics::Metrics;
use gateway::store::{CopyError, PgStore, SchemaStatus, SqliteStore, StoreError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Refused: the operator must change something first.
const REFUSED: u8 = 1;
/// The database did not answer.
const UNREACHABLE: u8 = 2;

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy a SQLite store into an empty PostgreSQL database (stop the gateway first): events,
    /// dedup keys still in the window, routing state, dead letters and quarantine, in one
    /// transaction. Exit 1 if the database is not empty, 2 if it cannot be reached.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The SQLite store to copy (the stopped gateway's `store.path`).
    #[arg(long)]
    from: PathBuf,
    /// The PostgreSQL database: `env:NAME` or `file:PATH` holding the connection string
    /// (preferred: a password on the command line shows in `ps` and the shell history), or
    /// the connection string itself (URL or `key=value`).
    #[arg(long)]
    to: String,
    /// Dedup keys of events received within this before now are copied (use the config's
    /// `store.dedup_window` if it differs; older keys would be pruned at once anyway).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    dedup_window: Duration,
    /// Give up connecting after this.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Hosts and database of a connection string, for messages (never the password).
fn target(conninfo: &str) -> String {
    gateway::store::target_of(conninfo).unwrap_or_else(|| "postgres (connection string)".into())
}

/// `gateway migrate`: brings the store's schema to this gateway's version.
pub(crate) fn migrate(backend: &StoreBackend) -> anyhow::Result<ExitCode> {
    match backend {
        StoreBackend::Sqlite { path } => migrate_sqlite(path),
        StoreBackend::Postgres(pg) => {
            let place = target(pg.conninfo());
            let result =
                runtime()?.block_on(PgStore::migrate_only(pg.conninfo(), pg.connect_timeout));
            match result {
                Ok(applied) if applied.is_empty() => {
                    print_line(format_args!(
                        "store: {place}: schema version {} is current, nothing to apply",
                        gateway::store::latest_schema_version()
                    ))?;
                    Ok(ExitCode::SUCCESS)
                }
                Ok(applied) => {
                    let versions: Vec<String> = applied.iter().map(ToString::to_string).collect();
                    print_line(format_args!(
                        "store: {place}: applied schema version(s) {}; now at {} (current)",
                        versions.join(", "),
                        gateway::store::latest_schema_version()
                    ))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(failed(&e)),
            }
        }
    }
}

/// SQLite applies its schema at every open: opening the file once is the migration.
fn migrate_sqlite(path: &Path) -> anyhow::Result<ExitCode> {
    let metrics = Metrics::new()?;
    match SqliteStore::open(path, Duration::from_secs(1), metrics) {
        Ok((store, writer)) => {
            drop(store);
            writer.join();
            print_line(format_args!(
                "store: sqlite {}: schema applied (a SQLite store is brought to this version \
                 at every open, so starting the gateway does the same)",
                path.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(REFUSED))
        }
    }
}

/// A failed store command: its message and exit code.
fn failed(e: &StoreError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        StoreError::Open { .. } => ExitCode::from(UNREACHABLE),
        _ => ExitCode::from(REFUSED),
    }
}

/// The store line of `gateway check` for a PostgreSQL store; `false` when the check fails
/// (unreachable, or a schema newer than this gateway).
pub(crate) fn check_postgres(pg: &PostgresSettings) -> bool {
    let place = target(pg.conninfo());
    let status = match runtime() {
        Ok(rt) => rt.block_on(PgStore::schema_status(pg.conninfo(), pg.connect_timeout)),
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    match status {
        Ok(status) => {
            let (line, ok) = describe_status(&place, status);
            if ok {
                print_line(format_args!("{line}")).is_ok()
            } else {
                eprintln!("error: {line}");
                false
            }
        }
        Err(e) => {
            eprintln!("error: store: cannot reach the database: {e}");
            false
        }
    }
}

/// What `gateway check` says of a schema, and whether that passes.
fn describe_status(place: &str, status: SchemaStatus) -> (String, bool) {
    let SchemaStatus { current, latest } = status;
    if current == latest {
        (
            format!("store: {place}: schema version {current} (current)"),
            true,
        )
    } else if current < latest {
        (
            format!(
                "store: {place}: schema version {current}, this gateway's is {latest} (behind: \
                 run gateway migrate or start the gateway)"
            ),
            true,
        )
    } else {
        (
            format!(
                "store: {place}: schema version {current} is ahead of this gateway ({latest}): \
                 refused; run the newer gateway"
            ),
            false,
        )
    }
}

/// `gateway store ...`.
pub(crate) fn store(command: &StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Copy(args) => copy(args),
    }
}

fn copy(args: &CopyArgs) -> anyhow::Result<ExitCode> {
    let conninfo = match conninfo_of(&args.to) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: --to {message}");
            return Ok(ExitCode::from(REFUSED));
        }
    };
    let place = target(&conninfo);
    let now_ms = gateway_providers::envelope::now_unix_ms();
    let result = runtime()?.block_on(gateway::store::copy_from_sqlite(
        &args.from,
        &conninfo,
        args.connect_timeout,
        args.dedup_window,
        now_ms,
    ));
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("error: store copy to {place}: {e}");
            let code = match e {
                CopyError::Connect(_) => UNREACHABLE,
                _ => REFUSED,
            };
            return Ok(ExitCode::from(code));
        }
    };
    if !summary.migrated.is_empty() {
        let versions: Vec<String> = summary.migrated.iter().map(ToString::to_string).collect();
        print_line(format_args!(
            "migrated {place} to schema version(s) {}",
            versions.join(", ")
        ))?;
    }
    let s = &summary;
    print_line(format_args!(
        "copied {} to {place}: events {}, dedup_keys {}, object_states {}, routings {}, \
         deliveries {}, route_runs {}, quarantine {}, event_work {}, admin_audit {}",
        args.from.display(),
        s.events,
        s.dedup_keys,
        s.object_states,
        s.routings,
        s.deliveries,
        s.route_runs,
        s.quarantine,
        s.event_work,
        s.admin_audit
    ))?;
    if s.object_states_lost > 0 {
        print_line(format_args!(
            "note: {} Ledig object state(s) in their retry window could not be re-derived from \
             a stored event: a provider retry of exactly that state is stored once more",
            s.object_states_lost
        ))?;
    }
    if s.quarantine_merged > 0 {
        print_line(format_args!(
            "note: {} quarantine row(s) repeated an earlier row's body and were counted on it",
            s.quarantine_merged
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--to`: a secret reference, or the connection string itself. Errors never hold the value.
fn conninfo_of(to: &str) -> Result<String, String> {
    let text = if to.starts_with("env:") || to.starts_with("file:") {
        let secret = SecretRef::parse(to)
            .and_then(|r| r.resolve())
            .map_err(|e| e.to_string())?;
        String::from_utf8(secret.expose().to_vec())
            .map_err(|_| "names a value that is not UTF-8 text".to_owned())?
    } else {
        to.to_owned()
    };
    if gateway::store::target_of(&text).is_none() {
        return Err(
            "is not a PostgreSQL connection string (a URL `postgres://USER@HOST/DB` or \
             `host=... dbname=...`); the value is not shown"
                .to_owned(),
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_passes_a_current_or_older_schema_and_refuses_a_newer_one() {
        let at =
            |current| describe_status("postgres h database d", SchemaStatus { current, latest: 2 });
        assert_eq!(
            at(2),
            (
                "store: postgres h database d: schema version 2 (current)".to_owned(),
                true
            )
        );
        let (behind, ok) = at(1);
        assert!(ok && behind.contains("behind: run gateway migrate or start the gateway"));
        let (ahead, ok) = at(3);
        assert!(!ok && ahead.contains("ahead of this gateway") && ahead.contains("refused"));
    }

    #[test]
    fn a_target_that_does_not_parse_is_refused_without_echoing_it() {
        let err = conninfo_of("postgres://u:hunter2@[bad").expect_err("refused");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(conninfo_of("host=/tmp dbname=g").is_ok());
    }
}
