//! The admin API's searches on every backend: by the provider's event id, by subject, by a type
//! glob and by a time range, in listings, replay dry-run counts and replays alike.

use super::super::{EventFilter, EventSummary, Store};
use super::{Harness, event, routing, stored_seq};
use crate::store::EventStatus;
use crate::store::NewEvent;
use std::sync::Arc;

fn seqs(events: &[EventSummary]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

async fn list(store: &Arc<dyn Store>, filter: EventFilter, limit: u32) -> Vec<i64> {
    seqs(&store.list_events(filter, limit).await.expect("lists"))
}

pub(super) async fn ids_type_globs_and_time_ranges_find_exactly_their_events(h: &mut Harness) {
    let store = h.open().await;
    // Old events of two sources and three types, then many of one recent kind: more than the
    // dedup index saves at once (SQLite finds an id among saved keys and in the unsaved tail).
    let old = [
        ("shop", "shared", "payment.succeeded"),
        ("bank", "shared", "payment.failed"),
        ("shop", "evt_2", "payment.failed"),
        ("shop", "evt_3", "refund.created"),
        ("bank", "evt_4", "payment.succeeded"),
    ];
    let mut old_seqs = Vec::new();
    for (i, (source, key, event_type)) in (1_i64..).zip(old) {
        let mut e = event(source, key, 1_000 * i);
        e.event_type = event_type.into();
        old_seqs.push(stored_seq(store.ingest(e).await.expect("ingests")));
    }
    let recent_at = 10_000_000;
    let mut recent = Vec::new();
    for i in 0..300 {
        let e = event("ledger", &format!("r{i}"), recent_at + i);
        recent.push(stored_seq(store.ingest(e).await.expect("ingests")));
    }
    let all: Vec<i64> = old_seqs.iter().chain(&recent).copied().collect();
    store.claim_events(400).await.expect("claims");
    let done = all
        .iter()
        .map(|&s| routing(s, EventStatus::Routed, Vec::new()))
        .collect();
    store.complete(Arc::new(done)).await.expect("completes");

    let by = |f: fn(&mut EventFilter)| {
        let mut filter = EventFilter::default();
        f(&mut filter);
        filter
    };
    let [s1, s2, s3, s4, s5] = old_seqs[..] else {
        panic!("five old events")
    };
    let cases: Vec<(EventFilter, Vec<i64>)> = vec![
        (by(|f| f.id = Some("shared".into())), vec![s2, s1]),
        (
            by(|f| {
                f.id = Some("shared".into());
                f.source = Some("bank".into());
            }),
            vec![s2],
        ),
        (by(|f| f.id = Some("r299".into())), vec![recent[299]]),
        (by(|f| f.id = Some("r0".into())), vec![recent[0]]),
        (by(|f| f.id = Some("nobody".into())), vec![]),
        (
            by(|f| f.event_type = Some("payment.*".into())),
            vec![s5, s3, s2, s1],
        ),
        (by(|f| f.event_type = Some("*.failed".into())), vec![s3, s2]),
        (by(|f| f.event_type = Some("refund.*".into())), vec![s4]),
        (by(|f| f.event_type = Some("nothing.*".into())), vec![]),
        (
            by(|f| {
                f.event_type = Some("payment.*".into());
                f.source = Some("shop".into());
            }),
            vec![s3, s1],
        ),
        (by(|f| f.until_ms = Some(3_500)), vec![s3, s2, s1]),
        (
            by(|f| {
                f.since_ms = Some(2_000);
                f.until_ms = Some(4_001);
            }),
            vec![s4, s3, s2],
        ),
        (
            by(|f| f.since_ms = Some(10_000_298)),
            vec![recent[299], recent[298]],
        ),
        (by(|f| f.since_ms = Some(10_001_000)), vec![]),
        (by(|f| f.source = Some("nobody".into())), vec![]),
    ];
    assert_finds(&store, &cases, "ids, globs, times").await;
    // A glob's listing is the newest `limit` of every matching type together, pages too.
    let glob = by(|f| f.event_type = Some("payment.*".into()));
    assert_eq!(list(&store, glob.clone(), 3).await, vec![s5, s3, s2]);
    let next = EventFilter {
        before_seq: Some(s2),
        ..glob.clone()
    };
    assert_eq!(list(&store, next, 3).await, vec![s1]);
    // The replay marks exactly what its dry run counted.
    assert_eq!(
        store.count_replay(glob.clone(), 3).await.expect("counts"),
        3
    );
    assert_eq!(
        store.request_replay(glob.clone(), 3).await.expect("marks"),
        3
    );
    let replaying = EventFilter {
        status: Some(EventStatus::Replay),
        ..EventFilter::default()
    };
    assert_eq!(list(&store, replaying, 50).await, vec![s5, s3, s2]);
    h.close(store).await;
}

fn about(source: &str, key: &str, subject: Option<&str>, at: i64) -> NewEvent {
    let mut e = event(source, key, at);
    if let Some(subject) = subject {
        e.envelope = serde_json::json!({ "id": key, "subject": subject }).to_string();
        e.subject = Some(subject.to_owned());
    }
    e
}

/// The subject searches and what each must find, newest first.
fn subject_cases(old: &[i64], acct_1_recent: &[i64]) -> Vec<(EventFilter, Vec<i64>)> {
    let by = |subject: &str| EventFilter {
        subject: Some(subject.into()),
        ..EventFilter::default()
    };
    let mut acct_1: Vec<i64> = acct_1_recent.iter().rev().copied().collect();
    acct_1.extend([old[1], old[0]]);
    vec![
        (by("acct_1"), acct_1),
        (
            EventFilter {
                source: Some("bank".into()),
                ..by("acct_1")
            },
            vec![old[1]],
        ),
        (by("acct_2"), vec![old[2]]),
        // Exactly the subject: not a prefix of it, not one that starts with it.
        (by("acct"), vec![]),
        (by("acct_10"), vec![old[4]]),
        // Events without a subject are not found by an empty one.
        (by(""), vec![]),
        (by("nobody"), vec![]),
        (
            EventFilter {
                id: Some("o1".into()),
                ..by("acct_1")
            },
            vec![old[0]],
        ),
        (
            EventFilter {
                id: Some("o3".into()),
                ..by("acct_1")
            },
            vec![],
        ),
    ]
}

/// Each filter lists exactly its events (newest first), and a replay's dry run counts them.
async fn assert_finds(store: &Arc<dyn Store>, cases: &[(EventFilter, Vec<i64>)], when: &str) {
    for (filter, expected) in cases {
        assert_eq!(
            &list(store, filter.clone(), 50).await,
            expected,
            "{when}: {filter:?}"
        );
        let counted = store
            .count_replay(filter.clone(), 50)
            .await
            .expect("counts");
        assert_eq!(counted, expected.len() as u64, "{when}: {filter:?}");
    }
}

pub(super) async fn subjects_find_exactly_their_events_saved_unsaved_or_older(h: &mut Harness) {
    let store = h.open().await;
    let old_events = [
        ("shop", "o1", Some("acct_1")),
        ("bank", "o2", Some("acct_1")),
        ("shop", "o3", Some("acct_2")),
        ("shop", "o4", None),
        ("shop", "o5", Some("acct_10")),
    ];
    let mut old = Vec::new();
    for (i, (source, key, subject)) in (1_i64..).zip(old_events) {
        let e = about(source, key, subject, 1_000 * i);
        old.push(stored_seq(store.ingest(e).await.expect("ingests")));
    }
    // More than SQLite saves at once, so some matches are saved and the last is not yet.
    let mut acct_1_recent = Vec::new();
    for i in 0..300 {
        let subject = if [7, 150, 290].contains(&i) {
            "acct_1".to_owned()
        } else {
            format!("r{i}")
        };
        let e = about("ledger", &format!("r{i}"), Some(&subject), 10_000_000 + i);
        let seq = stored_seq(store.ingest(e).await.expect("ingests"));
        if subject == "acct_1" {
            acct_1_recent.push(seq);
        }
    }
    // Routed, so that a replay would mark them (its dry run is one of the checks).
    let all = old.len() + 300;
    let claimed = store.claim_events(400).await.expect("claims");
    assert_eq!(claimed.len(), all);
    let done = claimed
        .iter()
        .map(|c| routing(c.event.seq, EventStatus::Routed, Vec::new()))
        .collect();
    store.complete(Arc::new(done)).await.expect("completes");
    let cases = subject_cases(&old, &acct_1_recent);
    assert_finds(&store, &cases, "as stored").await;
    // Pages, newest first.
    let first = EventFilter {
        subject: Some("acct_1".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        list(&store, first.clone(), 2).await,
        vec![acct_1_recent[2], acct_1_recent[1]]
    );
    let next = EventFilter {
        before_seq: Some(acct_1_recent[1]),
        ..first
    };
    assert_eq!(list(&store, next, 2).await, vec![acct_1_recent[0], old[1]]);
    if let Harness::Sqlite { .. } = h {
        let saved = h.count("SELECT count(*) FROM subject_keys");
        assert!(
            saved > 0 && saved < 304,
            "some saved, some not yet: {saved}"
        );
    }
    h.close(store).await;

    // After a restart (SQLite saves what was left at its start).
    let store = h.open().await;
    assert_finds(&store, &cases, "after a restart").await;
    if let Harness::Sqlite { .. } = h {
        assert_eq!(h.count("SELECT count(*) FROM subject_keys"), 304);
    }
    h.close(store).await;

    // Events stored by a version without the search's table or column are read instead.
    h.exec(match h {
        Harness::Sqlite { .. } => {
            "DELETE FROM subject_keys WHERE seq <= 200; \
             UPDATE meta SET value = '201' WHERE key = 'subject_keys_from';"
        }
        Harness::Postgres { .. } => {
            "DELETE FROM event_subjects WHERE last_seq <= 200; \
             UPDATE meta SET value = '201' WHERE key = 'subjects_from';"
        }
    });
    let store = h.open().await;
    assert_finds(&store, &cases, "stored by an older version").await;
    // The replay marks exactly what its dry run counted.
    let acct_1 = EventFilter {
        subject: Some("acct_1".into()),
        ..EventFilter::default()
    };
    assert_eq!(store.request_replay(acct_1, 50).await.expect("marks"), 5);
    let replaying = EventFilter {
        status: Some(EventStatus::Replay),
        ..EventFilter::default()
    };
    assert_eq!(list(&store, replaying, 50).await, cases[0].1);
    h.close(store).await;
}
