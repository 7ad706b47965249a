//! One conformance suite for every store backend: each case below runs against the embedded
//! SQLite store (a temp file) and against PostgreSQL (a throwaway cluster started from the
//! system's server binaries, fsync on). A case sees a backend only through [`Store`] and
//! through plain SQL counts that mean the same on both, so a behaviour one backend has and the
//! other lacks fails here: the ack path (dedup, object states, quarantine) and the claim-based
//! work API (events, deliveries and replays handed out once, finished by their results, handed
//! out again after a stop).
//!
//! Restarts are real: the store is closed (SQLite: its writer thread joined) and opened again
//! on the same data.

use super::{
    AttemptDone, AttemptRecord, DeliveryState, EventFilter, EventStatus, IngestOutcome,
    NewDelivery, NewEvent, ObjectStateClaim, PgOptions, PgStore, PluginStep, Processed,
    QuarantinedBody, SqliteStore, Store, WriterThread,
};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

mod dead_letters;
mod ordering;
mod search;
use dead_letters::dead_letter_groups_sum_the_amounts_kept_when_deliveries_die;
use ordering::{
    a_dead_letter_that_does_not_hold_or_is_skipped_lets_its_subject_go_on,
    a_subject_is_delivered_one_at_a_time_in_provider_order,
    an_unrouted_event_holds_its_subject_until_its_routing_finishes,
};
use search::{
    ids_type_globs_and_time_ranges_find_exactly_their_events,
    subjects_find_exactly_their_events_saved_unsaved_or_older,
};

const WINDOW: Duration = Duration::from_secs(3600);

/// A backend with its data, opened and closed by the cases.
enum Harness {
    Sqlite {
        dir: tempfile::TempDir,
        writer: Option<WriterThread>,
    },
    Postgres {
        cluster: throwaway_pg::Cluster,
    },
}

impl Harness {
    fn sqlite() -> Self {
        Self::Sqlite {
            dir: tempfile::tempdir().expect("tempdir"),
            writer: None,
        }
    }

    fn postgres() -> Self {
        let cluster = throwaway_pg::Cluster::start().expect("a throwaway PostgreSQL cluster");
        cluster.create_database("gateway").expect("createdb");
        Self::Postgres { cluster }
    }

    async fn open(&mut self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite { dir, writer } => {
                let (store, thread) = SqliteStore::open(
                    &dir.path().join("g.db"),
                    WINDOW,
                    Metrics::new().expect("metrics"),
                )
                .expect("opens");
                *writer = Some(thread);
                Arc::new(store)
            }
            Self::Postgres { cluster } => Arc::new(
                PgStore::connect(
                    &cluster.conninfo("gateway"),
                    &PgOptions::default(),
                    Metrics::new().expect("metrics"),
                )
                .await
                .expect("connects"),
            ),
        }
    }

    /// Closes a store: every clone of it must be dropped by then.
    async fn close(&mut self, store: Arc<dyn Store>) {
        drop(store);
        if let Self::Sqlite { writer, .. } = self
            && let Some(thread) = writer.take()
        {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("joins");
        }
    }

    /// Runs SQL that changes the data (for simulating a store of an older version).
    fn exec(&self, sql: &str) {
        match self {
            Self::Sqlite { dir, .. } => rusqlite::Connection::open(dir.path().join("g.db"))
                .expect("opens")
                .execute_batch(sql)
                .expect("runs"),
            Self::Postgres { cluster } => {
                cluster.psql("gateway", sql).expect("runs");
            }
        }
    }

    /// One integer from SQL both backends understand.
    fn count(&self, sql: &str) -> i64 {
        match self {
            Self::Sqlite { dir, .. } => rusqlite::Connection::open(dir.path().join("g.db"))
                .expect("reads")
                .query_row(sql, [], |r| r.get(0))
                .expect("counts"),
            Self::Postgres { cluster } => cluster
                .psql("gateway", sql)
                .expect("counts")
                .trim()
                .parse()
                .expect("a number"),
        }
    }
}

