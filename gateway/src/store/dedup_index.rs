//! The dedup index: which (source, dedup key) pairs are already stored, kept in memory by the
//! writer thread and rebuilt at start.
//!
//! Why in memory: dedup keys are random, so an on-disk B-tree over them dirties one random
//! page per event, and SQLite's WAL writes whole pages: 4-8 KiB written per ~1 KiB event. With
//! the index in memory an event is one append to `events`, which is the durable record the
//! index is rebuilt from. Entries are 16-byte SHA-256 prefixes of the key (a collision needs
//! ~2^64 events) plus the first-seen time for pruning: about 40 bytes per event in the window.
//!
//! Why the `dedup_keys` table: rebuilding from `events` alone reads every stored byte of the
//! window (bodies and envelopes; 2.8 GB and ~10 s for 2 M events here), so a restart of a busy
//! gateway would take minutes. The writer therefore also appends the index entries to
//! `dedup_keys` (24 bytes each, in seq order, a few hundred per write, riding an ordinary batch
//! commit), and a start reads that table plus only the events after the last saved seq. The
//! table is a cache of `events`, never the truth: entries not yet saved at a crash are found
//! again in that tail, and a store from before the table existed is indexed from `events`
//! once, at its first start.
//!
//! The same saves write `subject_keys`: a 64-bit hash of each saved event's subject
//! (`event_filter::search_key`), for the admin API's search by subject (no index on the
//! random subject either, for the same reason; the narrow table is scanned, as the id search
//! scans `dedup_keys`). Unlike `dedup_keys` it is kept as long as the events, not the dedup
//! window.
//!
//! Why sharded: a hash map grows by moving every entry at once. In one map that stalled the
//! writer, and with it every ack, each time the window's key count passed a power of two
//! (inserting 8 M random keys 16 at a time, as commits do: the worst 16 took 244 ms, at the
//! growth past ~7.3 M). In 64 maps chosen by the key's first byte (uniform: SHA-256 output)
//! a growth moves 1/64 of the keys: the worst 16 took 5 ms, and the whole run was faster.

use super::DedupPruneStep;
use super::event_filter::search_key;
use rusqlite::types::Type;
use rusqlite::{Connection, Transaction, params};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub(super) type IndexKey = [u8; 16];

/// Entries are saved once this many are waiting, or once the oldest waited this long.
const SAVE_AFTER_ENTRIES: usize = 256;
const SAVE_AFTER: Duration = Duration::from_secs(1);
/// Rows per transaction when a start saves a long tail (a store indexed for the first time).
const SAVE_CHUNK: usize = 50_000;
/// Pruning deletes saved entries in seq order up to the first one this much younger than the
/// cutoff: `received_at` is not strictly monotonic in seq (requests wait for the writer), so
/// this margin keeps the delete a prefix of the table without a second index.
const PRUNE_MARGIN_MS: i64 = 10 * 60 * 1000;
/// Saved entries looked at per pruning step. Deleting an hour's entries at once would hold the
/// writer, so every ack, ~0.2 s per million entries (an hour at ~280 events/s); 20,000 take
/// ~5 ms (the SELECT and the range DELETE, measured on a 2 M-entry table).
const PRUNE_ROWS: i64 = 20_000;

