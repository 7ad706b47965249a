//! Ordered delivery, the same on both backends: the claim hands out a subject's deliveries to
//! a destination one at a time in ordering-key order (not arrival order), other subjects go on
//! meanwhile, a failing delivery holds only its own subject, a dead one holds it until a
//! redrive or a skip unless it was recorded as not holding (`on_dead = "skip"`), an event
//! older than one already delivered is claimed marked stale, and an earlier event of a subject
//! that is stored but not routed yet, or waits for a plugin retry, holds the subject until
//! its routing finishes, whether or not it brings a delivery.

use super::{Harness, event, stored_seq};
use crate::store::{
    AttemptDone, AttemptRecord, DeliveryOrder, DeliveryState, DueDelivery, EventStatus,
    NewDelivery, NewEvent, Processed, RedriveSelection, RouteRunState, RouteRunUpdate, Store,
};
use std::sync::Arc;

fn ordered(subject: &str, provider_ms: i64, due_at: i64) -> NewDelivery {
    NewDelivery {
        route: "r".into(),
        destination: "d".into(),
        webhook_id: format!("ledger:{subject}:{provider_ms}"),
        envelope: None,
        state: DeliveryState::Pending {
            next_attempt_ms: due_at,
        },
        attempts: Vec::new(),
        order: Some(DeliveryOrder {
            subject: subject.into(),
            provider_ms,
            provider_next_ms: 0,
        }),
        stuck: None,
    }
}

/// Stores one event per delivery and records each delivery as its routing; returns the
/// events' seqs.
async fn route(store: &Arc<dyn Store>, key: &str, deliveries: Vec<NewDelivery>) -> Vec<i64> {
    let mut processed = Vec::new();
    let mut seqs = Vec::new();
    for (n, d) in deliveries.into_iter().enumerate() {
        let at = super::super::unix_ms();
        let seq = stored_seq(
            store
                .ingest(event("ledger", &format!("{key}{n}"), at))
                .await
                .expect("ingests"),
        );
        seqs.push(seq);
        processed.push(Processed {
            seq,
            status: EventStatus::Routed,
            steps: Vec::new(),
            deliveries: vec![d],
            route_runs: Vec::new(),
            append: false,
        });
    }
    // Claimed first, as the workers do: PostgreSQL writes only results it holds claims on.
    let claimed = store.claim_events(1_000).await.expect("claims events");
    assert_eq!(claimed.len(), seqs.len());
    store
        .complete(Arc::new(processed))
        .await
        .expect("completes");
    seqs
}

async fn claim(store: &Arc<dyn Store>, now: i64) -> Vec<DueDelivery> {
    let mut due = store.claim_due_deliveries(now, 100).await.expect("claims");
    due.sort_by_key(|d| d.webhook_id.clone());
    due
}

fn ids(due: &[DueDelivery]) -> Vec<&str> {
    due.iter().map(|d| d.webhook_id.as_str()).collect()
}

async fn settle(store: &Arc<dyn Store>, due: &DueDelivery, state: DeliveryState, holds: bool) {
    store
        .record_attempt(AttemptDone {
            delivery_id: due.id,
            attempt: AttemptRecord {
                at: super::super::unix_ms(),
                status: Some(if state == DeliveryState::Delivered {
                    200
                } else {
                    503
                }),
                error: None,
                duration_ms: 1,
            },
            state,
            holds_subject: holds,
            stuck: None,
        })
        .await
        .expect("records");
}