/// A minimal event with this source and dedup key, arrived at `at` (also used by each
/// backend's own tests).
pub(super) fn event(source: &str, key: &str, at: i64) -> NewEvent {
    NewEvent {
        subject: None,
        source: source.into(),
        dedup_key: key.into(),
        event_type: "ledger.webhook.test".into(),
        envelope: "{}".into(),
        data_span: None,
        raw_body: bytes::Bytes::from_static(b"{}"),
        headers: "{}".into(),
        received_at_ms: at,
        order: None,
        object_state: None,
    }
}

/// A delivery of an object's state (a Ledig event), arrived at `at`.
fn state_event(key: &str, object: u8, state: u8, at: i64) -> NewEvent {
    NewEvent {
        subject: None,
        order: None,
        object_state: Some(ObjectStateClaim {
            object: [object; 32],
            state: [state; 32],
            retry_window_ms: 60_000,
        }),
        ..event("ledig", key, at)
    }
}

fn is_stored(outcome: IngestOutcome) -> bool {
    matches!(outcome, IngestOutcome::Stored { .. })
}

async fn concurrent_copies_are_stored_once_and_known_after_a_restart(h: &mut Harness) {
    let store = h.open().await;
    let now = super::unix_ms();
    let copies: Vec<_> = (0..20)
        .map(|_| {
            let s = Arc::clone(&store);
            tokio::spawn(async move { s.ingest(event("ledger", "evt_1", now)).await })
        })
        .collect();
    let mut stored = 0;
    for c in copies {
        stored += usize::from(is_stored(c.await.expect("joins").expect("ingests")));
    }
    assert_eq!(stored, 1);
    h.close(store).await;

    let store = h.open().await;
    assert_eq!(
        store
            .ingest(event("ledger", "evt_1", now))
            .await
            .expect("ingests"),
        IngestOutcome::Duplicate
    );
    // Once the key has left the window, the same key is a new event again.
    let mut forgotten = 0;
    loop {
        let step = store.prune_dedup(now + 1).await.expect("prunes");
        forgotten += step.forgotten;
        if step.done {
            break;
        }
    }
    assert_eq!(forgotten, 1);
    assert!(is_stored(
        store
            .ingest(event("ledger", "evt_1", now + 2))
            .await
            .expect("ingests")
    ));
    h.close(store).await;
    assert_eq!(h.count("SELECT count(*) FROM events"), 2);
}

async fn the_same_key_from_two_sources_is_two_events(h: &mut Harness) {
    let store = h.open().await;
    let now = super::unix_ms();
    for source in ["ledig_eu", "ledig_us"] {
        let outcome = store.ingest(event(source, "pay_77", now)).await;
        assert!(is_stored(outcome.expect("ingests")), "{source}");
    }
    h.close(store).await;
    assert_eq!(h.count("SELECT count(*) FROM events"), 2);
}

async fn every_event_of_a_burst_gets_its_own_sequence(h: &mut Harness) {
    let store = h.open().await;
    let now = super::unix_ms();
    let sends: Vec<_> = (0..300)
        .map(|i| {
            let s = Arc::clone(&store);
            tokio::spawn(async move { s.ingest(event("ledger", &format!("e{i}"), now)).await })
        })
        .collect();
    let mut seqs = std::collections::HashSet::new();
    for s in sends {
        match s.await.expect("joins").expect("ingests") {
            IngestOutcome::Stored { seq } => assert!(seqs.insert(seq), "seq {seq} twice"),
            IngestOutcome::Duplicate => panic!("a new key answered as a duplicate"),
        }
    }
    h.close(store).await;
    assert_eq!(h.count("SELECT count(*) FROM events"), 300);
    assert_eq!(h.count("SELECT count(DISTINCT seq) FROM events"), 300);
}

