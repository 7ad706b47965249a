//! The SQLite schema, applied idempotently at open. Columns are documented here because tests,
//! operators and later stages (workers, admin API) read them.

/// Connection settings, applied to every connection at open.
///
/// `page_size` only takes effect when the file is created (before WAL mode is set): a store
/// created by an earlier version keeps its 4 KiB pages. 8 KiB because an event row is ~1.1 KB
/// (raw body, envelope without its data, headers): a 4 KiB page holds 3 of them and wastes a
/// fifth of itself, an 8 KiB one holds 7; fewer, fuller pages mean fewer WAL frames (two
/// writes each), less to checkpoint and fewer B-tree levels.
pub(super) const PRAGMAS: &str = "
    PRAGMA page_size = 8192;
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    PRAGMA busy_timeout = 5000;
";

/// The writer's WAL size limits, one number for two settings: the size at which the writer
/// checkpoints itself, as a backstop for the checkpoint thread (see `sqlite/checkpoint.rs`),
/// and `journal_size_limit`, the size SQLite cuts a larger WAL back to when it rewinds it.
/// They must agree: cutting tens of MiB of cached file is a 10-25 ms stall of the commit that
/// does it (seen with the backstop counted in pages, at twice the limit once pages were 8 KiB).
/// Under steady load the backstop is what rewinds the WAL (see `sqlite/mod.rs`), once per
/// 64 MiB; it costs a few pages and a short fsync then.
pub(super) const WAL_BACKSTOP_BYTES: i64 = 64 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,           -- arrival order
    source       TEXT    NOT NULL,              -- configured source name
    dedup_key    TEXT    NOT NULL,              -- = envelope id (forms: providers' envelope.rs)
    event_type   TEXT    NOT NULL,              -- envelope type, e.g. ledger.transaction.completed
    envelope     TEXT    NOT NULL,              -- CloudEvents structured JSON, see data_at
    raw_body     BLOB    NOT NULL,              -- bytes as received (signature re-check)
    headers      TEXT    NOT NULL,              -- JSON object: signature/event headers only
    received_at  INTEGER NOT NULL,              -- unix milliseconds
    status       TEXT    NOT NULL DEFAULT 'pending', -- unused: routing state is in `routings`
    -- When the envelope's `data` is a verbatim part of raw_body, `envelope` is stored without
    -- it: the value goes at byte data_at and is raw_body's data_len bytes from byte data_from
    -- (0-based). NULL: `envelope` is whole. Read envelopes through `stored_events`.
    data_at      INTEGER,
    data_from    INTEGER,
    data_len     INTEGER
);
-- Secondary indexes only on (column, seq) of the few-valued columns (events_source,
-- events_type, below): an insert touches the last leaf of its value's range, as the table's
-- own append does, never a random page. No index on the random dedup key: the dedup decision
-- uses an in-memory index rebuilt from this table.

-- The dedup index's entries (see store/dedup_index.rs): a cache of `events` so a start need
-- not read every event of the window. Appended in seq order; `key` = 16-byte SHA-256 prefix of
-- (source, dedup key), `seen` = received_at (unix ms). Pruned with the dedup window.
CREATE TABLE IF NOT EXISTS dedup_keys (
    seq   INTEGER PRIMARY KEY,                  -- events.seq
    key   BLOB    NOT NULL,
    seen  INTEGER NOT NULL
);

-- The admin API's search by subject (see store/dedup_index.rs): `hash` = the first 8 bytes of
-- SHA-256(subject), big-endian, for each event with a subject. Appended with the dedup index's
-- entries (so it covers every event up to the last saved `dedup_keys` seq), deleted with the
-- events (retention), never by the dedup window. A store created before it has
-- meta `subject_keys_from`: older events are not in it, and a search reads them.
CREATE TABLE IF NOT EXISTS subject_keys (
    seq   INTEGER PRIMARY KEY,                  -- events.seq
    hash  INTEGER NOT NULL
);

