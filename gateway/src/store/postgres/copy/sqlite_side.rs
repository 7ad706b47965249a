//! The SQLite half of `store copy`: opens the file read-only in one read transaction and says,
//! per table, what is read and how each row becomes the PostgreSQL row. Never writes the file.

use super::{CopyError, Values};
use rusqlite::{Connection, OpenFlags, Row};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio_postgres::types::Type;

/// The store being copied, inside its read transaction (one snapshot for every table).
#[derive(Debug)]
pub(super) struct Source {
    conn: Connection,
    path: PathBuf,
}

/// Columns a store of this version has; an older file lacks them until this version opened it.
const NEEDED_COLUMNS: [(&str, &str); 5] = [
    ("events", "data_at"),
    ("quarantine", "body_hash"),
    ("object_states", "state"),
    ("route_runs", "reason"),
    ("dedup_keys", "seen"),
];

impl Source {
    pub(super) fn open(path: &Path) -> Result<Self, CopyError> {
        if !path.is_file() {
            return Err(CopyError::NoStore(path.to_path_buf()));
        }
        let read_error = |source| CopyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(read_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(read_error)?;
        // Deferred: the snapshot is taken at the first read below and kept to the end.
        conn.execute_batch("BEGIN").map_err(read_error)?;
        for (table, column) in NEEDED_COLUMNS {
            let present: bool = conn
                .query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get(0),
                )
                .map_err(read_error)?;
            if !present {
                return Err(CopyError::OldStore {
                    path: path.to_path_buf(),
                    what: format!("{table}.{column}"),
                });
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub(super) fn read_error(&self, source: rusqlite::Error) -> CopyError {
        CopyError::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether the store has `table` (tables added by later versions are created when a
    /// gateway opens the store; a copy may read one that no such gateway opened).
    pub(super) fn has_table(&self, table: &str) -> Result<bool, CopyError> {
        self.conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| self.read_error(e))
    }

    pub(super) fn prepare(&self, sql: &str) -> Result<rusqlite::Statement<'_>, CopyError> {
        self.conn.prepare(sql).map_err(|e| self.read_error(e))
    }

    /// Quarantined bodies grouped by (source, body): the row kept (the first), the repeats of
    /// all of them and the latest arrival. Reads each body to hash it, keeps none.
    pub(super) fn quarantine_groups(
        &self,
    ) -> Result<HashMap<(String, [u8; 32]), QuarantineGroup>, CopyError> {
        let mut groups: HashMap<(String, [u8; 32]), QuarantineGroup> = HashMap::new();
        let mut stmt = self.prepare(QUARANTINE_ROWS)?;
        let mut rows = stmt.query(()).map_err(|e| self.read_error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.read_error(e))? {
            let row = QuarantineRow::read(row).map_err(|e| self.read_error(e))?;
            let group = groups
                .entry((row.source, row.body_hash))
                .or_insert(QuarantineGroup {
                    first_id: row.id,
                    repeats: 0,
                    last_seen_at: row.last_seen_at,
                });
            group.repeats = group.repeats.saturating_add(row.repeats);
            group.last_seen_at = group.last_seen_at.max(row.last_seen_at);
        }
        Ok(groups)
    }
}

/// One (source, body) of the quarantine after merging.
#[derive(Debug, Clone, Copy)]
pub(super) struct QuarantineGroup {
    pub(super) first_id: i64,
    pub(super) repeats: i64,
    pub(super) last_seen_at: i64,
}

/// In id order, so the first row of a body is the one kept.
pub(super) const QUARANTINE_ROWS: &str = "SELECT id, source, reason, raw_body, headers, \
     received_at, body_hash, repeats, coalesce(last_seen_at, received_at) \
     FROM quarantine ORDER BY id";

/// One quarantine row, its body hash computed where an older row kept none.
#[derive(Debug)]
pub(super) struct QuarantineRow {
    pub(super) id: i64,
    pub(super) source: String,
    pub(super) reason: String,
    pub(super) raw_body: Vec<u8>,
    pub(super) headers: String,
    pub(super) received_at: i64,
    pub(super) body_hash: [u8; 32],
    pub(super) repeats: i64,
    pub(super) last_seen_at: i64,
}

impl QuarantineRow {
    pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        let raw_body: Vec<u8> = row.get(3)?;
        let stored: Option<Vec<u8>> = row.get(6)?;
        let body_hash = stored
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .unwrap_or_else(|| Sha256::digest(&raw_body).into());
        Ok(Self {
            id: row.get(0)?,
            source: row.get(1)?,
            reason: row.get(2)?,
            raw_body,
            headers: row.get(4)?,
            received_at: row.get(5)?,
            body_hash,
            repeats: row.get(7)?,
            last_seen_at: row.get(8)?,
        })
    }
}

/// The tables copied row for row.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
    Events,
    /// `?1`: the oldest arrival still inside the dedup window (unix ms).
    DedupKeys,
    Routings,
    Deliveries,
    RouteRuns,
    /// Derived: the events PostgreSQL's workers still have to route.
    EventWork,
    /// Who replayed or redrove what (a store no gateway of this version opened has none).
    AdminAudit,
}

impl Table {
    /// The SQLite query, the PostgreSQL table with its columns, and their types (in order).
    pub(super) fn shape(self) -> (&'static str, &'static str, &'static [Type]) {
        match self {
            Self::Events => (
                "SELECT seq, source, dedup_key, event_type, envelope, raw_body, headers, \
                 received_at, data_at, data_from, data_len FROM events ORDER BY seq",
                "events (seq, source, dedup_key, event_type, envelope, raw_body, headers, \
                 received_at, data_at, data_from, data_len)",
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BYTEA,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                    Type::INT8,
                    Type::INT8,
                ],
            ),
            // SQLite's own dedup table keeps only hash prefixes; the pairs come from the
            // events. A key stored twice (a retry after an earlier window ended) counts from
            // its latest arrival.
            Self::DedupKeys => (
                "SELECT source, dedup_key, max(received_at) FROM events \
                 WHERE received_at >= ?1 GROUP BY source, dedup_key",
                "dedup_keys (source, dedup_key, seen)",
                &[Type::TEXT, Type::TEXT, Type::INT8],
            ),
            Self::Routings => (
                "SELECT seq, status, plugin_results, processed_at FROM routings ORDER BY seq",
                "routings (seq, status, plugin_results, processed_at)",
                &[Type::INT8, Type::TEXT, Type::TEXT, Type::INT8],
            ),
            Self::Deliveries => (
                "SELECT id, event_seq, route, destination, webhook_id, envelope, status, \
                 attempts, next_attempt_at, last_error, history, created_at, updated_at, \
                 subject, order_at, order_next, holds_subject <> 0, \
                 amount, currency, amount_units, amount_scale \
                 FROM deliveries ORDER BY id",
                "deliveries (id, event_seq, route, destination, webhook_id, envelope, status, \
                 attempts, next_attempt_at, last_error, history, created_at, updated_at, \
                 subject, order_at, order_next, holds_subject, \
                 amount, currency, amount_units, amount_scale)",
                &[
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT4,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                    Type::BOOL,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                ],
            ),
            Self::RouteRuns => (
                // A run waiting for a plugin retry keeps its event's hold on its subject
                // (`unrouted_subjects` on SQLite, the run's own columns on PostgreSQL).
                "SELECT r.id, r.event_seq, r.route, r.status, r.attempts, r.next_attempt_at, \
                        r.reason, r.created_at, r.updated_at, u.subject, \
                        coalesce(u.order_at, 0), coalesce(u.order_next, 0) \
                   FROM route_runs r LEFT JOIN unrouted_subjects u \
                     ON u.seq = r.event_seq AND r.status = 'retry' ORDER BY r.id",
                "route_runs (id, event_seq, route, status, attempts, next_attempt_at, reason, \
                 created_at, updated_at, subject, order_at, order_next)",
                &[
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT4,
                    Type::INT8,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                ],
            ),
            Self::EventWork => (
                // An event not routed yet keeps its hold on its subject (docs/ordering.md).
                "SELECT e.seq, r.seq IS NOT NULL, u.subject, coalesce(u.order_at, 0), \
                        coalesce(u.order_next, 0) FROM events e \
                 LEFT JOIN routings r ON r.seq = e.seq \
                 LEFT JOIN unrouted_subjects u ON u.seq = e.seq AND r.seq IS NULL \
                 WHERE r.seq IS NULL OR r.status = 'replay' ORDER BY e.seq",
                "event_work (seq, replay, subject, order_at, order_next)",
                &[Type::INT8, Type::BOOL, Type::TEXT, Type::INT8, Type::INT8],
            ),
            Self::AdminAudit => (
                "SELECT id, at, actor, action, selection, count FROM admin_audit ORDER BY id",
                "admin_audit (id, at, actor, action, selection, count)",
                &[
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                ],
            ),
        }
    }