async fn object_states_keep_changes_drop_retries_and_survive_a_restart(h: &mut Harness) {
    let store = h.open().await;
    let t = super::unix_ms();
    // Concurrent copies of one state: stored once (check and insert are one step). Their keys
    // differ from the later offers': PostgreSQL also keeps each key unique, which a real Ledig
    // key (object, state and arrival time) never makes disagree with the state rule.
    let copies: Vec<_> = (0..10)
        .map(|i| {
            let s = Arc::clone(&store);
            tokio::spawn(
                async move { s.ingest(state_event(&format!("copy{i}"), 1, b'a', t)).await },
            )
        })
        .collect();
    let mut stored = 0;
    for c in copies {
        stored += usize::from(is_stored(c.await.expect("joins").expect("ingests")));
    }
    assert_eq!(stored, 1);
    let offer = async |store: &Arc<dyn Store>, key: &str, state: u8, at: i64| {
        is_stored(
            store
                .ingest(state_event(key, 1, state, at))
                .await
                .expect("ingests"),
        )
    };
    assert!(offer(&store, "b", b'b', t + 10).await, "A -> B: new");
    assert!(!offer(&store, "b2", b'b', t + 20).await, "B again: a retry");
    assert!(offer(&store, "a2", b'a', t + 30).await, "B -> A: new");
    let other = store.ingest(state_event("other", 2, b'a', t + 30)).await;
    assert!(
        is_stored(other.expect("ingests")),
        "the same state of another object is another event"
    );
    h.close(store).await;

    // After a restart the latest state is known; past the window a copy is new.
    let store = h.open().await;
    assert!(
        !offer(&store, "a3", b'a', t + 40).await,
        "a retry after a restart"
    );
    assert!(
        offer(&store, "a4", b'a', t + 30 + 60_000).await,
        "past the window"
    );
    // Pruning forgets states whose window is over, and only those: first the other object's
    // (its window ended with a2's), then this one's (a4's).
    let step = store
        .prune_object_states(t + 30 + 60_000 - 1)
        .await
        .expect("prunes");
    assert_eq!((step.forgotten, step.done), (0, true));
    let step = store
        .prune_object_states(t + 30 + 60_000)
        .await
        .expect("prunes");
    assert_eq!((step.forgotten, step.done), (1, true));
    let step = store
        .prune_object_states(t + 30 + 120_000)
        .await
        .expect("prunes");
    assert_eq!((step.forgotten, step.done), (1, true));
    h.close(store).await;
    assert_eq!(
        h.count("SELECT count(*) FROM events"),
        5,
        "a, b, a2, other, a4"
    );
}

async fn states_of_one_object_in_one_burst_are_decided_in_turn(h: &mut Harness) {
    let store = h.open().await;
    let t = super::unix_ms();
    // A, B, A of one object sent at once: whatever order they are decided in, no two equal
    // states in a row are both stored, and at least the first one and one change are.
    let sends: Vec<_> = [b'a', b'b', b'a', b'b']
        .into_iter()
        .enumerate()
        .map(|(i, state)| {
            let s = Arc::clone(&store);
            tokio::spawn(async move {
                s.ingest(state_event(&format!("k{i}"), 9, state, t + 1))
                    .await
            })
        })
        .collect();
    let mut stored = 0;
    for s in sends {
        stored += usize::from(is_stored(s.await.expect("joins").expect("ingests")));
    }
    assert!((2..=4).contains(&stored), "{stored}");
    h.close(store).await;
    assert_eq!(h.count("SELECT count(*) FROM object_states"), 1);
}