-- The latest stored state of each object of a provider that signs no event id (Ledig), for
-- telling its retries from new events (see store/object_states.rs). One row per (source,
-- object): `key` = 16-byte SHA-256 prefix of (source, object hash), `state` = 16-byte prefix
-- of the state's hash, `seen` = when that state arrived, `expires` = seen + the source's
-- retry window (unix ms). Written in the same transaction as the event; pruned once expired.
CREATE TABLE IF NOT EXISTS object_states (
    key      BLOB    PRIMARY KEY,
    state    BLOB    NOT NULL,
    seen     INTEGER NOT NULL,
    expires  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS object_states_expires ON object_states(expires);

-- What routing made of an event. A narrow table of its own, so recording a routing never
-- rewrites the (large) event row: an event without a row here is still `pending`.
CREATE TABLE IF NOT EXISTS routings (
    seq            INTEGER PRIMARY KEY,         -- events.seq
    status         TEXT    NOT NULL,            -- EventStatus other than pending
    plugin_results TEXT,                        -- JSON array of plugin steps
    processed_at   INTEGER NOT NULL             -- unix ms of the last routing
);
-- Replays are rare and marked by status, so this index holds only them.
CREATE INDEX IF NOT EXISTS routings_replay ON routings(seq) WHERE status = 'replay';
-- Every state but the common `routed` (failed, retrying, dropped, unrouted, replay), so the
-- admin API finds them without scanning every event; recording a routed event skips it.
CREATE INDEX IF NOT EXISTS routings_status ON routings(status, seq) WHERE status <> 'routed';

-- Authenticated bodies that could not be normalized (not JSON): kept until
-- store.quarantine_retention after they were last seen. A body a source sends again is
-- counted on its row (repeats, last_seen_at), not stored again.
-- Who replayed or redrove what, through the admin API (GET /admin/audit). Appended only.
CREATE TABLE IF NOT EXISTS admin_audit (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,                -- unix milliseconds
    actor      TEXT    NOT NULL,                -- the admin token's name
    action     TEXT    NOT NULL,                -- replay | redrive
    selection  TEXT    NOT NULL,                -- the filter, or the object's id
    count      INTEGER NOT NULL                 -- how many it marked
);

CREATE TABLE IF NOT EXISTS quarantine (
    id           INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL,
    reason       TEXT    NOT NULL,              -- of the first arrival, like headers
    raw_body     BLOB    NOT NULL,
    headers      TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,              -- unix ms, first arrival
    body_hash    BLOB,                          -- SHA-256 of raw_body; NULL on older rows
    repeats      INTEGER NOT NULL DEFAULT 1,    -- arrivals of this body from this source
    last_seen_at INTEGER                        -- unix ms, latest arrival; NULL: received_at
);

-- What routing made of each event: one row per (event, route, destination) that got a
-- delivery. Written in the same transaction that moves the event out of `pending`.
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL,           -- events.seq
    route           TEXT    NOT NULL,
    destination     TEXT    NOT NULL,
    webhook_id      TEXT    NOT NULL,           -- same on every attempt
    envelope        TEXT,                       -- what to send when it differs from the event's
                                                -- envelope (plugins changed it); NULL once delivered
    status          TEXT    NOT NULL,           -- pending | delivered | dead
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER,                    -- unix ms, while pending
    last_error      TEXT,
    history         TEXT    NOT NULL,           -- JSON array of attempts
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- Ordered delivery (a destination with ordering = subject, docs/ordering.md); NULL
    -- subject: delivered on its own. The ordering key is (order_at, order_next, event_seq, id).
    subject         TEXT,                       -- the envelope's subject
    order_at        INTEGER NOT NULL DEFAULT 0, -- the provider's time (unix ms), 0: none
    order_next      INTEGER NOT NULL DEFAULT 0, -- its tie-breaker (data.updatedAt), 0: none
    holds_subject   INTEGER NOT NULL DEFAULT 0, -- 1: dead and keeping its subject blocked
    -- The amount of what a dead delivery would send, written when it dies (store/
    -- dead_letters.rs, StuckAmount), so the dead-letter groups never read envelopes. Only
    -- read while status = 'dead'.
    amount          TEXT,                       -- exactly as the payload has it; NULL: none
    currency        TEXT,                       -- upper case; NULL: none named
    amount_units    INTEGER,                    -- amount = units / 10^scale, when a plain
    amount_scale    INTEGER                     -- decimal fitting an i64; else NULL
);
-- Partial indexes: only the rare rows (waiting, dead) are indexed, so a delivery that
-- succeeds at once costs no index write beyond `deliveries_by_event`.
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(id) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_seq);