pub(super) async fn a_subject_is_delivered_one_at_a_time_in_provider_order(h: &mut Harness) {
    let store = h.open().await;
    let now = super::super::unix_ms();
    // Arrived newest first; `t` is another subject, `u` an unordered delivery.
    let mut unordered = ordered("u", 0, now);
    unordered.order = None;
    route(
        &store,
        "o",
        vec![
            ordered("s", 300, now),
            ordered("s", 200, now),
            ordered("t", 50, now),
            ordered("s", 100, now),
            unordered,
        ],
    )
    .await;
    let due = claim(&store, now).await;
    assert_eq!(ids(&due), ["ledger:s:100", "ledger:t:50", "ledger:u:0"]);
    assert!(claim(&store, now).await.is_empty(), "one of `s` in flight");

    for d in &due {
        settle(&store, d, DeliveryState::Delivered, true).await;
    }
    let next = claim(&store, now).await;
    assert_eq!(ids(&next), ["ledger:s:200"]);
    // It fails and waits for its next attempt: `s` waits with it, counted as blocked.
    let retry_at = now + 60_000;
    let waiting = DeliveryState::Pending {
        next_attempt_ms: retry_at,
    };
    settle(&store, &next[0], waiting, true).await;
    assert!(
        claim(&store, now).await.is_empty(),
        "s:300 waits behind s:200"
    );
    let blocked = store.blocked_subjects(10).await.expect("lists");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        (
            blocked[0].subject.as_str(),
            blocked[0].delivery_id,
            blocked[0].waiting
        ),
        ("s", Some(next[0].id), 1)
    );
    assert_eq!(blocked[0].status, "pending");

    // Dead and holding: nothing of `s` goes until the redrive, which keeps its place.
    let again = claim(&store, retry_at).await;
    assert_eq!(ids(&again), ["ledger:s:200"]);
    let dead = DeliveryState::Dead {
        reason: "gave up".into(),
    };
    settle(&store, &again[0], dead, true).await;
    assert!(
        claim(&store, i64::MAX).await.is_empty(),
        "held by the dead letter"
    );
    let blocked = store.blocked_subjects(10).await.expect("lists");
    assert_eq!(
        blocked
            .iter()
            .map(|b| b.status.as_str())
            .collect::<Vec<_>>(),
        ["dead"]
    );
    // Survives a restart: the hold is stored, not remembered.
    h.close(store).await;
    let store = h.open().await;
    assert!(claim(&store, i64::MAX).await.is_empty(), "still held");
    let redriven = store
        .redrive(RedriveSelection::Deliveries(vec![again[0].id]))
        .await
        .expect("redrives");
    assert_eq!(redriven, 1);
    let after = claim(&store, i64::MAX).await;
    assert_eq!(ids(&after), ["ledger:s:200"], "the redriven one first");
    settle(&store, &after[0], DeliveryState::Delivered, true).await;
    let last = claim(&store, i64::MAX).await;
    assert_eq!(ids(&last), ["ledger:s:300"]);
    assert!(!last[0].stale);
    settle(&store, &last[0], DeliveryState::Delivered, true).await;

    // An older event of `s` arriving now is stale; it is claimed (the worker decides) marked so.
    route(&store, "late", vec![ordered("s", 150, now)]).await;
    let late = claim(&store, i64::MAX).await;
    assert_eq!(ids(&late), ["ledger:s:150"]);
    assert!(late[0].stale);
    let dropped = DeliveryState::Dropped {
        reason: "stale".into(),
    };
    settle(&store, &late[0], dropped, true).await;
    assert_eq!(
        h.count("SELECT count(*) FROM deliveries WHERE status = 'dropped'"),
        1
    );
    assert!(store.blocked_subjects(10).await.expect("lists").is_empty());
    // A dropped delivery is finished: retention deletes its event (the newest never).
    route(&store, "newest", vec![ordered("z", 1, i64::MAX)]).await;
    store
        .expire_events(i64::MAX, 0, 1_000)
        .await
        .expect("expires");
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE dedup_key = 'late0'"),
        0
    );
    h.close(store).await;
}

