//! The latest stored state of each object, for providers that sign no event id (Ledig): what
//! tells a provider's retry from a new event there.
//!
//! Ledig's `id` is a payout's or a deposit's, not an event's, and the same payout comes back
//! with each status change, including back to an earlier one (pending -> failed -> pending). A
//! key made of the content would drop that third event as a copy of the first; a key made of
//! the arrival would store every retry again. The rule kept here: a delivery is a retry when
//! its state equals the LATEST state stored for its object, and that state arrived less than
//! the source's retry window before it. Everything else is a new event.
//!
//! The trade-off, documented in docs/webhooks.md: a provider retry of an OLDER state that arrives
//! after a newer one was stored (A stored, its ack lost, B stored, then A's retry) is stored
//! again, since it cannot be told from a genuine A -> B -> A. And a genuine repeat of the same
//! state within the window (no field changed at all) is dropped: it carries nothing new.
//!
//! Owned by the writer thread like the dedup index: decided against memory, recorded in the
//! same transaction as the event (table `object_states`), learned by memory only after the
//! commit, rebuilt from the table at start. Entries leave memory and table once their window
//! is over. This module never sees provider formats: objects and states are hashes.

use super::{DedupPruneStep, ObjectStateClaim};
use rusqlite::{Connection, Transaction, params};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

/// SHA-256 prefix of (source, object hash): one entry per object of a source.
pub(super) type ObjectKey = [u8; 16];
/// SHA-256 prefix of a state: telling two states apart takes a 2^128 collision.
type StateHash = [u8; 16];

/// Rows looked at per pruning step (small: the step rides a writer commit).
const PRUNE_ROWS: i64 = 5_000;

pub(super) fn object_key(source: &str, object: &[u8; 32]) -> ObjectKey {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(object);
    prefix(&h.finalize().into())
}

fn prefix(hash: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

/// The latest stored state of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Latest {
    state: StateHash,
    /// When it arrived (the event's `received_at`, unix ms).
    seen_ms: i64,
    /// When a copy of it stops being a retry.
    expires_ms: i64,
}

impl Latest {
    fn of(claim: &ObjectStateClaim, received_at_ms: i64) -> Self {
        Self {
            state: prefix(&claim.state),
            seen_ms: received_at_ms,
            expires_ms: received_at_ms.saturating_add(claim.retry_window_ms),
        }
    }

    /// Whether a delivery claiming `claim`, arrived at `at_ms`, repeats this state within the
    /// window. A delivery that waited for the writer longer than one stored after it can
    /// carry an earlier arrival time; it is still inside the window.
    fn is_repeated_by(&self, claim: &ObjectStateClaim, at_ms: i64) -> bool {
        self.state == prefix(&claim.state)
            && at_ms.saturating_sub(self.seen_ms) < claim.retry_window_ms
    }
}

/// Every object's latest state whose window is not over, as the writer knows it.
#[derive(Debug, Default)]
pub(super) struct ObjectStates {
    latest: HashMap<ObjectKey, Latest>,
}

/// The states a batch stored, not yet committed: the batch's later deliveries see them, the
/// index learns them only after the commit.
#[derive(Debug, Default)]
pub(super) struct BatchStates {
    latest: HashMap<ObjectKey, Latest>,
}

