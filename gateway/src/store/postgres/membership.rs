//! How many replicas share the database, and how many of this replica's batch writers commit
//! acks at once because of it.
//!
//! Group commit pays a transaction and a WAL flush per batch, so what the database spends per
//! event falls as batches grow. Batches grow with the requests waiting while the writers are
//! busy: the fewer commits in flight, the fuller each one. Two replicas with four writers each
//! keep eight ack commits in flight where one replica kept four, and split the same requests
//! into batches half as large: measured on 2 cores, 6 events per commit instead of 11 and
//! 73-93 us of CPU per event instead of 50-65 us. So the writers are a budget for the cluster,
//! not for each replica: every replica commits through `ceil(writers / replicas)` of its
//! writers, and the database sees about the same number of ack commits in flight whatever
//! the number of replicas, with fuller batches instead. The budget is `[store] ack_writers`:
//! 2 by default, because on a 2-core database even one replica acked more, at less CPU per
//! event, with two commits in flight than with four (docs/performance.md, "Two ack commits in
//! flight").
//!
//! Membership is a shared session advisory lock that every replica's control connection holds:
//! the server drops it with the connection, so a dead replica stops counting as soon as the
//! server notices its connection is gone, with no table to write and nothing to expire.
//! `pg_locks` shows every session's locks to every role.
//!
//! This module never touches event data and never decides what a writer writes.

use std::sync::Arc;
use tokio::sync::watch;

/// The advisory lock every live replica holds shared (any fixed number unused by other
/// applications on the database; not the migration or cluster-jobs lock).
const MEMBERSHIP_LOCK: i64 = 0x7765_6268_6f6f_6b33;

/// Takes this replica's share of the membership lock on its control connection (never waits:
/// nobody takes it exclusively).
pub(super) const JOIN: &str = "SELECT pg_advisory_lock_shared($1)";

/// The replicas holding the membership lock in this database. A bigint advisory key shows in
/// `pg_locks` as its high half in `classid`, its low half in `objid`, and `objsubid` 1.
pub(super) const COUNT: &str = "\
SELECT count(*) FROM pg_locks \
 WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
   AND classid = $1::oid AND objid = $2::oid \
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// The membership key, as the statements take it.
pub(super) fn key() -> i64 {
    MEMBERSHIP_LOCK
}

/// The membership key's halves as `pg_locks` shows them (`classid`, `objid`).
pub(super) fn key_halves() -> (u32, u32) {
    let bits = MEMBERSHIP_LOCK as u64;
    ((bits >> 32) as u32, (bits & 0xffff_ffff) as u32)
}

/// Writers of one replica allowed to commit at once, given the cluster's budget and the
/// replicas counted (at least one each, so every replica can ack).
pub(super) fn writers_per_replica(budget: usize, replicas: usize) -> usize {
    budget.max(1).div_ceil(replicas.max(1))
}

/// How many of this replica's writers may commit now; shared by the writers (which wait for
/// their turn) and the control connection (which counts the replicas).
#[derive(Debug)]
pub(super) struct AckWriters {
    budget: usize,
    active: watch::Sender<usize>,
}

impl AckWriters {
    /// Every writer active until the first count: a replica alone, or one that cannot count,
    /// commits as it always did.
    pub(super) fn new(budget: usize) -> Arc<Self> {
        let budget = budget.max(1);
        Arc::new(Self {
            budget,
            active: watch::Sender::new(budget),
        })
    }

    /// All the writers this replica has (the budget).
    pub(super) fn budget(&self) -> usize {
        self.budget
    }

    /// Records the replicas counted; returns the writers now active when that changed.
    pub(super) fn set_replicas(&self, replicas: usize) -> Option<usize> {
        let active = writers_per_replica(self.budget, replicas);
        let changed = self.active.send_if_modified(|current| {
            let changed = *current != active;
            *current = active;
            changed
        });
        changed.then_some(active)
    }

    /// The writers active now.
    pub(super) fn active(&self) -> usize {
        *self.active.borrow()
    }

    /// Waits until writer `index` (from 0) may commit. Writer 0 never waits.
    pub(super) async fn turn(&self, index: usize) {
        let mut seen = self.active.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = seen.wait_for(|active| index < *active).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_keeps_its_writer_budget_whatever_the_replica_count() {
        assert_eq!(writers_per_replica(4, 1), 4);
        assert_eq!(writers_per_replica(4, 2), 2);
        assert_eq!(writers_per_replica(4, 3), 2);
        assert_eq!(writers_per_replica(4, 4), 1);
        assert_eq!(writers_per_replica(4, 9), 1);
        // No count yet (0) or a nonsense budget still lets a replica ack.
        assert_eq!(writers_per_replica(4, 0), 4);
        assert_eq!(writers_per_replica(0, 2), 1);
    }

    #[test]
    fn the_key_halves_are_what_pg_locks_shows() {
        let (high, low) = key_halves();
        assert_eq!((u64::from(high) << 32) | u64::from(low), key() as u64);
    }

    #[tokio::test]
    async fn a_parked_writer_resumes_when_a_replica_leaves() {
        let writers = AckWriters::new(4);
        assert_eq!(writers.set_replicas(2), Some(2));
        assert_eq!(
            writers.set_replicas(2),
            None,
            "no change, nothing to report"
        );
        assert_eq!(writers.active(), 2);
        writers.turn(1).await; // active: returns at once
        let parked = {
            let writers = Arc::clone(&writers);
            tokio::spawn(async move { writers.turn(3).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !parked.is_finished(),
            "writer 3 of 4 waits while two replicas share the budget"
        );
        writers.set_replicas(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), parked)
            .await
            .expect("writer 3 resumes once this replica is alone")
            .expect("the waiting task ends cleanly");
    }
}