-- A route's plugin stage that did not finish on the first run: waiting for a retry (the
-- plugin answered `retry`), dead (fatal, trap, timeout, or out of retries) or done.
CREATE TABLE IF NOT EXISTS route_runs (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL,
    route           TEXT    NOT NULL,
    status          TEXT    NOT NULL,           -- retry | dead | done
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER,
    reason          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS route_runs_due ON route_runs(next_attempt_at) WHERE status = 'retry';
CREATE INDEX IF NOT EXISTS route_runs_dead ON route_runs(id) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS route_runs_by_event ON route_runs(event_seq);

-- Events of a subject whose routing is not finished: stored and not routed yet, or waiting
-- for a plugin retry. Each holds the later deliveries of its subject to ordered destinations
-- (docs/ordering.md): until it is routed nobody knows whether it goes to them. Written with
-- the event (only events with a subject), deleted in the transaction that records its
-- routing, unless a route run of it is left waiting for a retry (then by that run's end).
-- The key is the deliveries' ordering key as ingest read it (before plugins).
CREATE TABLE IF NOT EXISTS unrouted_subjects (
    seq        INTEGER PRIMARY KEY,             -- events.seq
    subject    TEXT    NOT NULL,
    order_at   INTEGER NOT NULL,                -- as deliveries.order_at
    order_next INTEGER NOT NULL                 -- as deliveries.order_next
);
CREATE INDEX IF NOT EXISTS unrouted_subjects_key
    ON unrouted_subjects(subject, order_at, order_next, seq);

-- Small key/value facts; `probe` is rewritten by readiness checks, `intake_watermark` says
-- every event at or below it has been routed.
CREATE TABLE IF NOT EXISTS meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
";

/// The views, recreated at every open so a store made by an older version gets this
/// version's definitions.
const VIEWS: &str = "
DROP VIEW IF EXISTS event_states;
DROP VIEW IF EXISTS stored_events;
-- Events with their whole envelope (`data` put back from raw_body where it was left out).
-- substr on BLOBs counts bytes; the cuts sit at JSON punctuation, so the pieces are UTF-8.
CREATE VIEW stored_events AS
    SELECT seq, source, dedup_key, event_type,
           CASE WHEN data_at IS NULL THEN envelope
                ELSE CAST(substr(CAST(envelope AS BLOB), 1, data_at)
                          || substr(raw_body, data_from + 1, data_len)
                          || substr(CAST(envelope AS BLOB), data_at + 1) AS TEXT)
           END AS envelope,
           raw_body, headers, received_at
    FROM events;
-- Every event with its routing state, for listings and filters.
CREATE VIEW event_states AS
    SELECT e.seq, e.dedup_key, e.source, e.event_type, e.received_at, e.envelope, e.headers,
           coalesce(r.status, 'pending') AS status, r.plugin_results, r.processed_at
    FROM stored_events e LEFT JOIN routings r ON r.seq = e.seq;
";

/// Columns added to `events` after its first release, added to older stores at open.
const ADDED_EVENT_COLUMNS: [&str; 3] = ["data_at", "data_from", "data_len"];

/// Columns added to `quarantine` after its first release (name, definition), added to older
/// stores at open. Their rows keep `body_hash` NULL: a repeat of one is stored once more, then
/// counted.
const ADDED_QUARANTINE_COLUMNS: [(&str, &str); 3] = [
    ("body_hash", "BLOB"),
    ("repeats", "INTEGER NOT NULL DEFAULT 1"),
    ("last_seen_at", "INTEGER"),
];

/// Columns added to `deliveries` after its first release (name, definition), added to older
/// stores at open: their deliveries are all unordered.
const ADDED_DELIVERY_COLUMNS: [(&str, &str); 8] = [
    ("subject", "TEXT"),
    ("order_at", "INTEGER NOT NULL DEFAULT 0"),
    ("order_next", "INTEGER NOT NULL DEFAULT 0"),
    ("holds_subject", "INTEGER NOT NULL DEFAULT 0"),
    ("amount", "TEXT"),
    ("currency", "TEXT"),
    ("amount_units", "INTEGER"),
    ("amount_scale", "INTEGER"),
];

/// The dead-letter groups' aggregate (`dead_letters::GROUP_ROWS_SQL`) read from the index
/// alone, in group order. Partial: a delivery enters it only when it dies, so the ack and a
/// delivery that succeeds never write it.
const DEAD_GROUPS_INDEX: &str = "
CREATE INDEX IF NOT EXISTS deliveries_dead_groups
    ON deliveries(destination, last_error, currency, amount_scale, updated_at, amount_units,
                  amount)
    WHERE status = 'dead';
";

/// The ordered deliveries of each (destination, subject) in order: all of them (the stale
/// test looks for a later delivered one) and those that hold what comes after them (the
/// claim's "nothing earlier is waiting" test, which must not walk a subject's delivered
/// history: that made each claim cost O(history) per candidate); and the due ones of each kind apart, so a subject held behind a
/// dead letter (its later deliveries stay due) is never scanned by the unordered claim.
/// Created after the columns exist.
const DELIVERY_ORDER_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS deliveries_ordered
    ON deliveries(destination, subject, order_at, order_next, event_seq, id)
    WHERE subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_holding
    ON deliveries(destination, subject, order_at, order_next, event_seq, id)
    WHERE subject IS NOT NULL
      AND (status = 'pending' OR (status = 'dead' AND holds_subject = 1));
CREATE INDEX IF NOT EXISTS deliveries_due_ordered ON deliveries(next_attempt_at)
    WHERE status = 'pending' AND subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_due_unordered ON deliveries(next_attempt_at)
    WHERE status = 'pending' AND subject IS NULL;
";

/// The admin API's filters by source and type (docs/console.md, "How fast"): each entry
/// ends with the seq, so the newest matches come first and an ack appends to the end of its
/// value's range (a few hot pages; see `docs/console.md` for what they cost the ack).
/// Created at the first open of an older store (about 1.5 s per million events).
const EVENT_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS events_source ON events(source, seq);
CREATE INDEX IF NOT EXISTS events_type ON events(event_type, seq);
";

/// Finds a quarantined body's row by content; created after the columns exist.
const QUARANTINE_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS quarantine_body ON quarantine(source, body_hash);";

/// Creates or upgrades the schema, in one transaction.
pub(super) fn apply(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let subject_keys_existed: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'subject_keys'",
        [],
        |r| r.get(0),
    )?;
    tx.execute_batch(SCHEMA)?;
    if !subject_keys_existed {
        // Events up to the last saved dedup entry were saved without their subject; the
        // ones after it are saved again, with it, when the dedup index loads.
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) \
             SELECT 'subject_keys_from', coalesce(max(seq), 0) + 1 FROM dedup_keys",
            [],
        )?;
    }
    for column in ADDED_EVENT_COLUMNS {
        let present: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('events') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !present {
            tx.execute_batch(&format!("ALTER TABLE events ADD COLUMN {column} INTEGER"))?;
        }
    }
    for (column, definition) in ADDED_QUARANTINE_COLUMNS {
        let present: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('quarantine') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !present {
            tx.execute_batch(&format!(
                "ALTER TABLE quarantine ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    let mut amounts_added = false;
    for (column, definition) in ADDED_DELIVERY_COLUMNS {
        let present: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('deliveries') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !present {
            tx.execute_batch(&format!(
                "ALTER TABLE deliveries ADD COLUMN {column} {definition}"
            ))?;
            amounts_added |= column == "amount";
        }
    }
    tx.execute_batch(QUARANTINE_INDEX)?;
    tx.execute_batch(EVENT_INDEXES)?;
    tx.execute_batch(DELIVERY_ORDER_INDEXES)?;
    tx.execute_batch(VIEWS)?;
    if amounts_added {
        backfill_stuck_amounts(&tx)?;
    }
    tx.execute_batch(DEAD_GROUPS_INDEX)?;
    tx.commit()
}

/// Writes the amount of every dead delivery of a store older than the amount columns (read
/// from the envelope each would send, as when one dies now), so the groups' sums include
/// them. Once, at the first open by this version.
fn backfill_stuck_amounts(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    // A page at a time: a store may hold millions of dead deliveries, and their envelopes must
    // not all be in memory at once.
    const PAGE: i64 = 1000;
    let mut read = tx.prepare(
        "SELECT d.id, coalesce(d.envelope, e.envelope) FROM deliveries d \
         JOIN stored_events e ON e.seq = d.event_seq \
         WHERE d.status = 'dead' AND d.id > ?1 ORDER BY d.id LIMIT ?2",
    )?;
    let mut write = tx.prepare(
        "UPDATE deliveries SET amount = ?2, currency = ?3, amount_units = ?4, \
         amount_scale = ?5 WHERE id = ?1",
    )?;
    let mut after = 0_i64;
    loop {
        let dead: Vec<(i64, String)> = read
            .query_map(rusqlite::params![after, PAGE], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(&(last, _)) = dead.last() else {
            return Ok(());
        };
        after = last;
        for (id, envelope) in dead {
            let stuck = super::stuck_amount::StuckAmount::of_envelope(&envelope);
            let (amount, currency, units, scale) =
                super::stuck_amount::stuck_columns(stuck.as_ref());
            if amount.is_some() {
                write.execute(rusqlite::params![id, amount, currency, units, scale])?;
            }
        }
    }
}

pub(super) const INSERT_EVENT: &str = "INSERT INTO events \
     (source, dedup_key, event_type, envelope, raw_body, headers, received_at, \
      data_at, data_from, data_len) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
/// An event's ordering key, while its routing is not finished (see `unrouted_subjects`).
pub(super) const INSERT_UNROUTED_SUBJECT: &str = "INSERT INTO unrouted_subjects \
     (seq, subject, order_at, order_next) VALUES (?1, ?2, ?3, ?4)";
/// Its routing committed (?1 the seq): the hold ends unless a route run waits for a retry.
pub(super) const FINISH_UNROUTED_SUBJECT: &str = "DELETE FROM unrouted_subjects WHERE seq = ?1 \
     AND NOT EXISTS (SELECT 1 FROM route_runs WHERE event_seq = ?1 AND status = 'retry')";
pub(super) const INSERT_QUARANTINE: &str = "INSERT INTO quarantine \
     (source, reason, raw_body, headers, received_at, body_hash, last_seen_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)";
/// Counts one more arrival of a quarantined body (source ?1, SHA-256 ?2, at ?3) on its newest
/// row; changes nothing when the body is not there yet.
pub(super) const REPEAT_QUARANTINE: &str = "UPDATE quarantine \
     SET repeats = repeats + 1, last_seen_at = max(coalesce(last_seen_at, received_at), ?3) \
     WHERE id = (SELECT max(id) FROM quarantine WHERE source = ?1 AND body_hash = ?2)";
pub(super) const WRITE_PROBE: &str =
    "INSERT INTO meta (key, value) VALUES ('probe', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1";

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// A store opened by a version without the dead deliveries' amount columns gets them at its
    /// next open, with the amounts of the deliveries already dead (the groups sum them).
    #[test]
    fn dead_deliveries_of_an_older_store_get_their_amounts_at_open() -> rusqlite::Result<()> {
        let conn = Connection::open_in_memory()?;
        super::apply(&conn)?;
        conn.execute_batch(
            r#"INSERT INTO events (seq, source, dedup_key, event_type, envelope, raw_body,
                 headers, received_at)
               VALUES (1, 's', 'a', 't', '{"data":{"amount":"12.30","coin":"usdt"}}', x'', '{}', 1),
                      (2, 's', 'b', 't', '{"data":{}}', x'', '{}', 2);
               INSERT INTO deliveries (event_seq, route, destination, webhook_id, envelope, status,
                 attempts, last_error, history, created_at, updated_at)
               VALUES (1, 'r', 'd', 'w1', NULL, 'dead', 3, 'HTTP 503', '[]', 1, 1),
                      (2, 'r', 'd', 'w2', '{"data":{"amount":"-5"}}', 'dead', 3, 'x', '[]', 1, 1),
                      (1, 'r', 'd', 'w3', NULL, 'delivered', 1, NULL, '[]', 1, 1);
               DROP INDEX deliveries_dead_groups;
               ALTER TABLE deliveries DROP COLUMN amount;
               ALTER TABLE deliveries DROP COLUMN currency;
               ALTER TABLE deliveries DROP COLUMN amount_units;
               ALTER TABLE deliveries DROP COLUMN amount_scale;"#,
        )?;
        super::apply(&conn)?;
        let rows = conn
            .prepare(
                "SELECT webhook_id, amount, currency, amount_units, amount_scale FROM deliveries \
                 ORDER BY id",
            )?
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            rows,
            [
                (
                    "w1".into(),
                    some("12.30"),
                    some("USDT"),
                    Some(1230),
                    Some(2)
                ),
                // The envelope it would send (changed by a plugin), not the event's.
                ("w2".into(), some("-5"), None, Some(-5), Some(0)),
                ("w3".into(), None, None, None, None),
            ]
        );
        // The groups' aggregate reads the index alone, already in group order.
        let plan = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                super::super::dead_letters::GROUP_ROWS_SQL
            ))?
            .query_map([], |r| r.get::<_, String>(3))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .join("; ");
        assert_eq!(
            plan,
            "SCAN deliveries USING COVERING INDEX deliveries_dead_groups"
        );
        Ok(())
    }
}