async fn a_repeated_quarantined_body_is_counted_on_its_row(h: &mut Harness) {
    let store = h.open().await;
    let bad = |source: &str, body: &'static [u8], at: i64| QuarantinedBody {
        source: source.into(),
        reason: "body is not valid JSON".into(),
        raw_body: bytes::Bytes::from_static(body),
        headers: "{}".into(),
        received_at_ms: at,
    };
    for at in [1_000, 3_000, 2_000] {
        store
            .quarantine(bad("ledig", b"{not json", at))
            .await
            .expect("kept");
    }
    store
        .quarantine(bad("ledger", b"{not json", 4_000))
        .await
        .expect("kept");
    store
        .quarantine(bad("ledig", b"{not json!", 5_000))
        .await
        .expect("kept");
    assert_eq!(h.count("SELECT count(*) FROM quarantine"), 3);
    assert_eq!(h.count("SELECT max(repeats) FROM quarantine"), 3);
    assert_eq!(
        h.count("SELECT max(last_seen_at) FROM quarantine WHERE repeats = 3"),
        3_000
    );
    // Retention: rows last seen before the cutoff go, in steps; the pass ends at the first
    // row that arrived after it.
    let mut deleted = 0;
    let mut after = 0;
    loop {
        let step = store
            .expire_quarantine(4_500, after, 1)
            .await
            .expect("expires");
        deleted += step.deleted;
        match step.resume_after {
            Some(id) => after = id,
            None => break,
        }
    }
    assert_eq!(deleted, 2);
    assert_eq!(h.count("SELECT count(*) FROM quarantine"), 1);
    store.check_writable().await.expect("writable");
    h.close(store).await;
}

fn stored_seq(outcome: IngestOutcome) -> i64 {
    match outcome {
        IngestOutcome::Stored { seq } => seq,
        IngestOutcome::Duplicate => panic!("expected a new event"),
    }
}

fn step(result: &str) -> PluginStep {
    PluginStep {
        route: "r".into(),
        plugin: "p".into(),
        result: result.into(),
        reason: None,
        micros: 1,
    }
}

fn routing(seq: i64, status: EventStatus, deliveries: Vec<NewDelivery>) -> Processed {
    Processed {
        seq,
        status,
        steps: vec![step("pass")],
        deliveries,
        route_runs: Vec::new(),
        append: false,
    }
}

fn waiting_delivery(due_at: i64) -> NewDelivery {
    NewDelivery {
        route: "r".into(),
        destination: "d".into(),
        webhook_id: "ledger:k".into(),
        envelope: None,
        state: DeliveryState::Pending {
            next_attempt_ms: due_at,
        },
        attempts: vec![AttemptRecord {
            at: due_at - 1,
            status: Some(503),
            error: None,
            duration_ms: 1,
        }],
        order: None,
        stuck: None,
    }
}

async fn claimed_work_is_handed_out_once_and_finished_by_its_result(h: &mut Harness) {
    let store = h.open().await;
    let now = super::unix_ms();
    let mut seqs = Vec::new();
    for key in ["w1", "w2", "w3"] {
        seqs.push(stored_seq(
            store
                .ingest(event("ledger", key, now))
                .await
                .expect("ingests"),
        ));
    }
    let claimed = store.claim_events(10).await.expect("claims");
    assert_eq!(
        claimed.iter().map(|c| c.event.seq).collect::<Vec<_>>(),
        seqs
    );
    assert!(claimed.iter().all(|c| !c.replay));
    assert_eq!(claimed[0].event.id, "w1");
    assert!(
        store.claim_events(10).await.expect("claims").is_empty(),
        "all held"
    );
    store
        .complete(Arc::new(vec![
            routing(seqs[0], EventStatus::Routed, vec![waiting_delivery(now)]),
            routing(seqs[1], EventStatus::Unrouted, Vec::new()),
        ]))
        .await
        .expect("completes");
    assert!(
        store.claim_events(10).await.expect("claims").is_empty(),
        "w3 still held"
    );
    let backlog = store.backlog().await.expect("counts");
    assert_eq!(backlog.queue_depth, 2, "w3 and the waiting delivery");

    let due = store.claim_due_deliveries(now, 10).await.expect("claims");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].event_seq, due[0].attempts), (seqs[0], 1));
    assert!(
        store
            .claim_due_deliveries(now, 10)
            .await
            .expect("claims")
            .is_empty(),
        "held"
    );
    store
        .record_attempt(AttemptDone {
            delivery_id: due[0].id,
            attempt: AttemptRecord {
                at: now,
                status: Some(200),
                error: None,
                duration_ms: 2,
            },
            state: DeliveryState::Delivered,
            holds_subject: false,
            stuck: None,
        })
        .await
        .expect("records");
    assert!(
        store
            .claim_due_deliveries(i64::MAX, 10)
            .await
            .expect("claims")
            .is_empty()
    );
    let detail = store.event(seqs[0]).await.expect("reads").expect("exists");
    assert_eq!(detail.summary.status, "routed");
    assert_eq!(detail.deliveries[0].status, "delivered");
    assert_eq!(detail.deliveries[0].history.len(), 2);
    let unrouted = store.event(seqs[1]).await.expect("reads").expect("exists");
    assert_eq!(unrouted.summary.status, "unrouted");
    h.close(store).await;
}

