//! `[store]`: which backend holds the events (a SQLite `path`, or a PostgreSQL `url` with its
//! pool and timeouts) and how long things are kept. Never connects: that the database answers
//! is `gateway check`'s and the start's business; here only the written values are judged.

use super::{Pass, positive};
use crate::config::error::SourceText;
use crate::config::raw::{RawConfig, RawStore, SecretValue};
use crate::config::secret::SecretRef;
use crate::config::{ConfigError, PostgresSettings, StoreBackend, StoreLocation, StoreSettings};
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;
use toml::Spanned;

pub(in crate::config) const DEFAULT_STORE_PATH: &str = "data/gateway.db";
const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// As long as the default dedup window: a provider still retrying a body keeps it, and an
/// operator has a month to look at one.
const DEFAULT_QUARANTINE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Enough for the batch writers, the workers' claims and the admin API of one replica; the
/// server's `max_connections` (100 by default) divided by the replicas caps it.
const DEFAULT_POOL_SIZE: u64 = 16;
/// At least the ack path's connection and one more for everything else.
const POOL_SIZE: RangeInclusive<u64> = 2..=512;
/// Ack commits the cluster keeps in flight: two measured cheapest per event on a 2-core
/// database (docs/performance.md, "Two ack commits in flight"); a database with more cores
/// can take more.
const DEFAULT_ACK_WRITERS: u64 = 2;
/// Each writer holds a connection while it commits; past a few dozen the batches are only
/// smaller, never faster.
const ACK_WRITERS: RangeInclusive<u64> = 1..=64;
/// How soon after one of its ack batches started a writer may start the next. At moderate
/// rates a commit otherwise carries a few events, and each commit costs the database a
/// statement's start and a WAL flush whatever it carries: at 10,000 events/s 2 ms cut the
/// database's CPU by about a quarter, at 1-2 ms more p50 (docs/performance.md, "Ack batches
/// spaced"). Under load a commit takes longer than this, so the spacing never holds one back.
const DEFAULT_ACK_SPACING: Duration = Duration::from_millis(2);
/// Past this the spacing is a floor under every ack's latency more than a way to fill batches.
const ACK_SPACING: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_millis(100);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Below a second a replica spends its time renewing; above an hour a dead replica's work
/// waits longer than any provider's retry schedule.
const LEASE: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);

/// The keys that only a PostgreSQL store has, with their raw values' positions.
fn postgres_only_keys(raw: &RawStore) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut keys = Vec::new();
    if let Some(v) = &raw.pool_size {
        keys.push(("store.pool_size", v.span()));
    }
    if let Some(v) = &raw.ack_writers {
        keys.push(("store.ack_writers", v.span()));
    }
    let durations = [
        ("store.connect_timeout", &raw.connect_timeout),
        ("store.statement_timeout", &raw.statement_timeout),
        ("store.lease", &raw.lease),
        ("store.ack_spacing", &raw.ack_spacing),
    ];
    for (key, value) in durations {
        if let Some(v) = value {
            keys.push((key, v.span()));
        }
    }
    keys
}

pub(super) fn compile_store(pass: &mut Pass<'_>, raw: &RawStore) -> Option<StoreSettings> {
    let backend = match (&raw.path, &raw.url) {
        (Some(_), Some(url)) => {
            pass.error(
                url.span(),
                "store.url",
                "`store.path` and `store.url` cannot both be set: `path` is a SQLite file, \
                 `url` a PostgreSQL database; keep the one the gateway should use",
            );
            None
        }
        (_, Some(url)) => postgres(pass, raw, url).map(StoreBackend::Postgres),
        (path, None) => {
            for (key, span) in postgres_only_keys(raw) {
                pass.error(
                    span,
                    key,
                    "applies only to a PostgreSQL store (`store.url`); this store is the SQLite \
                     file `store.path`",
                );
            }
            let written = path.as_ref().map_or(DEFAULT_STORE_PATH, |p| p.get_ref());
            if written.is_empty() {
                let span = path.as_ref().map_or(0..0, Spanned::span);
                pass.error(span, "store.path", "must not be empty");
            }
            Some(StoreBackend::Sqlite {
                path: written.into(),
            })
        }
    };
    let dedup_window =
        positive(pass, &raw.dedup_window, "store.dedup_window").unwrap_or(DEFAULT_DEDUP_WINDOW);
    let retention = positive(pass, &raw.retention, "store.retention");
    let quarantine_retention = positive(
        pass,
        &raw.quarantine_retention,
        "store.quarantine_retention",
    )
    .unwrap_or(DEFAULT_QUARANTINE_RETENTION);
    if let (Some(kept), Some(span)) = (retention, raw.retention.as_ref().map(Spanned::span)) {
        // The dedup index is rebuilt from stored events at start: an event removed inside the
        // window would let its provider's retry in as a new event after a restart.
        if kept < dedup_window {
            pass.error(
                span,
                "store.retention",
                format!(
                    "must be at least store.dedup_window ({}): duplicates are recognized from \
                     stored events",
                    humantime::format_duration(dedup_window)
                ),
            );
        }
    }
    Some(StoreSettings {
        backend: backend?,
        dedup_window,
        retention,
        quarantine_retention,
    })
}

