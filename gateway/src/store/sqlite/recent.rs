//! Recently committed events, kept in memory so intake can take them without reading back
//! from SQLite what the writer has just written.
//!
//! The database stays the truth: this is only a window onto its newest rows. The writer adds
//! events after their commit succeeded, in seq order, and takes them out again once a routing
//! result for them committed (they are no longer pending). The window knows every pending
//! event from `covers_from` up to the newest commit; `pending_events(cursor)` is answered from
//! here only when the cursor is inside that range, so no event can be skipped: a cursor before
//! it (the window overflowed, or events predate this process) falls back to the database. Reading back each batch cost ~20% of the request threads' CPU
//! at full ingest rate (a fresh read transaction after every commit re-reads its pages).
//!
//! It also remembers whether a replay can be waiting, so intake does not query for replays
//! after every commit when nobody asked for one.

use super::super::StoredEvent;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Events kept at most (~1-2 KiB each). Past it the oldest are forgotten; intake then reads
/// them from the database, which is where a backlog belongs anyway.
const CAPACITY: usize = 8192;

#[derive(Debug)]
pub(super) struct RecentEvents {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Pending events, oldest first: every pending event with a seq of at least
    /// `covers_from` is here.
    window: VecDeque<StoredEvent>,
    covers_from: i64,
    /// The highest seq committed (read at open, then kept by the writer).
    max_seq: i64,
    /// Bumped by every commit that marked events for replay.
    replay_generation: u64,
    /// The generation at which a replay query last found nothing.
    replays_seen_empty: u64,
}

/// What `pending_events` can be answered with.
#[derive(Debug)]
pub(super) enum Pending {
    /// These are exactly the next events after the cursor.
    Known(Vec<StoredEvent>),
    /// Only the database can tell.
    AskDatabase,
}

impl RecentEvents {
    pub(super) fn new(max_seq: i64) -> Self {
        Self {
            state: Mutex::new(State {
                window: VecDeque::with_capacity(CAPACITY),
                covers_from: max_seq + 1,
                max_seq,
                // Replays marked before a restart must be found once.
                replay_generation: 1,
                replays_seen_empty: 0,
            }),
        }
    }

    /// Called by the writer after a commit: the events it stored (in seq order), the events
    /// it recorded a routing result for, and whether it marked events for replay.
    pub(super) fn committed(&self, stored: Vec<StoredEvent>, routed: &[i64], marked_replays: bool) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if marked_replays {
            s.replay_generation += 1;
        }
        for seq in routed {
            if let Ok(i) = s.window.binary_search_by_key(seq, |e| e.seq) {
                s.window.remove(i);
            }
        }
        for event in stored {
            if event.seq != s.max_seq + 1 {
                // Never expected (seqs are appended), but events unseen in between must not be
                // skipped: only the database knows them.
                s.window.clear();
                s.covers_from = event.seq;
            }
            s.max_seq = s.max_seq.max(event.seq);
            if s.window.len() == CAPACITY {
                forget_oldest(&mut s);
            }
            s.window.push_back(event);
        }
    }

    /// The pending events after `cursor`, when they are known here, at most `limit`.
    pub(super) fn pending_after(&self, cursor: i64, limit: usize) -> Pending {
        let Ok(mut s) = self.state.lock() else {
            return Pending::AskDatabase;
        };
        // Intake's cursor only moves forward: what it passed is not asked for again.
        while s.window.front().is_some_and(|e| e.seq <= cursor) {
            forget_oldest(&mut s);
        }
        if cursor + 1 >= s.covers_from {
            Pending::Known(s.window.iter().take(limit).cloned().collect())
        } else {
            Pending::AskDatabase
        }
    }

    /// The generation to pass to [`Self::replays_empty_at`], or `None` when the last query
    /// already found no replay and none was marked since.
    pub(super) fn replay_query_needed(&self) -> Option<u64> {
        let s = self.state.lock().ok()?;
        (s.replays_seen_empty != s.replay_generation).then_some(s.replay_generation)
    }

    /// A replay query started at `generation` found nothing.
    pub(super) fn replays_empty_at(&self, generation: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.replays_seen_empty = s.replays_seen_empty.max(generation);
        }
    }
}

