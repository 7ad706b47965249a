//! Events this replica stored and claimed in one statement, on their way to its own intake.
//!
//! A replica that stores an event is the one that holds it (the ack path just built it), so
//! its ingest writes the event's work row already claimed by this replica (its id in
//! `lease_owner`, due one lease later) and puts the event here, in memory, instead of reading
//! it back with a claim: the claim statement, its row lock and update, and the envelope read
//! cost the database as much as storing the event did (docs/performance.md, PostgreSQL). The
//! lease still guards the row: if this replica dies, its handed-off events become due when the
//! lease runs out and another replica claims them, as any claim of a dead replica.
//!
//! The queue is bounded: when it is full (intake is behind), ingest writes the rows
//! unclaimed, where any replica may take them. Intake scans the table for claimable work only
//! when another replica announced some, when its own ingest wrote unclaimed rows, or once per
//! [`SCAN_EVERY_MS`] (leases that ran out announce nothing).
//!
//! This module never talks to the database.

use super::super::work::ClaimedEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Events a replica keeps handed off at most by default: a few of intake's claims, so that
/// when its intake is slow the rest of the load is claimable by the other replicas.
pub(super) const DEFAULT_CAPACITY: usize = 1024;
/// Longest time between two scans for claimable work while nothing announces any.
pub(super) const SCAN_EVERY_MS: i64 = 1_000;

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<ClaimedEvent>,
    /// Places promised to batches being written.
    reserved: usize,
}

#[derive(Debug)]
pub(super) struct Handoff {
    capacity: usize,
    queue: Mutex<Queue>,
    /// Someone announced claimable work (or this replica wrote some) since the last scan.
    scan_wanted: AtomicBool,
    last_scan_ms: AtomicI64,
}

impl Handoff {
    /// A capacity of 0 turns the handoff off: every event is claimed through the table, and
    /// every claim scans it (what tests of the claims themselves want).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queue: Mutex::default(),
            scan_wanted: AtomicBool::new(true),
            last_scan_ms: AtomicI64::new(0),
        }
    }

    fn queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut guard = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Promises `n` places to a batch about to be written; `false` when they are not free
    /// (the batch then writes its rows unclaimed).
    pub(super) fn reserve(&self, n: usize) -> bool {
        self.queue(|q| {
            let fits = q.events.len() + q.reserved + n <= self.capacity;
            if fits {
                q.reserved += n;
            }
            fits
        })
    }

    /// The batch that reserved `reserved` places committed: `events` (fewer when some were
    /// duplicates) wait here for intake.
    pub(super) fn fill(&self, reserved: usize, events: Vec<ClaimedEvent>) {
        self.queue(|q| {
            q.reserved = q.reserved.saturating_sub(reserved);
            q.events.extend(events);
        });
    }

    /// The batch that reserved `reserved` places failed.
    pub(super) fn cancel(&self, reserved: usize) {
        self.queue(|q| q.reserved = q.reserved.saturating_sub(reserved));
    }

    /// Up to `limit` handed-off events, oldest first.
    pub(super) fn take(&self, limit: usize) -> Vec<ClaimedEvent> {
        self.queue(|q| {
            let n = limit.min(q.events.len());
            q.events.drain(..n).collect()
        })
    }

    /// Forgets every handed-off event (their claims are being given back).
    pub(super) fn clear(&self) {
        self.queue(|q| q.events.clear());
    }

    /// There may be claimable rows in the table.
    pub(super) fn want_scan(&self) {
        self.scan_wanted.store(true, Ordering::SeqCst);
    }

    /// Whether intake should scan the table now; counts the scan as done if so.
    pub(super) fn scan_due(&self, now_ms: i64) -> bool {
        let wanted = self.scan_wanted.swap(false, Ordering::SeqCst);
        let last = self.last_scan_ms.load(Ordering::SeqCst);
        let due = self.capacity == 0 || wanted || now_ms - last >= SCAN_EVERY_MS;
        if due {
            self.last_scan_ms.store(now_ms, Ordering::SeqCst);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::work::StoredEvent;

    fn event(seq: i64) -> ClaimedEvent {
        ClaimedEvent {
            event: StoredEvent {
                seq,
                id: format!("k{seq}"),
                source: "ledger".into(),
                event_type: "t".into(),
                envelope: "{}".into(),
            },
            replay: false,
        }
    }

    fn seqs(events: &[ClaimedEvent]) -> Vec<i64> {
        events.iter().map(|e| e.event.seq).collect()
    }

    #[test]
    fn places_are_promised_before_the_commit_and_never_past_the_capacity() {
        let handoff = Handoff::new(3);
        assert!(handoff.reserve(2));
        assert!(!handoff.reserve(2), "2 reserved + 2 > 3");
        // One of the two was a duplicate: its place is free again.
        handoff.fill(2, vec![event(7)]);
        assert!(handoff.reserve(2));
        handoff.cancel(2);
        assert!(handoff.reserve(2));
        handoff.fill(2, vec![event(8), event(9)]);
        assert!(!handoff.reserve(1), "full");
        assert_eq!(seqs(&handoff.take(2)), [7, 8]);
        assert_eq!(seqs(&handoff.take(5)), [9]);
        assert!(handoff.take(5).is_empty());
    }

    #[test]
    fn a_scan_is_due_when_wanted_or_once_a_second_and_always_without_a_handoff() {
        let handoff = Handoff::new(10);
        assert!(
            handoff.scan_due(5_000),
            "work may wait from before the start"
        );
        assert!(!handoff.scan_due(5_001));
        handoff.want_scan();
        assert!(handoff.scan_due(5_002));
        assert!(!handoff.scan_due(5_003));
        assert!(handoff.scan_due(5_002 + SCAN_EVERY_MS));
        let off = Handoff::new(0);
        assert!(off.scan_due(1) && off.scan_due(1) && off.scan_due(1));
        assert!(!off.reserve(1));
    }

    #[test]
    fn clear_forgets_the_queue() {
        let handoff = Handoff::new(4);
        assert!(handoff.reserve(1));
        handoff.fill(1, vec![event(1)]);
        handoff.clear();
        assert!(handoff.take(4).is_empty());
        assert!(handoff.reserve(4));
    }
}
