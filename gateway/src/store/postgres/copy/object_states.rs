//! The Ledig objects' latest states, re-derived for PostgreSQL. SQLite keeps each as hash
//! prefixes (16 bytes of SHA-256 over source and object, 16 of the state); PostgreSQL keeps
//! the whole object and state hashes, which a prefix cannot be turned back into. But each
//! state came from a stored event: the provider stage computes object and state from the raw
//! body alone, so normalizing the stored body again yields them, and the SQLite row says
//! which event it was (same key, same state prefix, `seen` = the event's arrival).
//!
//! Only rows still inside their retry window are worth it (an expired one would be pruned
//! at once). A row no stored event re-derives to (its event deleted, or a body this version
//! normalizes differently) is counted as lost: the only effect is that a provider retry of
//! exactly that state, within its window, is stored once more as a new event.

use super::CopyError;
use super::sqlite_side::Source;
use crate::store::object_states::object_key;
use gateway_providers::envelope::RetryIdentity;
use std::collections::HashMap;

/// One `object_states` row for PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ObjectStateRow {
    pub(super) source: String,
    pub(super) object: [u8; 32],
    pub(super) state: [u8; 32],
    pub(super) seen: i64,
    pub(super) expires: i64,
}

/// A SQLite row not yet matched to its event.
#[derive(Debug, Clone, Copy)]
struct Prefixes {
    state: [u8; 16],
    seen: i64,
    expires: i64,
}

/// The re-derived rows, and how many unexpired SQLite rows found no event.
pub(super) fn rederive(
    source: &Source,
    now_ms: i64,
) -> Result<(Vec<ObjectStateRow>, u64), CopyError> {
    let mut wanted: HashMap<[u8; 16], Prefixes> = HashMap::new();
    let mut stmt =
        source.prepare("SELECT key, state, seen, expires FROM object_states WHERE expires > ?1")?;
    let mut rows = stmt.query([now_ms]).map_err(|e| source.read_error(e))?;
    while let Some(row) = rows.next().map_err(|e| source.read_error(e))? {
        let read = || -> rusqlite::Result<_> {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        };
        let (key, state, seen, expires) = read().map_err(|e| source.read_error(e))?;
        // A row of another shape was not written by the gateway: not a state to keep.
        let (Ok(key), Ok(state)) = (key.try_into(), state.try_into()) else {
            continue;
        };
        wanted.insert(
            key,
            Prefixes {
                state,
                seen,
                expires,
            },
        );
    }
    let Some(oldest) = wanted.values().map(|p| p.seen).min() else {
        return Ok((Vec::new(), 0));
    };
    let mut found: HashMap<[u8; 16], ObjectStateRow> = HashMap::new();
    let mut stmt = source.prepare(
        "SELECT source, raw_body, received_at FROM events \
         WHERE received_at >= ?1 AND dedup_key LIKE 'ledig:%' ORDER BY seq",
    )?;
    let mut rows = stmt.query([oldest]).map_err(|e| source.read_error(e))?;
    while let Some(row) = rows.next().map_err(|e| source.read_error(e))? {
        let read = || -> rusqlite::Result<(String, Vec<u8>, i64)> {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        };
        let (name, body, received_at) = read().map_err(|e| source.read_error(e))?;
        let Some(row) = matching_row(&wanted, &name, &body, received_at) else {
            continue;
        };
        found.insert(object_key(&row.source, &row.object), row);
    }
    let lost = u64::try_from(wanted.len().saturating_sub(found.len())).unwrap_or(u64::MAX);
    let mut states: Vec<ObjectStateRow> = found.into_values().collect();
    states.sort_by(|a, b| (a.seen, &a.source).cmp(&(b.seen, &b.source)));
    Ok((states, lost))
}

/// The PostgreSQL row of the SQLite state this event stored, if it is one still wanted.
fn matching_row(
    wanted: &HashMap<[u8; 16], Prefixes>,
    source: &str,
    body: &[u8],
    received_at: i64,
) -> Option<ObjectStateRow> {
    // The body was authenticated when it arrived; only object and state are taken from this.
    let normalized =
        gateway_providers::normalize_local_payload("ledig", source, body, received_at).ok()?;
    let RetryIdentity::ObjectState(s) = normalized.retry_identity else {
        return None;
    };
    let prefixes = wanted.get(&object_key(source, &s.object))?;
    let same_state = s.state.get(..16) == Some(&prefixes.state[..]);
    (same_state && prefixes.seen == received_at).then(|| ObjectStateRow {
        source: source.to_owned(),
        object: s.object,
        state: s.state,
        seen: prefixes.seen,
        expires: prefixes.expires,
    })
}