pub(super) fn index_key(source: &str, dedup_key: &str) -> IndexKey {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(dedup_key.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Maps the index is split into; see the module docs.
const SHARDS: usize = 64;

/// Key -> first seen (unix ms), in [`SHARDS`] maps chosen by the key's first byte.
#[derive(Debug)]
struct Shards(Vec<HashMap<IndexKey, i64>>);

impl Shards {
    fn with_capacity(keys: usize) -> Self {
        Self(
            (0..SHARDS)
                .map(|_| HashMap::with_capacity(keys.div_ceil(SHARDS)))
                .collect(),
        )
    }

    fn slot(key: &IndexKey) -> usize {
        usize::from(key[0]) % SHARDS
    }

    fn contains(&self, key: &IndexKey) -> bool {
        self.0[Self::slot(key)].contains_key(key)
    }

    /// Records `key` as first seen at `at`, unless it is already known.
    fn insert(&mut self, key: IndexKey, at: i64) {
        self.0[Self::slot(&key)].entry(key).or_insert(at);
    }

    fn len(&self) -> usize {
        self.0.iter().map(HashMap::len).sum()
    }
}

impl Default for Shards {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// One committed event's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) seq: i64,
    pub(super) key: IndexKey,
    /// First seen (unix ms).
    pub(super) at: i64,
    /// `event_filter::search_key` of the event's subject, if it has one.
    pub(super) subject: Option<i64>,
}

#[derive(Debug, Default)]
pub(super) struct DedupIndex {
    seen: Shards,
    /// Committed entries not yet in `dedup_keys`, in seq order.
    unsaved: Vec<Entry>,
    /// When the oldest of `unsaved` was committed.
    unsaved_since: Option<Instant>,
    /// Where the pruning pass under way stands.
    pruning: PruneProgress,
}

/// A pruning pass's position: the saved entries are walked in seq order, the maps one per
/// step.
#[derive(Debug, Default)]
struct PruneProgress {
    /// The last saved entry looked at (0: from the start).
    after_seq: i64,
    /// Saved entries need no more looking at in this pass.
    table_done: bool,
    /// Maps already pruned in this pass.
    shards_done: usize,
}

/// How a start rebuilt the index, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loaded {
    /// Entries read from `dedup_keys`.
    pub(super) saved: usize,
    /// Events read from `events` after the last saved seq (and saved now).
    pub(super) tail: usize,
}

impl DedupIndex {
    /// Rebuilds the index from every stored event received at or after `cutoff_ms`: the saved
    /// entries, then the events after them, whose entries are saved before this returns.
    pub(super) fn load(conn: &mut Connection, cutoff_ms: i64) -> rusqlite::Result<(Self, Loaded)> {
        // Sized up front (max - min seq bounds the rows): growing the map step by step made
        // a start ~10% slower.
        let rows: i64 = conn.query_row(
            "SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM dedup_keys",
            [],
            |r| r.get(0),
        )?;
        let mut seen = Shards::with_capacity(usize::try_from(rows).unwrap_or(0));
        let mut saved_through = 0_i64;
        let mut saved = 0;
        {
            let mut stmt = conn.prepare("SELECT seq, key, seen FROM dedup_keys")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                saved_through = saved_through.max(seq);
                let at: i64 = row.get(2)?;
                // Only this code writes the table; a blob of another size means the file was
                // changed behind our back, and skipping it would forget a key: refuse.
                let key: IndexKey = row.get::<_, Vec<u8>>(1)?.try_into().map_err(|blob| {
                    let message =
                        format!("dedup_keys row {seq}: {} bytes, not 16", Vec::len(&blob));
                    rusqlite::Error::FromSqlConversionFailure(1, Type::Blob, message.into())
                })?;
                if at >= cutoff_ms {
                    seen.insert(key, at);
                    saved += 1;
                }
            }
        }
        let mut tail = Vec::new();
        {
            // The subject is read from the whole envelope (`stored_events` puts `data` back;
            // the row's own text is not JSON without it).
            let mut stmt = conn.prepare(
                "SELECT seq, source, dedup_key, received_at, json_extract(envelope, '$.subject') \
                 FROM stored_events WHERE seq > ?1 ORDER BY seq",
            )?;
            let mut rows = stmt.query([saved_through])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let source: String = row.get(1)?;
                let key: String = row.get(2)?;
                let at: i64 = row.get(3)?;
                let subject = match row.get_ref(4)? {
                    rusqlite::types::ValueRef::Text(t) if !t.is_empty() => {
                        Some(search_key(&String::from_utf8_lossy(t)))
                    }
                    _ => None,
                };
                tail.push(Entry {
                    seq,
                    key: index_key(&source, &key),
                    at,
                    subject,
                });
            }
        }
        for chunk in tail.chunks(SAVE_CHUNK) {
            let tx = conn.transaction()?;
            save(&tx, chunk)?;
            tx.commit()?;
        }
        for e in &tail {
            if e.at >= cutoff_ms {
                seen.insert(e.key, e.at);
            }
        }
        let loaded = Loaded {
            saved,
            tail: tail.len(),
        };
        let index = Self {
            seen,
            unsaved: Vec::new(),
            unsaved_since: None,
            pruning: PruneProgress::default(),
        };
        Ok((index, loaded))
    }

    pub(super) fn contains(&self, key: &IndexKey) -> bool {
        self.seen.contains(key)
    }

    /// Records the entries of events that were committed.
    pub(super) fn extend(&mut self, committed: Vec<Entry>) {
        if committed.is_empty() {
            return;
        }
        for e in &committed {
            self.seen.insert(e.key, e.at);
        }
        self.unsaved_since.get_or_insert_with(Instant::now);
        self.unsaved.extend(committed);
    }

    /// Writes the waiting entries into `tx` when enough have gathered; returns how many, to
    /// pass to [`DedupIndex::saved`] once `tx` committed (they stay waiting if it does not).
    pub(super) fn save_due(&self, tx: &Transaction<'_>) -> rusqlite::Result<usize> {
        let due = self.unsaved.len() >= SAVE_AFTER_ENTRIES
            || self
                .unsaved_since
                .is_some_and(|t| t.elapsed() >= SAVE_AFTER);
        if !due {
            return Ok(0);
        }
        save(tx, &self.unsaved)?;
        Ok(self.unsaved.len())
    }

    /// The first `n` waiting entries are in the database now.
    pub(super) fn saved(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.unsaved.drain(..n.min(self.unsaved.len()));
        self.unsaved_since = (!self.unsaved.is_empty()).then(Instant::now);
    }

    /// One step of forgetting the keys first seen before `cutoff_ms`: up to [`PRUNE_ROWS`]
    /// saved entries (within `tx`) and one of the maps. A pass repeats it until `done`; the
    /// next pass starts over. Saved entries are deleted in seq order until the first one
    /// [`PRUNE_MARGIN_MS`] younger than the cutoff (an older one left behind is harmless: a
    /// start skips entries older than the cutoff). If `tx` fails, the memory may already be
    /// pruned and the entries not: also harmless, for the same reason.
    pub(super) fn prune_step(
        &mut self,
        tx: &Transaction<'_>,
        cutoff_ms: i64,
    ) -> rusqlite::Result<DedupPruneStep> {
        if !self.pruning.table_done {
            self.prune_saved_step(tx, cutoff_ms)?;
        }
        let mut forgotten = 0;
        if let Some(shard) = self.seen.0.get_mut(self.pruning.shards_done) {
            let before = shard.len();
            shard.retain(|_, at| *at >= cutoff_ms);
            forgotten = u64::try_from(before - shard.len()).unwrap_or(u64::MAX);
            self.pruning.shards_done += 1;
        }
        let done = self.pruning.table_done && self.pruning.shards_done >= SHARDS;
        if done {
            self.pruning = PruneProgress::default();
        }
        Ok(DedupPruneStep { forgotten, done })
    }

    /// The saved-entries part of [`DedupIndex::prune_step`]: the next [`PRUNE_ROWS`] after
    /// where the pass stands, up to the first young one.
    fn prune_saved_step(&mut self, tx: &Transaction<'_>, cutoff_ms: i64) -> rusqlite::Result<()> {
        let young_from = cutoff_ms.saturating_add(PRUNE_MARGIN_MS);
        let after = self.pruning.after_seq;
        let mut last = None;
        let mut looked = 0;
        let mut reached_young = false;
        let mut stmt = tx.prepare_cached(
            "SELECT seq, seen FROM dedup_keys WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![after, PRUNE_ROWS])?;
        while let Some(row) = rows.next()? {
            looked += 1;
            if row.get::<_, i64>(1)? >= young_from {
                reached_young = true;
                break;
            }
            last = Some(row.get::<_, i64>(0)?);
        }
        drop(rows);
        if let Some(last) = last {
            tx.prepare_cached("DELETE FROM dedup_keys WHERE seq > ?1 AND seq <= ?2 AND seen < ?3")?
                .execute(params![after, last, cutoff_ms])?;
            self.pruning.after_seq = last;
        }
        self.pruning.table_done = reached_young || looked < PRUNE_ROWS;
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Rows per multi-row INSERT when saving: one statement step for many rows, since saving
/// runs on the writer thread every ack waits for (within SQLite's default 999 parameters).
/// Only full groups use it, the rest go one by one: two statement texts per table, so the
/// connection's statement cache keeps the writer's other statements.
const ROWS_PER_INSERT: usize = 64;

fn save(tx: &Transaction<'_>, entries: &[Entry]) -> rusqlite::Result<()> {
    use rusqlite::types::ToSql;
    let keys: Vec<[&dyn ToSql; 3]> = entries
        .iter()
        .map(|e| [&e.seq as &dyn ToSql, &e.key, &e.at])
        .collect();
    insert_rows(tx, "dedup_keys (seq, key, seen)", &keys)?;
    let subjects: Vec<[&dyn ToSql; 2]> = entries
        .iter()
        .filter_map(|e| e.subject.as_ref().map(|hash| [&e.seq as &dyn ToSql, hash]))
        .collect();
    insert_rows(tx, "subject_keys (seq, hash)", &subjects)
}

/// `INSERT OR IGNORE INTO target` of `rows`, [`ROWS_PER_INSERT`] at a time.
fn insert_rows<const N: usize>(
    tx: &Transaction<'_>,
    target: &str,
    rows: &[[&dyn rusqlite::types::ToSql; N]],
) -> rusqlite::Result<()> {
    let values = |n: usize| {
        let row = format!("({})", vec!["?"; N].join(", "));
        format!(
            "INSERT OR IGNORE INTO {target} VALUES {}",
            vec![row.as_str(); n].join(", ")
        )
    };
    let mut groups = rows.chunks_exact(ROWS_PER_INSERT);
    for group in groups.by_ref() {
        let params: Vec<_> = group.iter().flatten().copied().collect();
        tx.prepare_cached(&values(ROWS_PER_INSERT))?
            .execute(params.as_slice())?;
    }
    let mut one = tx.prepare_cached(&values(1))?;
    for row in groups.remainder() {
        one.execute(row.as_slice())?;
    }
    Ok(())
}

/// Keys first stored within the batch being applied (not yet committed).
#[derive(Debug, Default)]
pub(super) struct BatchKeys {
    keys: HashSet<IndexKey>,
    pub(super) committed: Vec<Entry>,
}

impl BatchKeys {
    pub(super) fn contains(&self, key: &IndexKey) -> bool {
        self.keys.contains(key)
    }

    pub(super) fn add(&mut self, entry: Entry) {
        self.keys.insert(entry.key);
        self.committed.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    fn entry(seq: i64, key: IndexKey, at: i64) -> Entry {
        Entry {
            seq,
            key,
            at,
            subject: None,
        }
    }

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("g.db")).expect("opens");
        schema::apply(&conn).expect("schema");
        (dir, conn)
    }

    fn insert_event(conn: &Connection, key: &str, at: i64) -> i64 {
        conn.prepare_cached(schema::INSERT_EVENT)
            .expect("prepares")
            .insert(params![
                "ledger",
                key,
                "t",
                "{}",
                &b"{}"[..],
                "{}",
                at,
                None::<i64>,
                None::<i64>,
                None::<i64>
            ])
            .expect("inserts")
    }

    /// A whole pruning pass, as `retention` runs it: steps until done. Returns the keys
    /// forgotten and the steps taken.
    fn prune_pass(index: &mut DedupIndex, tx: &Transaction<'_>, cutoff: i64) -> (u64, usize) {
        let (mut forgotten, mut steps) = (0, 0);
        loop {
            let step = index.prune_step(tx, cutoff).expect("prunes");
            forgotten += step.forgotten;
            steps += 1;
            if step.done {
                return (forgotten, steps);
            }
        }
    }

    fn saved_rows(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM dedup_keys", [], |r| r.get(0))
            .expect("counts")
    }

    #[test]
    fn a_start_reads_saved_entries_and_only_the_events_after_them() {
        let (_dir, mut conn) = store();
        for key in ["a", "b", "c"] {
            insert_event(&conn, key, 1_000);
        }
        // A store from before the table: indexed from `events` once, and saved.
        let (index, loaded) = DedupIndex::load(&mut conn, 0).expect("loads");
        assert_eq!(loaded, Loaded { saved: 0, tail: 3 });
        assert_eq!(saved_rows(&conn), 3);
        assert!(index.contains(&index_key("ledger", "a")));

        // The next start takes the first three from the table: rewriting an event's key
        // behind the index's back does not change what it knows of it.
        conn.execute(
            "UPDATE events SET dedup_key = 'changed' WHERE dedup_key = 'a'",
            [],
        )
        .expect("updates");
        insert_event(&conn, "d", 2_000);
        let (index, loaded) = DedupIndex::load(&mut conn, 0).expect("loads");
        assert_eq!(loaded, Loaded { saved: 3, tail: 1 });
        assert!(index.contains(&index_key("ledger", "a")));
        assert!(!index.contains(&index_key("ledger", "changed")));
        assert!(index.contains(&index_key("ledger", "d")));
        assert_eq!(saved_rows(&conn), 4);

        // Entries older than the cutoff are not loaded, from either place.
        insert_event(&conn, "e", 500);
        let (index, loaded) = DedupIndex::load(&mut conn, 1_500).expect("loads");
        assert_eq!(loaded, Loaded { saved: 1, tail: 1 });
        assert_eq!(index.len(), 1);
        assert!(index.contains(&index_key("ledger", "d")));
    }

    #[test]
    fn entries_are_saved_in_groups_and_only_by_a_commit() {
        let (_dir, mut conn) = store();
        let (mut index, _) = DedupIndex::load(&mut conn, 0).expect("loads");
        let one = |seq: i64| entry(seq, index_key("ledger", &seq.to_string()), 1_000);
        index.extend((1..SAVE_AFTER_ENTRIES as i64).map(one).collect());
        let tx = conn.transaction().expect("begins");
        assert_eq!(index.save_due(&tx).expect("saves"), 0, "not enough yet");
        drop(tx);

        index.extend(vec![one(SAVE_AFTER_ENTRIES as i64)]);
        let tx = conn.transaction().expect("begins");
        assert_eq!(index.save_due(&tx).expect("saves"), SAVE_AFTER_ENTRIES);
        drop(tx); // rolled back: nothing saved, nothing forgotten
        assert_eq!(saved_rows(&conn), 0);
        let tx = conn.transaction().expect("begins");
        let n = index.save_due(&tx).expect("saves");
        tx.commit().expect("commits");
        index.saved(n);
        assert_eq!(saved_rows(&conn), SAVE_AFTER_ENTRIES as i64);
        assert!(index.unsaved.is_empty() && index.unsaved_since.is_none());

        // A single entry waits at most SAVE_AFTER.
        index.extend(vec![one(1_000)]);
        let tx = conn.transaction().expect("begins");
        assert_eq!(index.save_due(&tx).expect("saves"), 0);
        index.unsaved_since = Instant::now().checked_sub(SAVE_AFTER);
        assert_eq!(index.save_due(&tx).expect("saves"), 1);
        tx.commit().expect("commits");
        index.saved(1);
        assert_eq!(saved_rows(&conn), SAVE_AFTER_ENTRIES as i64 + 1);
    }

    #[test]
    fn pruning_forgets_old_keys_in_memory_and_in_the_table() {
        let (_dir, mut conn) = store();
        let now = 10_000_000_000;
        for (key, at) in [
            ("old", now - 7_200_000),
            ("late", now - 7_100_000),
            ("new", now),
        ] {
            insert_event(&conn, key, at);
        }
        let (mut index, _) = DedupIndex::load(&mut conn, 0).expect("loads");
        let tx = conn.transaction().expect("begins");
        let cutoff = now - 7_150_000;
        assert_eq!(prune_pass(&mut index, &tx, cutoff), (1, SHARDS));
        tx.commit().expect("commits");
        assert!(!index.contains(&index_key("ledger", "old")));
        assert!(index.contains(&index_key("ledger", "late")));
        assert_eq!(saved_rows(&conn), 2);
        let (index, loaded) = DedupIndex::load(&mut conn, cutoff).expect("loads");
        assert_eq!(loaded, Loaded { saved: 2, tail: 0 });
        assert!(!index.contains(&index_key("ledger", "old")));
    }

    #[test]
    fn keys_spread_over_every_shard_and_each_is_found_kept_first_and_pruned() {
        let (_dir, mut conn) = store();
        let (mut index, _) = DedupIndex::load(&mut conn, 0).expect("loads");
        let key = |i: i64| index_key("ledger", &format!("evt_{i}"));
        // Even keys first seen at 1_000, odd ones at 2_000.
        index.extend(
            (0..10_000)
                .map(|i| entry(i, key(i), 1_000 + (i % 2) * 1_000))
                .collect(),
        );
        assert!(
            index.seen.0.iter().all(|shard| !shard.is_empty()),
            "every shard used"
        );
        assert_eq!(index.len(), 10_000);
        assert!((0..10_000).all(|i| index.contains(&key(i))));
        assert!(!index.contains(&key(10_000)));

        // A key seen again keeps its first-seen time, so it is pruned on that time.
        index.extend(vec![entry(10_001, key(0), 5_000)]);
        assert_eq!(index.len(), 10_000);
        let tx = conn.transaction().expect("begins");
        assert_eq!(prune_pass(&mut index, &tx, 1_500).0, 5_000);
        assert!((0..10_000).all(|i| index.contains(&key(i)) == (i % 2 == 1)));
    }

    #[test]
    fn pruning_walks_the_saved_entries_a_bounded_step_at_a_time() {
        let (_dir, mut conn) = store();
        let (mut index, _) = DedupIndex::load(&mut conn, 0).expect("loads");
        // 2.5 steps' worth of old entries, then young ones (a whole margin younger).
        let old = 2 * PRUNE_ROWS + PRUNE_ROWS / 2;
        let cutoff = 10_000_000;
        let entries: Vec<Entry> = (1..=old + 100)
            .map(|seq| {
                let at = if seq <= old {
                    cutoff - 1
                } else {
                    cutoff + PRUNE_MARGIN_MS
                };
                entry(seq, index_key("ledger", &seq.to_string()), at)
            })
            .collect();
        let tx = conn.transaction().expect("begins");
        save(&tx, &entries).expect("saves");
        index.extend(entries);
        let mut left = Vec::new();
        loop {
            let step = index.prune_step(&tx, cutoff).expect("prunes");
            left.push(
                tx.query_row("SELECT count(*) FROM dedup_keys", [], |r| {
                    r.get::<_, i64>(0)
                })
                .expect("counts"),
            );
            if step.done {
                break;
            }
        }
        tx.commit().expect("commits");
        // Each step deletes at most PRUNE_ROWS saved entries; the pass visits every map.
        assert_eq!(
            left[..3],
            [old + 100 - PRUNE_ROWS, 100 + PRUNE_ROWS / 2, 100]
        );
        assert_eq!(left.len(), SHARDS);
        assert_eq!(index.len(), 100);
        assert_eq!(saved_rows(&conn), 100);
        // A pass with nothing older than the cutoff finds that out in one look per map.
        let tx = conn.transaction().expect("begins");
        assert_eq!(prune_pass(&mut index, &tx, cutoff), (0, SHARDS));
    }
}