async fn a_replay_is_claimed_once_and_adds_its_steps(h: &mut Harness) {
    let store = h.open().await;
    let seq = stored_seq(
        store
            .ingest(event("ledger", "r1", super::unix_ms()))
            .await
            .expect("ingests"),
    );
    store.claim_events(10).await.expect("claims");
    store
        .complete(Arc::new(vec![routing(
            seq,
            EventStatus::Routed,
            Vec::new(),
        )]))
        .await
        .expect("completes");
    let only = EventFilter {
        seq: Some(seq),
        ..EventFilter::default()
    };
    assert_eq!(
        store.request_replay(only.clone(), 10).await.expect("marks"),
        1
    );
    assert_eq!(
        store.request_replay(only, 10).await.expect("marks"),
        0,
        "marked already"
    );
    let claimed = store.claim_events(10).await.expect("claims");
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].replay);
    assert!(
        store.claim_events(10).await.expect("claims").is_empty(),
        "held"
    );
    let mut again = routing(seq, EventStatus::Unrouted, Vec::new());
    again.append = true;
    again.steps = vec![step("drop")];
    store
        .complete(Arc::new(vec![again]))
        .await
        .expect("completes");
    let detail = store.event(seq).await.expect("reads").expect("exists");
    assert_eq!(detail.summary.status, "unrouted");
    let results: Vec<&str> = detail
        .plugin_results
        .iter()
        .map(|s| s.result.as_str())
        .collect();
    assert_eq!(results, ["pass", "drop"]);
    assert!(store.claim_events(10).await.expect("claims").is_empty());
    h.close(store).await;
}

/// The console's dry run counts exactly what the replay then marks (routed events of the
/// filter, newest first, up to the limit; not the pending ones), and audit records come back
/// newest first, paged, after a restart.
async fn a_replay_dry_run_counts_what_the_replay_marks_and_audit_records_persist(h: &mut Harness) {
    let store = h.open().await;
    let now = super::unix_ms();
    let mut seqs = Vec::new();
    for (source, key) in [("a", "d1"), ("a", "d2"), ("a", "d3"), ("b", "d4")] {
        seqs.push(stored_seq(
            store
                .ingest(event(source, key, now))
                .await
                .expect("ingests"),
        ));
    }
    store.claim_events(10).await.expect("claims");
    let done: Vec<Processed> = seqs[..3]
        .iter()
        .map(|&s| routing(s, EventStatus::Routed, Vec::new()))
        .collect();
    store.complete(Arc::new(done)).await.expect("completes");
    // seqs[3] (source b) is still pending: neither counted nor marked.
    for (filter, limit, expected) in [
        (EventFilter::default(), 10, 3),
        (
            EventFilter {
                source: Some("a".into()),
                ..EventFilter::default()
            },
            2,
            2,
        ),
        (
            EventFilter {
                source: Some("b".into()),
                ..EventFilter::default()
            },
            10,
            0,
        ),
    ] {
        let counted = store
            .count_replay(filter.clone(), limit)
            .await
            .expect("counts");
        assert_eq!(counted, expected, "{filter:?}");
    }
    let filter = EventFilter {
        source: Some("a".into()),
        ..EventFilter::default()
    };
    let counted = store
        .count_replay(filter.clone(), 10)
        .await
        .expect("counts");
    assert_eq!(
        store
            .request_replay(filter.clone(), 10)
            .await
            .expect("marks"),
        counted
    );
    assert_eq!(
        store.count_replay(filter, 10).await.expect("counts"),
        0,
        "marked already"
    );

    for (i, action) in ["replay", "redrive", "replay"].into_iter().enumerate() {
        let record = super::AuditRecord {
            id: 0,
            at: now + i64::try_from(i).expect("small"),
            actor: format!("alice-{i}"),
            action: action.into(),
            selection: "source=a limit=10".into(),
            count: 3,
        };
        store.record_audit(record).await.expect("records");
    }
    h.close(store).await;
    let store = h.open().await;
    let page = store.list_audit(None, 2).await.expect("lists");
    let actors: Vec<&str> = page.iter().map(|r| r.actor.as_str()).collect();
    assert_eq!(actors, ["alice-2", "alice-1"]);
    assert_eq!((page[0].action.as_str(), page[0].count), ("replay", 3));
    let rest = store.list_audit(Some(page[1].id), 10).await.expect("lists");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].actor, "alice-0");
    h.close(store).await;
}