    /// One SQLite row as the PostgreSQL row's values.
    pub(super) fn values(self, row: &Row<'_>) -> rusqlite::Result<Values> {
        let text =
            |i: usize| -> rusqlite::Result<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
                Ok(Box::new(row.get::<_, String>(i)?))
            };
        let opt_text = |i: usize| -> rusqlite::Result<
            Box<dyn tokio_postgres::types::ToSql + Sync + Send>,
        > { Ok(Box::new(row.get::<_, Option<String>>(i)?)) };
        let int8 =
            |i: usize| -> rusqlite::Result<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
                Ok(Box::new(row.get::<_, i64>(i)?))
            };
        let opt_int8 = |i: usize| -> rusqlite::Result<
            Box<dyn tokio_postgres::types::ToSql + Sync + Send>,
        > { Ok(Box::new(row.get::<_, Option<i64>>(i)?)) };
        // Attempts are small counts; a value past i32 was not written by a gateway.
        let int4 =
            |i: usize| -> rusqlite::Result<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
                let n: i64 = row.get(i)?;
                let n =
                    i32::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, n))?;
                Ok(Box::new(n))
            };
        Ok(match self {
            Self::Events => vec![
                int8(0)?,
                text(1)?,
                text(2)?,
                text(3)?,
                text(4)?,
                Box::new(row.get::<_, Vec<u8>>(5)?),
                text(6)?,
                int8(7)?,
                opt_int8(8)?,
                opt_int8(9)?,
                opt_int8(10)?,
            ],
            Self::DedupKeys => vec![text(0)?, text(1)?, int8(2)?],
            Self::Routings => vec![int8(0)?, text(1)?, opt_text(2)?, int8(3)?],
            Self::Deliveries => vec![
                int8(0)?,
                int8(1)?,
                text(2)?,
                text(3)?,
                text(4)?,
                opt_text(5)?,
                text(6)?,
                int4(7)?,
                opt_int8(8)?,
                opt_text(9)?,
                text(10)?,
                int8(11)?,
                int8(12)?,
                opt_text(13)?,
                int8(14)?,
                int8(15)?,
                Box::new(row.get::<_, bool>(16)?),
                opt_text(17)?,
                opt_text(18)?,
                opt_int8(19)?,
                opt_int8(20)?,
            ],
            Self::RouteRuns => vec![
                int8(0)?,
                int8(1)?,
                text(2)?,
                text(3)?,
                int4(4)?,
                opt_int8(5)?,
                text(6)?,
                int8(7)?,
                int8(8)?,
                opt_text(9)?,
                int8(10)?,
                int8(11)?,
            ],
            Self::AdminAudit => vec![int8(0)?, int8(1)?, text(2)?, text(3)?, text(4)?, int8(5)?],
            Self::EventWork => vec![
                int8(0)?,
                Box::new(row.get::<_, bool>(1)?),
                opt_text(2)?,
                int8(3)?,
                int8(4)?,
            ],
        })
    }
}