impl ObjectStates {
    /// Reads the states whose window is not over at `now_ms`.
    pub(super) fn load(conn: &Connection, now_ms: i64) -> rusqlite::Result<Self> {
        let mut stmt =
            conn.prepare("SELECT key, state, seen, expires FROM object_states WHERE expires > ?1")?;
        let rows = stmt.query_map([now_ms], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut latest = HashMap::new();
        for row in rows {
            let (key, state, seen_ms, expires_ms) = row?;
            // A row of another length was not written by this module: skip it, as if unseen.
            let (Ok(key), Ok(state)) = (key.try_into(), state.try_into()) else {
                continue;
            };
            latest.insert(
                key,
                Latest {
                    state,
                    seen_ms,
                    expires_ms,
                },
            );
        }
        Ok(Self { latest })
    }

    pub(super) fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether a delivery of `claim` for `key`, arrived at `at_ms`, is a retry: it repeats
    /// the latest state stored for the object (in this batch, else before) within the window.
    pub(super) fn is_retry(
        &self,
        batch: &BatchStates,
        key: &ObjectKey,
        claim: &ObjectStateClaim,
        at_ms: i64,
    ) -> bool {
        batch
            .latest
            .get(key)
            .or_else(|| self.latest.get(key))
            .is_some_and(|l| l.is_repeated_by(claim, at_ms))
    }

    /// Learns a committed batch's states.
    pub(super) fn extend(&mut self, batch: BatchStates) {
        self.latest.extend(batch.latest);
    }

    /// Deletes up to [`PRUNE_ROWS`] states whose window ended before `now_ms`, in the
    /// writer's transaction; forgets them in memory right away (if the transaction fails they
    /// are still over: a copy of them is a new event either way).
    pub(super) fn prune_step(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: i64,
    ) -> rusqlite::Result<DedupPruneStep> {
        let expired: Vec<Vec<u8>> = tx
            .prepare_cached(
                "SELECT key FROM object_states WHERE expires <= ?1 ORDER BY expires LIMIT ?2",
            )?
            .query_map(params![now_ms, PRUNE_ROWS], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut delete = tx.prepare_cached("DELETE FROM object_states WHERE key = ?1")?;
        for key in &expired {
            delete.execute([key])?;
            if let Ok(key) = ObjectKey::try_from(key.as_slice()) {
                self.latest.remove(&key);
            }
        }
        let forgotten = u64::try_from(expired.len()).unwrap_or(u64::MAX);
        Ok(DedupPruneStep {
            forgotten,
            done: expired.len() < usize::try_from(PRUNE_ROWS).unwrap_or(usize::MAX),
        })
    }
}

impl BatchStates {
    /// Records `claim` as the latest state of `key`, in the batch's transaction.
    pub(super) fn record(
        &mut self,
        tx: &Transaction<'_>,
        key: ObjectKey,
        claim: &ObjectStateClaim,
        received_at_ms: i64,
    ) -> rusqlite::Result<()> {
        let latest = Latest::of(claim, received_at_ms);
        tx.prepare_cached(
            "INSERT INTO object_states (key, state, seen, expires) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET \
               state = excluded.state, seen = excluded.seen, expires = excluded.expires",
        )?
        .execute(params![
            &key[..],
            &latest.state[..],
            latest.seen_ms,
            latest.expires_ms
        ])?;
        self.latest.insert(key, latest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn claim(object: u8, state: u8) -> ObjectStateClaim {
        ObjectStateClaim {
            object: [object; 32],
            state: [state; 32],
            retry_window_ms: HOUR_MS,
        }
    }

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().expect("opens");
        crate::store::schema::apply(&conn).expect("schema");
        conn
    }

    /// Stores `claim` at `at` unless it is a retry; true when stored.
    fn offer(
        conn: &mut Connection,
        states: &mut ObjectStates,
        c: ObjectStateClaim,
        at: i64,
    ) -> bool {
        let key = object_key("ledig", &c.object);
        let mut batch = BatchStates::default();
        if states.is_retry(&batch, &key, &c, at) {
            return false;
        }
        let tx = conn.transaction().expect("begins");
        batch.record(&tx, key, &c, at).expect("records");
        tx.commit().expect("commits");
        states.extend(batch);
        true
    }

    #[test]
    fn a_copy_of_the_latest_state_is_a_retry_and_a_state_that_comes_back_is_not() {
        let mut conn = conn();
        let mut states = ObjectStates::default();
        let (active, suspended) = (claim(1, b'a'), claim(1, b's'));
        assert!(offer(&mut conn, &mut states, active, 0), "first: stored");
        assert!(
            !offer(&mut conn, &mut states, active, 1_000),
            "retry: dropped"
        );
        assert!(
            offer(&mut conn, &mut states, suspended, 2_000),
            "a change: stored"
        );
        assert!(
            !offer(&mut conn, &mut states, suspended, 2_500),
            "its retry: dropped"
        );
        assert!(
            offer(&mut conn, &mut states, active, 3_000),
            "back to active: stored"
        );
        assert!(
            !offer(&mut conn, &mut states, active, 3_001),
            "its retry: dropped"
        );
        // Another object in the same state is its own.
        assert!(offer(&mut conn, &mut states, claim(2, b'a'), 3_002));
        // Past the window a copy is a new event.
        assert!(offer(&mut conn, &mut states, active, 3_000 + HOUR_MS));
        // The same object of another source is another object.
        let key = object_key("ledig-eu", &active.object);
        assert!(!states.is_retry(&BatchStates::default(), &key, &active, 3_000 + HOUR_MS));
    }

    #[test]
    fn a_batch_sees_its_own_states_and_a_start_reads_them_back() {
        let mut conn = conn();
        let mut states = ObjectStates::default();
        let c = claim(7, b'p');
        let key = object_key("ledig", &c.object);
        let mut batch = BatchStates::default();
        let tx = conn.transaction().expect("begins");
        assert!(!states.is_retry(&batch, &key, &c, 10));
        batch.record(&tx, key, &c, 10).expect("records");
        assert!(
            states.is_retry(&batch, &key, &c, 11),
            "the same batch sees it"
        );
        tx.commit().expect("commits");
        states.extend(batch);

        let loaded = ObjectStates::load(&conn, 11).expect("loads");
        assert_eq!(loaded.len(), 1);
        assert!(loaded.is_retry(&BatchStates::default(), &key, &c, 12));
        // A state whose window is over is not loaded.
        assert_eq!(
            ObjectStates::load(&conn, 10 + HOUR_MS)
                .expect("loads")
                .len(),
            0
        );
    }

    #[test]
    fn pruning_forgets_only_states_whose_window_is_over() {
        let mut conn = conn();
        let mut states = ObjectStates::default();
        for object in 0..10u8 {
            assert!(offer(
                &mut conn,
                &mut states,
                claim(object, 1),
                i64::from(object)
            ));
        }
        let tx = conn.transaction().expect("begins");
        let step = states.prune_step(&tx, 5 + HOUR_MS).expect("prunes");
        tx.commit().expect("commits");
        assert_eq!(
            step,
            DedupPruneStep {
                forgotten: 6,
                done: true
            }
        );
        assert_eq!(states.len(), 4);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM object_states", [], |r| r.get(0))
            .expect("counts");
        assert_eq!(rows, 4);
        // The kept ones are still retries within their window.
        assert!(!offer(&mut conn, &mut states, claim(9, 1), 9 + HOUR_MS - 1));
    }
}
