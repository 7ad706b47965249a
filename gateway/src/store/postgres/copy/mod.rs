//! `gateway store copy`: moves a single node's SQLite store into an empty PostgreSQL database,
//! so a team can go from one process to replicas without losing what it acked or re-routing
//! what it already routed.
//!
//! The target is migrated first, then everything is written in ONE transaction with binary
//! COPY (a failure halfway leaves the database as empty as it was): events with their
//! sequence numbers, the dedup keys still inside the window, the Ledig objects' latest states
//! (re-derived, see `object_states`), routings, deliveries, route runs, quarantine, the admin audit trail, and a work
//! row for every event still to route (never routed, or an operator's replay). Identity
//! sequences are moved past the copied ids so new rows never reuse one. The copy refuses a
//! target that holds any row of these tables, and locks them while it runs, so a replica started
//! too early cannot slip rows in between the check and the commit.
//!
//! The SQLite file is read in one read transaction (one snapshot) and never written; it may be
//! the store of a stopped gateway (a running one would go on acking events the copy misses).
//! The future is not `Send` (it holds SQLite cursors across writes): run it with `block_on`.
//! This module never logs or returns the connection string.

mod object_states;
mod sqlite_side;
#[cfg(test)]
mod tests;

use super::{connect_once, describe};
use crate::store::StoreError;
use futures::pin_mut;
use sqlite_side::Source;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// Why a copy did not happen. Nothing was written to the target in any case (the migration
/// aside, which is what a starting gateway would apply too).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target could not be reached (the message names hosts and database only).
    #[error("{0}")]
    Connect(StoreError),
    /// The target's schema is newer than this gateway knows, or migrating it failed.
    #[error("{0}")]
    Schema(StoreError),
    #[error(
        "the target database is not empty ({0}): `gateway store copy` only fills a database \
         no gateway has written events to; use a new database, or empty this one"
    )]
    NotEmpty(String),
    #[error("no SQLite store at {0}")]
    NoStore(PathBuf),
    #[error(
        "the SQLite store {path} was made by an older gateway (no {what}): run `gateway \
         migrate` with its config (or start and stop that gateway) once, then copy"
    )]
    OldStore { path: PathBuf, what: String },
    #[error("reading the SQLite store {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("writing to PostgreSQL failed, nothing was copied: {0}")]
    Write(String),
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Write(describe(&e))
    }
}

/// What a copy wrote, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// Schema versions the target was migrated to first (empty: it was current).
    pub migrated: Vec<i32>,
    pub events: u64,
    pub dedup_keys: u64,
    pub object_states: u64,
    /// Ledig objects whose latest state (still in its retry window) no stored event could be
    /// re-derived to; a provider retry of that state is stored once more on PostgreSQL.
    pub object_states_lost: u64,
    pub routings: u64,
    pub deliveries: u64,
    pub route_runs: u64,
    pub quarantine: u64,
    /// Quarantine rows of the same (source, body) merged into one (older SQLite rows kept no
    /// body hash, so a repeat was stored again).
    pub quarantine_merged: u64,
    /// Events left to route on PostgreSQL (never routed, or asked to replay).
    pub event_work: u64,
    /// Audit records of replays and redrives.
    pub admin_audit: u64,
}

/// The tables the copy writes: any row in one of them means the target is in use.
const TARGET_TABLES: [&str; 11] = [
    "events",
    "dedup_keys",
    "object_states",
    "routings",
    "deliveries",
    "route_runs",
    "quarantine",
    "event_work",
    "admin_audit",
    "event_subjects",
    "event_ids",
];