fn forget_oldest(s: &mut State) {
    if let Some(e) = s.window.pop_front() {
        s.covers_from = s.covers_from.max(e.seq + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> StoredEvent {
        StoredEvent {
            seq,
            id: format!("evt_{seq}"),
            source: "ledger".into(),
            event_type: "ledger.transaction.completed".into(),
            envelope: "{}".into(),
        }
    }

    fn seqs(p: Pending) -> Option<Vec<i64>> {
        match p {
            Pending::Known(v) => Some(v.iter().map(|e| e.seq).collect()),
            Pending::AskDatabase => None,
        }
    }

    #[test]
    fn answers_only_when_the_window_starts_right_after_the_cursor() {
        let recent = RecentEvents::new(10);
        // Caught up with what the database held at open, nothing new: nothing pending.
        assert_eq!(seqs(recent.pending_after(10, 512)), Some(vec![]));
        // Behind what the database held at open: only the database knows.
        assert_eq!(seqs(recent.pending_after(7, 512)), None);
        recent.committed((11..=15).map(event).collect(), &[], false);
        assert_eq!(seqs(recent.pending_after(10, 3)), Some(vec![11, 12, 13]));
        // Not consumed by reading: the same answer until the cursor moves.
        assert_eq!(seqs(recent.pending_after(10, 3)), Some(vec![11, 12, 13]));
        assert_eq!(seqs(recent.pending_after(13, 512)), Some(vec![14, 15]));
        assert_eq!(seqs(recent.pending_after(15, 512)), Some(vec![]));
        // A cursor behind the window (events 11..13 were forgotten): ask the database.
        recent.committed(vec![event(16)], &[], false);
        assert_eq!(seqs(recent.pending_after(12, 512)), None);
    }

    #[test]
    fn routed_events_are_no_longer_pending() {
        let recent = RecentEvents::new(0);
        recent.committed((1..=4).map(event).collect(), &[], false);
        recent.committed(Vec::new(), &[1, 3], false);
        assert_eq!(seqs(recent.pending_after(0, 512)), Some(vec![2, 4]));
        recent.committed(vec![event(5)], &[2], false);
        assert_eq!(seqs(recent.pending_after(0, 512)), Some(vec![4, 5]));
    }

    #[test]
    fn an_overflowing_window_forgets_the_oldest_and_sends_intake_to_the_database() {
        let recent = RecentEvents::new(0);
        let n = i64::try_from(CAPACITY).unwrap_or(i64::MAX) + 5;
        recent.committed((1..=n).map(event).collect(), &[], false);
        assert_eq!(seqs(recent.pending_after(0, 512)), None);
        assert_eq!(seqs(recent.pending_after(5, 2)), Some(vec![6, 7]));
    }

    #[test]
    fn a_gap_is_never_bridged() {
        let recent = RecentEvents::new(0);
        recent.committed(vec![event(1), event(2)], &[], false);
        recent.committed(vec![event(4)], &[], false);
        assert_eq!(seqs(recent.pending_after(0, 512)), None);
        assert_eq!(seqs(recent.pending_after(3, 512)), Some(vec![4]));
    }

    #[test]
    fn replays_are_queried_until_found_empty_and_again_after_a_new_mark() {
        let recent = RecentEvents::new(0);
        let first = recent.replay_query_needed();
        assert!(
            first.is_some(),
            "marks from before a restart are looked for once"
        );
        recent.replays_empty_at(first.unwrap_or_default());
        assert_eq!(recent.replay_query_needed(), None);
        recent.committed(Vec::new(), &[], true);
        let second = recent.replay_query_needed();
        assert!(second.is_some());
        // A mark committed while that query ran is not lost.
        recent.committed(Vec::new(), &[], true);
        recent.replays_empty_at(second.unwrap_or_default());
        assert!(recent.replay_query_needed().is_some());
    }
}
