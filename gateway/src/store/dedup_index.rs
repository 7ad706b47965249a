//! The dedup index: which (source, dedup key) pairs are already stored, kept in memory by the
//! writer thread and rebuilt from the `events` table at start.
//!
//! Why in memory: dedup keys are random, so an on-disk B-tree over them dirties one random
//! page per event, and SQLite's WAL writes whole pages: ~4 KiB written per ~1 KiB event. With
//! the index in memory an event is one append to `events`, which is the durable record the
//! index is rebuilt from. Entries are 16-byte SHA-256 prefixes of the key (a collision needs
//! ~2^64 events) plus the first-seen time for pruning: about 40 bytes per event in the window.

use rusqlite::Connection;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};

pub(super) type IndexKey = [u8; 16];

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

#[derive(Debug, Default)]
pub(super) struct DedupIndex {
    /// Key -> first seen (unix ms).
    seen: HashMap<IndexKey, i64>,
}

impl DedupIndex {
    /// Rebuilds the index from every stored event received at or after `cutoff_ms`.
    pub(super) fn load(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<Self> {
        let mut stmt = conn
            .prepare("SELECT source, dedup_key, received_at FROM events WHERE received_at >= ?1")?;
        let mut rows = stmt.query([cutoff_ms])?;
        let mut seen = HashMap::new();
        while let Some(row) = rows.next()? {
            let source: String = row.get(0)?;
            let key: String = row.get(1)?;
            let at: i64 = row.get(2)?;
            seen.entry(index_key(&source, &key)).or_insert(at);
        }
        Ok(Self { seen })
    }

    pub(super) fn contains(&self, key: &IndexKey) -> bool {
        self.seen.contains_key(key)
    }

    /// Records keys whose events were committed.
    pub(super) fn extend(&mut self, committed: impl IntoIterator<Item = (IndexKey, i64)>) {
        for (key, at) in committed {
            self.seen.entry(key).or_insert(at);
        }
    }

    /// Forgets keys first seen before `cutoff_ms`; returns how many.
    pub(super) fn prune(&mut self, cutoff_ms: i64) -> u64 {
        let before = self.seen.len();
        self.seen.retain(|_, at| *at >= cutoff_ms);
        u64::try_from(before - self.seen.len()).unwrap_or(u64::MAX)
    }

    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Keys first stored within the batch being applied (not yet committed).
#[derive(Debug, Default)]
pub(super) struct BatchKeys {
    keys: HashSet<IndexKey>,
    pub(super) committed: Vec<(IndexKey, i64)>,
}

impl BatchKeys {
    pub(super) fn contains(&self, key: &IndexKey) -> bool {
        self.keys.contains(key)
    }

    pub(super) fn add(&mut self, key: IndexKey, at: i64) {
        self.keys.insert(key);
        self.committed.push((key, at));
    }
}