/// Copies the SQLite store at `from` into the database `conninfo` names. Dedup keys of events
/// received within `dedup_window` before `now_ms` are copied; object states still in their
/// retry window at `now_ms` are re-derived.
pub async fn copy_from_sqlite(
    from: &Path,
    conninfo: &str,
    connect_timeout: Duration,
    dedup_window: Duration,
    now_ms: i64,
) -> Result<CopySummary, CopyError> {
    let source = Source::open(from)?;
    let migrated = super::PgStore::migrate_only(conninfo, connect_timeout)
        .await
        .map_err(|e| match e {
            StoreError::Open { .. } => CopyError::Connect(e),
            other => CopyError::Schema(other),
        })?;
    let (mut client, _place) = connect_once(conninfo, connect_timeout)
        .await
        .map_err(CopyError::Connect)?;
    let tx = client.transaction().await?;
    // A big store is one long COPY per table; `statement_timeout` guards the service's queries.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; LOCK TABLE {} IN EXCLUSIVE MODE",
        TARGET_TABLES.join(", ")
    ))
    .await?;
    refuse_if_used(&tx).await?;
    let window_ms = i64::try_from(dedup_window.as_millis()).unwrap_or(i64::MAX);
    let mut summary = CopySummary {
        migrated,
        ..CopySummary::default()
    };
    copy_tables(&source, &tx, now_ms.saturating_sub(window_ms), &mut summary).await?;
    let (states, lost) = object_states::rederive(&source, now_ms)?;
    summary.object_states = write_object_states(&tx, &states).await?;
    summary.object_states_lost = lost;
    move_sequences_past_copied_ids(&tx).await?;
    tx.commit().await?;
    Ok(summary)
}

async fn refuse_if_used(tx: &Transaction<'_>) -> Result<(), CopyError> {
    let mut used = Vec::new();
    for table in TARGET_TABLES {
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        if rows > 0 {
            used.push(format!("{table}: {rows} row(s)"));
        }
    }
    if used.is_empty() {
        Ok(())
    } else {
        Err(CopyError::NotEmpty(used.join(", ")))
    }
}

/// Every table read straight from SQLite.
async fn copy_tables(
    source: &Source,
    tx: &Transaction<'_>,
    dedup_since_ms: i64,
    summary: &mut CopySummary,
) -> Result<(), CopyError> {
    use sqlite_side::Table;
    summary.events = copy(source, tx, Table::Events, ()).await?;
    tx.execute(INDEX_SUBJECTS, &[]).await?;
    tx.execute(INDEX_IDS, &[]).await?;
    summary.dedup_keys = copy(source, tx, Table::DedupKeys, [dedup_since_ms]).await?;
    summary.routings = copy(source, tx, Table::Routings, ()).await?;
    summary.deliveries = copy(source, tx, Table::Deliveries, ()).await?;
    summary.route_runs = copy(source, tx, Table::RouteRuns, ()).await?;
    summary.event_work = copy(source, tx, Table::EventWork, ()).await?;
    if source.has_table("admin_audit")? {
        summary.admin_audit = copy(source, tx, Table::AdminAudit, ()).await?;
    }
    let (written, merged) = copy_quarantine(source, tx).await?;
    summary.quarantine = written;
    summary.quarantine_merged = merged;
    Ok(())
}

/// `event_filter::search_key` of the text column `$col`, in SQL (as migration 9 writes it).
macro_rules! search_key_sql {
    ($col:literal) => {
        concat!(
            "('x' || left(encode(sha256(convert_to(",
            $col,
            ", 'UTF8')), 'hex'), 16))::bit(64)::bigint"
        )
    };
}

/// The search's subject hashes of the copied events (migration 8), from their envelopes, a
/// row per thousand seqs; the same hash as `event_filter::search_key`, in SQL (the copy test
/// and the search's plan test search rows made this way).
pub(super) const INDEX_SUBJECTS: &str = concat!(
    "INSERT INTO event_subjects (first_seq, last_seq, seqs, hashes) \
     SELECT min(seq), max(seq), array_agg(seq ORDER BY seq), array_agg(hash ORDER BY seq) \
       FROM (SELECT seq, ",
    search_key_sql!("subject"),
    " AS hash \
               FROM (SELECT seq, envelope::json ->> 'subject' AS subject FROM stored_events) e \
              WHERE subject <> '') h \
      GROUP BY seq / 1000"
);

/// The search's dedup-key hashes of the copied events (migration 9), a row per thousand seqs.
pub(super) const INDEX_IDS: &str = concat!(
    "INSERT INTO event_ids (first_seq, last_seq, seqs, hashes) \
     SELECT min(seq), max(seq), array_agg(seq ORDER BY seq), array_agg(hash ORDER BY seq) \
       FROM (SELECT seq, ",
    search_key_sql!("dedup_key"),
    " AS hash FROM events) h \
      GROUP BY seq / 1000"
);