/// `store.url` and the PostgreSQL keys. The URL's value never reaches a message.
fn postgres(
    pass: &mut Pass<'_>,
    raw: &RawStore,
    url: &Spanned<SecretValue<String>>,
) -> Option<PostgresSettings> {
    let pool_size = pass.count(
        raw.pool_size.as_ref(),
        "store.pool_size",
        POOL_SIZE,
        DEFAULT_POOL_SIZE,
    );
    let ack_writers = pass.count(
        raw.ack_writers.as_ref(),
        "store.ack_writers",
        ACK_WRITERS,
        DEFAULT_ACK_WRITERS,
    );
    if let Some(v) = &raw.ack_writers
        && ACK_WRITERS.contains(&ack_writers)
        && ack_writers.saturating_add(2) > pool_size
    {
        pass.error(
            v.span(),
            "store.ack_writers",
            format!(
                "must leave two of store.pool_size's {pool_size} connections to the workers and \
                 the admin API (at most {}): each writer holds one while it commits",
                pool_size.saturating_sub(2)
            ),
        );
    }
    let ack_spacing = match &raw.ack_spacing {
        None => DEFAULT_ACK_SPACING,
        Some(v) => {
            let spacing = v.get_ref().0;
            if !ACK_SPACING.contains(&spacing) {
                pass.error(
                    v.span(),
                    "store.ack_spacing",
                    "must be between 0s (no spacing) and 100ms",
                );
            }
            spacing
        }
    };
    let connect_timeout = positive(pass, &raw.connect_timeout, "store.connect_timeout")
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let statement_timeout = positive(pass, &raw.statement_timeout, "store.statement_timeout")
        .unwrap_or(DEFAULT_STATEMENT_TIMEOUT);
    let lease = match &raw.lease {
        None => DEFAULT_LEASE,
        Some(v) => {
            let lease = v.get_ref().0;
            if !LEASE.contains(&lease) {
                pass.error(v.span(), "store.lease", "must be between 1s and 1h");
            }
            lease
        }
    };
    let secret = pass.secret(url, "store.url")?;
    let text = std::str::from_utf8(secret.expose()).ok();
    if text.is_none_or(|t| tokio_postgres::Config::from_str(t).is_err()) {
        pass.error(
            url.span(),
            "store.url",
            "the secret it names is not a PostgreSQL connection string (a URL \
             `postgres://USER@HOST/DB?...` or `host=... dbname=...`); the value is not shown",
        );
        return None;
    }
    Some(PostgresSettings {
        url: secret,
        pool_size: super::service::to_usize(pool_size),
        ack_writers: super::service::to_usize(ack_writers),
        ack_spacing,
        connect_timeout,
        statement_timeout,
        lease,
    })
}

/// `[store]` of a config that parses (see `config::store_location`).
pub(in crate::config) fn store_location(
    file: &Path,
    text: &str,
) -> Result<StoreLocation, ConfigError> {
    let src = SourceText { file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
        issues: vec![src.toml_issue(&e)],
    })?;
    let positioned = |span, key: &str, message: &str| ConfigError {
        issues: vec![src.issue(span, key, message)],
    };
    match (&raw.store.path, &raw.store.url) {
        (Some(_), Some(url)) => Err(positioned(
            url.span(),
            "store.url",
            "`store.path` and `store.url` cannot both be set",
        )),
        (_, Some(url)) => match url.get_ref() {
            SecretValue::Written(text) => SecretRef::parse(text)
                .map(StoreLocation::Postgres)
                .map_err(|e| positioned(url.span(), "store.url", &e.to_string())),
            SecretValue::WrongType(kind) => Err(positioned(
                url.span(),
                "store.url",
                &format!("must be a secret reference string, not {kind}; the value is not shown"),
            )),
        },
        (None, None) => Ok(StoreLocation::Sqlite(DEFAULT_STORE_PATH.into())),
        (Some(p), None) if p.get_ref().is_empty() => {
            Err(positioned(p.span(), "store.path", "must not be empty"))
        }
        (Some(p), None) => Ok(StoreLocation::Sqlite(p.get_ref().into())),
    }
}