async fn unfinished_work_is_handed_out_again_after_a_stop(h: &mut Harness) {
    let store = h.open().await;
    let now = super::unix_ms();
    let a = stored_seq(
        store
            .ingest(event("ledger", "s1", now))
            .await
            .expect("ingests"),
    );
    let b = stored_seq(
        store
            .ingest(event("ledger", "s2", now))
            .await
            .expect("ingests"),
    );
    assert_eq!(store.claim_events(10).await.expect("claims").len(), 2);
    store
        .complete(Arc::new(vec![routing(
            a,
            EventStatus::Routed,
            vec![waiting_delivery(now)],
        )]))
        .await
        .expect("completes");
    assert_eq!(
        store
            .claim_due_deliveries(now, 10)
            .await
            .expect("claims")
            .len(),
        1
    );
    // A graceful stop: what is still claimed is given back.
    store.release_claims().await.expect("releases");
    h.close(store).await;
    let store = h.open().await;
    let claimed = store.claim_events(10).await.expect("claims");
    assert_eq!(claimed.iter().map(|c| c.event.seq).collect::<Vec<_>>(), [b]);
    assert_eq!(
        store
            .claim_due_deliveries(super::unix_ms(), 10)
            .await
            .expect("claims")
            .len(),
        1,
        "the delivery whose attempt was not made"
    );
    h.close(store).await;
}

/// Runs each case on SQLite and on PostgreSQL.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&mut super::Harness::sqlite()).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&mut super::Harness::postgres()).await;
                }
            )*
        }
    };
}

conformance!(
    concurrent_copies_are_stored_once_and_known_after_a_restart,
    the_same_key_from_two_sources_is_two_events,
    every_event_of_a_burst_gets_its_own_sequence,
    object_states_keep_changes_drop_retries_and_survive_a_restart,
    states_of_one_object_in_one_burst_are_decided_in_turn,
    a_repeated_quarantined_body_is_counted_on_its_row,
    claimed_work_is_handed_out_once_and_finished_by_its_result,
    a_replay_is_claimed_once_and_adds_its_steps,
    a_replay_dry_run_counts_what_the_replay_marks_and_audit_records_persist,
    unfinished_work_is_handed_out_again_after_a_stop,
    a_subject_is_delivered_one_at_a_time_in_provider_order,
    a_dead_letter_that_does_not_hold_or_is_skipped_lets_its_subject_go_on,
    an_unrouted_event_holds_its_subject_until_its_routing_finishes,
    ids_type_globs_and_time_ranges_find_exactly_their_events,
    subjects_find_exactly_their_events_saved_unsaved_or_older,
    dead_letter_groups_sum_the_amounts_kept_when_deliveries_die,
);
