//! The SQLite schema, applied idempotently at open. Columns are documented here because tests,
//! operators and later stages (workers, admin API) read them.

pub(super) const PRAGMAS: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    PRAGMA busy_timeout = 5000;
    PRAGMA journal_size_limit = 67108864;
";

/// The writer checkpoints only as a backstop (WAL past ~64 MiB), see `checkpoint_loop`.
pub(super) const WRITER_PRAGMAS: &str = "PRAGMA wal_autocheckpoint = 16384;";

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,           -- arrival order
    source       TEXT    NOT NULL,              -- configured source name
    dedup_key    TEXT    NOT NULL,              -- = envelope id
    event_type   TEXT    NOT NULL,              -- envelope type, e.g. ledger.transaction.completed
    envelope     TEXT    NOT NULL,              -- CloudEvents structured JSON
    raw_body     BLOB    NOT NULL,              -- bytes as received (signature re-check)
    headers      TEXT    NOT NULL,              -- JSON object: signature/event headers only
    received_at  INTEGER NOT NULL,              -- unix milliseconds
    status       TEXT    NOT NULL DEFAULT 'pending'
);
-- No secondary indexes: rows are appended in seq order, so an insert touches only the
-- table's last pages. The dedup decision uses an in-memory index rebuilt from this table.

-- Authenticated bodies that could not be normalized (not JSON): kept, never dropped.
CREATE TABLE IF NOT EXISTS quarantine (
    id           INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    raw_body     BLOB    NOT NULL,
    headers      TEXT    NOT NULL,
    received_at  INTEGER NOT NULL
);

-- Small key/value facts; `probe` is rewritten by readiness checks.
CREATE TABLE IF NOT EXISTS meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
";

pub(super) const INSERT_EVENT: &str = "INSERT INTO events \
     (source, dedup_key, event_type, envelope, raw_body, headers, received_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
pub(super) const INSERT_QUARANTINE: &str = "INSERT INTO quarantine \
     (source, reason, raw_body, headers, received_at) VALUES (?1, ?2, ?3, ?4, ?5)";
pub(super) const WRITE_PROBE: &str =
    "INSERT INTO meta (key, value) VALUES ('probe', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1";