/// One table: its SQLite rows, as they come, into one binary COPY.
async fn copy(
    source: &Source,
    tx: &Transaction<'_>,
    table: sqlite_side::Table,
    params: impl rusqlite::Params,
) -> Result<u64, CopyError> {
    let (select, target, types) = table.shape();
    let sink = tx.copy_in(&copy_statement(target)).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    pin_mut!(writer);
    let mut stmt = source.prepare(select)?;
    let mut rows = stmt.query(params).map_err(|e| source.read_error(e))?;
    while let Some(row) = rows.next().map_err(|e| source.read_error(e))? {
        let values = table.values(row).map_err(|e| source.read_error(e))?;
        writer.as_mut().write(&as_params(&values)).await?;
    }
    Ok(writer.finish().await?)
}

/// `COPY table (columns) FROM STDIN BINARY`. Identity columns take the values given (COPY
/// always does, as INSERT does with OVERRIDING SYSTEM VALUE): sequence numbers and ids stay.
fn copy_statement(target: &str) -> String {
    format!("COPY {target} FROM STDIN (FORMAT binary)")
}

/// A row's values as the writer takes them.
type Values = Vec<Box<dyn ToSql + Sync + Send>>;

fn as_params(values: &Values) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The quarantine's PostgreSQL columns as the copy writes them.
const QUARANTINE_TARGET: &str = "quarantine (id, source, reason, raw_body, headers, received_at, \
     body_hash, repeats, last_seen_at)";

/// Quarantine, one row per (source, body): PostgreSQL keeps that unique, while an older SQLite
/// store may hold a body twice (rows from before body hashes). Repeats add up on the first row.
async fn copy_quarantine(source: &Source, tx: &Transaction<'_>) -> Result<(u64, u64), CopyError> {
    let merged = source.quarantine_groups()?;
    let sink = tx.copy_in(&copy_statement(QUARANTINE_TARGET)).await?;
    let types = [
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::BYTEA,
        Type::TEXT,
        Type::INT8,
        Type::BYTEA,
        Type::INT4,
        Type::INT8,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut stmt = source.prepare(sqlite_side::QUARANTINE_ROWS)?;
    let mut rows = stmt.query(()).map_err(|e| source.read_error(e))?;
    let mut folded = 0;
    while let Some(row) = rows.next().map_err(|e| source.read_error(e))? {
        let row = sqlite_side::QuarantineRow::read(row).map_err(|e| source.read_error(e))?;
        let Some(group) = merged.get(&(row.source.clone(), row.body_hash)) else {
            continue;
        };
        if group.first_id != row.id {
            folded += 1;
            continue;
        }
        let repeats = i32::try_from(group.repeats).unwrap_or(i32::MAX);
        let hash: &[u8] = &row.body_hash;
        writer
            .as_mut()
            .write(&[
                &row.id,
                &row.source,
                &row.reason,
                &row.raw_body,
                &row.headers,
                &row.received_at,
                &hash,
                &repeats,
                &group.last_seen_at,
            ])
            .await?;
    }
    Ok((writer.finish().await?, folded))
}

async fn write_object_states(
    tx: &Transaction<'_>,
    states: &[object_states::ObjectStateRow],
) -> Result<u64, CopyError> {
    let sink = tx
        .copy_in(&copy_statement(
            "object_states (source, object, state, seen, expires)",
        ))
        .await?;
    let types = [Type::TEXT, Type::BYTEA, Type::BYTEA, Type::INT8, Type::INT8];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for s in states {
        let (object, state): (&[u8], &[u8]) = (&s.object, &s.state);
        writer
            .as_mut()
            .write(&[&s.source, &object, &state, &s.seen, &s.expires])
            .await?;
    }
    Ok(writer.finish().await?)
}

/// Moves each identity past the largest id copied, so the next event, delivery, route run or
/// quarantined body gets a number of its own (an empty table leaves its sequence at 1).
async fn move_sequences_past_copied_ids(tx: &Transaction<'_>) -> Result<(), CopyError> {
    for (table, column) in [
        ("events", "seq"),
        ("deliveries", "id"),
        ("route_runs", "id"),
        ("quarantine", "id"),
        ("admin_audit", "id"),
    ] {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), max({column})) \
                 FROM {table} HAVING max({column}) IS NOT NULL"
            ),
            &[],
        )
        .await?;
    }
    Ok(())
}