pub(super) async fn a_dead_letter_that_does_not_hold_or_is_skipped_lets_its_subject_go_on(
    h: &mut Harness,
) {
    let store = h.open().await;
    let now = super::super::unix_ms();
    route(
        &store,
        "k",
        vec![
            ordered("a", 1, now),
            ordered("a", 2, now),
            ordered("b", 1, now),
            ordered("b", 2, now),
            ordered("c", 1, now + 60_000),
            ordered("c", 2, now),
        ],
    )
    .await;
    let due = claim(&store, now).await;
    assert_eq!(
        ids(&due),
        ["ledger:a:1", "ledger:b:1"],
        "c:2 waits behind c:1 (not due)"
    );
    let dead = || DeliveryState::Dead {
        reason: "410".into(),
    };
    // on_dead = "skip": recorded as not holding.
    settle(&store, &due[0], dead(), false).await;
    settle(&store, &due[1], dead(), true).await;
    assert_eq!(ids(&claim(&store, now).await), ["ledger:a:2"]);
    // An operator skips b:1.
    let blocked = store.blocked_subjects(10).await.expect("lists");
    assert_eq!(
        blocked
            .iter()
            .map(|b| b.subject.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(store.skip_blocking(due[1].id).await.expect("skips"), 1);
    assert_eq!(
        store.skip_blocking(due[1].id).await.expect("skips"),
        0,
        "once"
    );
    assert_eq!(ids(&claim(&store, now).await), ["ledger:b:2"]);
    // A waiting head can be skipped too: c:1 is dropped and c:2 goes.
    let c1 = store.blocked_subjects(10).await.expect("lists");
    assert!(c1.is_empty(), "c:1 has not failed yet: {c1:?}");
    let c1_id = h.count("SELECT id FROM deliveries WHERE webhook_id = 'ledger:c:1'");
    assert_eq!(store.skip_blocking(c1_id).await.expect("skips"), 1);
    assert_eq!(ids(&claim(&store, now).await), ["ledger:c:2"]);
    h.close(store).await;
}

/// An event about `subject` at the provider's time `provider_ms`, as ingest builds it.
fn event_about(key: &str, subject: &str, provider_ms: i64) -> NewEvent {
    NewEvent {
        subject: None,
        order: Some(DeliveryOrder {
            subject: subject.into(),
            provider_ms,
            provider_next_ms: 0,
        }),
        ..event("ledger", key, super::super::unix_ms())
    }
}

fn first_routing(seq: i64, deliveries: Vec<NewDelivery>, runs: Vec<RouteRunUpdate>) -> Processed {
    Processed {
        seq,
        status: if runs.is_empty() {
            EventStatus::Routed
        } else {
            EventStatus::Retrying
        },
        steps: Vec::new(),
        deliveries,
        route_runs: runs,
        append: false,
    }
}

pub(super) async fn an_unrouted_event_holds_its_subject_until_its_routing_finishes(
    h: &mut Harness,
) {
    let store = h.open().await;
    let now = super::super::unix_ms();
    let mut seqs = Vec::new();
    for (key, subject, at) in [
        ("a", "s", 100),
        ("b", "s", 200),
        ("c", "t", 50),
        ("z", "", 0),
    ] {
        let mut e = event_about(key, subject, at);
        if subject.is_empty() {
            e.order = None;
        }
        seqs.push(stored_seq(store.ingest(e).await.expect("ingests")));
    }
    assert_eq!(store.claim_events(10).await.expect("claims").len(), 4);
    // `b` (s:200) and `c` are routed; `a` (s:100), stored before them, is not yet.
    store
        .complete(Arc::new(vec![
            first_routing(seqs[1], vec![ordered("s", 200, now)], Vec::new()),
            first_routing(seqs[2], vec![ordered("t", 50, now)], Vec::new()),
            first_routing(seqs[3], Vec::new(), Vec::new()),
        ]))
        .await
        .expect("completes");
    let due = claim(&store, now).await;
    assert_eq!(
        ids(&due),
        ["ledger:t:50"],
        "s:200 waits for the unrouted s:100"
    );
    settle(&store, &due[0], DeliveryState::Delivered, true).await;
    let blocked = store.blocked_subjects(10).await.expect("lists");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let b = &blocked[0];
    assert_eq!(
        (
            b.subject.as_str(),
            b.delivery_id,
            b.event_seq,
            b.status.as_str()
        ),
        ("s", None, seqs[0], "unrouted")
    );
    assert_eq!(b.waiting, 1);

    // Its routing waits for a plugin retry: still holding.
    let retry = RouteRunUpdate {
        id: None,
        route: "r".into(),
        state: RouteRunState::Retry {
            next_attempt_ms: now,
        },
        reason: "plugin asked for a retry".into(),
        attempts: 1,
    };
    store
        .complete(Arc::new(vec![first_routing(
            seqs[0],
            Vec::new(),
            vec![retry],
        )]))
        .await
        .expect("completes");
    assert!(claim(&store, now).await.is_empty(), "held by the retry");
    let blocked = store.blocked_subjects(10).await.expect("lists");
    assert_eq!(
        blocked
            .iter()
            .map(|b| (b.event_seq, b.status.as_str()))
            .collect::<Vec<_>>(),
        [(seqs[0], "plugin_retry")]
    );

    // The retry drops the event (no delivery for this destination): the hold ends.
    let runs = store
        .claim_due_route_runs(now, 10)
        .await
        .expect("claims runs");
    assert_eq!(runs.len(), 1);
    store
        .complete(Arc::new(vec![Processed {
            seq: seqs[0],
            status: EventStatus::Dropped,
            steps: Vec::new(),
            deliveries: Vec::new(),
            route_runs: vec![RouteRunUpdate {
                id: Some(runs[0].id),
                route: "r".into(),
                state: RouteRunState::Done,
                reason: String::new(),
                attempts: 2,
            }],
            append: true,
        }]))
        .await
        .expect("completes");
    assert_eq!(ids(&claim(&store, now).await), ["ledger:s:200"]);
    assert!(store.blocked_subjects(10).await.expect("lists").is_empty());
    h.close(store).await;
}
