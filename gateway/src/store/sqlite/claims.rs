//! Claims on the SQLite store: which events, deliveries and plugin retries this process's
//! workers hold. A SQLite store has one gateway process (the file is its own), so a claim is a
//! mark in memory that ends with the process; there is no lease to renew or take over.
//!
//! New events are handed out through a cursor over `seq` (SQLite commits in `seq` order, so
//! everything below the cursor has been handed out). The watermark, the seq below which every
//! event has been routed, is the smallest event still held minus one; it is persisted now and
//! then so a start resumes there instead of rescanning the table.
//!
//! A finished row stays claimed until the next claim of its kind begins: a read that started
//! before the row's result committed still shows it waiting and must not hand it out again.
//! This module never reads or writes the database itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the watermark is persisted.
const WATERMARK_EVERY: Duration = Duration::from_secs(1);

/// Rows of one kind being worked on.
#[derive(Debug, Default)]
struct Book {
    working: HashSet<i64>,
    /// Done since the last claim began; released when the next one begins.
    finished: Vec<i64>,
}

impl Book {
    /// Releases the rows finished since the last claim; returns them.
    fn begin_claim(&mut self) -> Vec<i64> {
        let released: Vec<i64> = self.finished.drain(..).collect();
        for id in &released {
            self.working.remove(id);
        }
        released
    }

    fn take(&mut self, id: i64) -> bool {
        self.working.insert(id)
    }

    fn finish(&mut self, id: i64) {
        if self.working.contains(&id) {
            self.finished.push(id);
        }
    }
}

#[derive(Debug)]
struct State {
    /// Every new event at or below this seq has been handed out.
    cursor: i64,
    /// New events handed out and not yet recorded (their minimum bounds the watermark).
    events: BTreeSet<i64>,
    replays: Book,
    deliveries: Book,
    route_runs: Book,
    /// Ordered deliveries in flight: (destination, subject) -> delivery id, released with
    /// the delivery's claim. At most one per subject, whatever the database shows.
    subjects: HashMap<(String, String), i64>,
    subject_of: HashMap<i64, (String, String)>,
    saved_watermark: i64,
    saved_at: Instant,
}

/// What this process's workers hold.
#[derive(Debug)]
pub(super) struct Claims {
    state: Mutex<State>,
}

/// Which kind of row a claim is on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Replay,
    Delivery,
    RouteRun,
}

impl Claims {
    /// Starts at the persisted watermark.
    pub(super) fn new(watermark: i64) -> Self {
        Self {
            state: Mutex::new(State {
                cursor: watermark,
                events: BTreeSet::new(),
                replays: Book::default(),
                deliveries: Book::default(),
                route_runs: Book::default(),
                subjects: HashMap::new(),
                subject_of: HashMap::new(),
                saved_watermark: watermark,
                saved_at: Instant::now(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding this lock cannot leave the sets half-updated in a way that
        // matters more than losing them: carry on with what is there.
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Called before a claim's read: releases the rows finished since the last one, and
    /// returns the cursor new events are read after.
    pub(super) fn begin(&self, kind: Kind) -> i64 {
        self.with(|s| {
            for id in s.book(kind).begin_claim() {
                if let Some(subject) = s.subject_of.remove(&id) {
                    s.subjects.remove(&subject);
                }
            }
            s.cursor
        })
    }

    /// Claims an ordered delivery that a read found to be its subject's next; false when this
    /// process holds it, or another delivery of its subject, already.
    pub(super) fn take_ordered(&self, id: i64, destination: &str, subject: String) -> bool {
        self.with(|s| {
            let key = (destination.to_owned(), subject);
            if s.subjects.contains_key(&key) || !s.deliveries.take(id) {
                return false;
            }
            s.subjects.insert(key.clone(), id);
            s.subject_of.insert(id, key);
            true
        })
    }

    /// Claims a row that a read found waiting; false when this process holds it already.
    pub(super) fn take(&self, kind: Kind, id: i64) -> bool {
        self.with(|s| s.book(kind).take(id))
    }

    /// Claims new events read after the cursor (in seq order) and moves the cursor past them.
    pub(super) fn take_new(&self, seqs: &[i64]) {
        self.with(|s| {
            s.events.extend(seqs.iter().copied());
            if let Some(&last) = seqs.last() {
                s.cursor = s.cursor.max(last);
            }
        });
    }

    /// Ends a claim whose result committed.
    pub(super) fn finish(&self, kind: Kind, id: i64) {
        self.with(|s| s.book(kind).finish(id));
    }

    /// Ends the claim on an event whose routing committed (a new one or a replay).
    pub(super) fn finish_event(&self, seq: i64) {
        self.with(|s| {
            if !s.events.remove(&seq) {
                s.replays.finish(seq);
            }
        });
    }

    /// The seq at or below which every event has been routed.
    pub(super) fn watermark(&self) -> i64 {
        self.with(|s| s.watermark())
    }

    /// The watermark, when it moved and was last persisted long enough ago: the caller
    /// persists it and reports back with [`Claims::saved`].
    pub(super) fn watermark_to_save(&self) -> Option<i64> {
        self.with(|s| {
            let w = s.watermark();
            (w != s.saved_watermark && s.saved_at.elapsed() >= WATERMARK_EVERY).then_some(w)
        })
    }

    pub(super) fn saved(&self, watermark: i64) {
        self.with(|s| {
            s.saved_watermark = watermark;
            s.saved_at = Instant::now();
        });
    }
}

impl State {
    fn book(&mut self, kind: Kind) -> &mut Book {
        match kind {
            Kind::Replay => &mut self.replays,
            Kind::Delivery => &mut self.deliveries,
            Kind::RouteRun => &mut self.route_runs,
        }
    }

    fn watermark(&self) -> i64 {
        self.events.first().map_or(self.cursor, |first| first - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::{Claims, Kind};

    #[test]
    fn the_watermark_never_passes_an_event_still_held() {
        let claims = Claims::new(10);
        assert_eq!(claims.begin(Kind::Replay), 10);
        claims.take_new(&[11, 12, 13]);
        assert_eq!(claims.watermark(), 10);
        claims.finish_event(12);
        assert_eq!(claims.watermark(), 10, "11 is still being routed");
        claims.finish_event(11);
        assert_eq!(claims.watermark(), 12);
        claims.finish_event(13);
        assert_eq!(claims.watermark(), 13);
        assert_eq!(claims.begin(Kind::Replay), 13);
    }

    #[test]
    fn a_finished_row_is_not_handed_out_again_until_the_next_claim_begins() {
        let claims = Claims::new(0);
        claims.begin(Kind::Delivery);
        assert!(claims.take(Kind::Delivery, 7));
        assert!(!claims.take(Kind::Delivery, 7), "held");
        claims.finish(Kind::Delivery, 7);
        assert!(
            !claims.take(Kind::Delivery, 7),
            "a read begun before the result committed may still show it"
        );
        claims.begin(Kind::Delivery);
        assert!(claims.take(Kind::Delivery, 7), "free again");
    }

    #[test]
    fn one_delivery_per_subject_is_held_until_its_result_and_the_next_claim() {
        let claims = Claims::new(0);
        claims.begin(Kind::Delivery);
        assert!(claims.take_ordered(1, "d", "s".into()));
        assert!(
            !claims.take_ordered(2, "d", "s".into()),
            "an older event of the subject that arrived late must wait"
        );
        assert!(claims.take_ordered(3, "d", "t".into()), "another subject");
        assert!(
            claims.take_ordered(4, "e", "s".into()),
            "another destination"
        );
        claims.finish(Kind::Delivery, 1);
        assert!(!claims.take_ordered(2, "d", "s".into()));
        claims.begin(Kind::Delivery);
        assert!(claims.take_ordered(2, "d", "s".into()));
    }

    #[test]
    fn a_replay_is_finished_by_its_routing_result() {
        let claims = Claims::new(5);
        claims.begin(Kind::Replay);
        assert!(claims.take(Kind::Replay, 3));
        claims.finish_event(3);
        assert_eq!(
            claims.watermark(),
            5,
            "a replay does not move the watermark"
        );
        claims.begin(Kind::Replay);
        assert!(claims.take(Kind::Replay, 3));
    }
}
