//! The admin API's reads and the backlog gauges on PostgreSQL, against a real throwaway
//! cluster (see `test_db`).

use super::super::work::{EventFilter, EventStatus};
use super::super::{Backlog, DataSpan, NewEvent, QuarantinedBody, StoredSpan, conformance};
use super::test_db::{Db, filter, seqs};
use super::{Intake as _, admin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_filter_by_every_field_and_page_newest_first_through_indexes() {
    let db = Db::new("listings").await;
    let statuses = [
        EventStatus::Routed,
        EventStatus::Unrouted,
        EventStatus::Dropped,
        EventStatus::Retrying,
        EventStatus::Failed,
        EventStatus::Replay,
        EventStatus::Failed,
        EventStatus::Pending,
        EventStatus::Pending,
    ];
    for (n, status) in (1_i64..).zip(statuses) {
        let source = if n % 2 == 0 { "even" } else { "odd" };
        let mut event = conformance::event(source, &format!("e{n}"), 1_000 * n);
        if n == 3 {
            event.event_type = "other.type".into();
        }
        let seq = db.ingest(event).await;
        assert_eq!(seq, n);
        match status {
            EventStatus::Pending => db.waiting(seq).await,
            _ => db.routed(seq, status).await,
        }
    }
    let list = |f: EventFilter, limit| {
        let store = db.store.clone();
        async move { seqs(&store.list_events(f, limit).await.expect("lists")) }
    };
    let expected = |status| match status {
        EventStatus::Pending => vec![9, 8],
        EventStatus::Replay => vec![6],
        EventStatus::Routed => vec![1],
        EventStatus::Unrouted => vec![2],
        EventStatus::Dropped => vec![3],
        EventStatus::Retrying => vec![4],
        EventStatus::Failed => vec![7, 5],
    };
    for status in EventStatus::ALL {
        let f = EventFilter {
            status: Some(status),
            ..filter()
        };
        assert_eq!(list(f, 100).await, expected(status), "{status:?}");
    }
    let all = db.store.list_events(filter(), 100).await.expect("lists");
    assert_eq!(seqs(&all), [9, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(
        (
            all[0].id.as_str(),
            all[0].source.as_str(),
            all[0].status.as_str()
        ),
        ("e9", "odd", "pending")
    );
    assert_eq!(all[3].status, "replay");
    assert_eq!(all[8].received_at, 1_000);
    assert_eq!(all[8].event_type, "ledger.webhook.test");

    let by_source = EventFilter {
        source: Some("even".into()),
        ..filter()
    };
    assert_eq!(list(by_source, 100).await, [8, 6, 4, 2]);
    let by_type = EventFilter {
        event_type: Some("other.type".into()),
        ..filter()
    };
    assert_eq!(list(by_type, 100).await, [3]);
    let one = EventFilter {
        seq: Some(5),
        ..filter()
    };
    assert_eq!(list(one, 100).await, [5]);
    let window = EventFilter {
        since_ms: Some(3_000),
        until_ms: Some(6_000),
        ..filter()
    };
    assert_eq!(list(window, 100).await, [5, 4, 3]);
    let combined = EventFilter {
        source: Some("odd".into()),
        status: Some(EventStatus::Failed),
        ..filter()
    };
    assert_eq!(list(combined, 100).await, [7, 5]);
    // Untrusted text is a bound value, never SQL.
    let hostile = EventFilter {
        source: Some("odd' OR '1'='1".into()),
        ..filter()
    };
    assert!(list(hostile, 100).await.is_empty());

    // Pages of three, each starting below the last one's oldest.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = list(
            EventFilter {
                before_seq: before,
                ..filter()
            },
            3,
        )
        .await;
        let Some(&last) = page.last() else { break };
        before = Some(last);
        pages.push(page);
    }
    assert_eq!(pages, [vec![9, 8, 7], vec![6, 5, 4], vec![3, 2, 1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_filters_find_old_matches_through_an_index_not_a_walk_of_every_event() {
    let db = Db::new("status_plans").await;
    // Many routed events (the usual end), a few old failed ones, a few not routed yet; with
    // statistics, so the planner sees the table sizes a real store has.
    db.exec(
        "INSERT INTO events (source, dedup_key, event_type, envelope, raw_body, headers, \
           received_at) \
         SELECT 'bulk', 'k' || n, 't', '{}', '\\x7b7d', '{}', n \
         FROM generate_series(1, 20000) AS n",
        &[],
    )
    .await;
    db.exec(
        "INSERT INTO routings (seq, status, processed_at) \
         SELECT seq, CASE WHEN seq % 5000 = 1 THEN 'failed' ELSE 'routed' END, 1 \
         FROM events WHERE seq NOT IN (2, 20000)",
        &[],
    )
    .await;
    // An old one too (its routing keeps failing to commit, say).
    db.exec("DELETE FROM event_work", &[]).await;
    db.waiting(2).await;
    db.waiting(20_000).await;
    db.exec("ANALYZE", &[]).await;
    let find = |status| EventFilter {
        status: Some(status),
        ..filter()
    };
    let found = db
        .store
        .list_events(find(EventStatus::Failed), 50)
        .await
        .expect("lists");
    assert_eq!(seqs(&found), [15_001, 10_001, 5_001, 1]);
    let found = db
        .store
        .list_events(find(EventStatus::Pending), 50)
        .await
        .expect("lists");
    assert_eq!(seqs(&found), [20_000, 2]);

    for status in EventStatus::ALL {
        if status == EventStatus::Routed {
            continue;
        }
        let (sql, args) = admin::list_events_query(&find(status), &Default::default(), 50);
        let c = db.store.pool.get().await.expect("a connection");
        let plan = c
            .query(&format!("EXPLAIN {sql}"), &admin::bound(&args))
            .await
            .expect("explains")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n");
        let index = match status {
            EventStatus::Pending => "on event_work",
            _ => "routings_status",
        };
        assert!(plan.contains(index), "{status:?}:\n{plan}");
        assert!(!plan.contains("Seq Scan on events"), "{status:?}:\n{plan}");
        assert!(
            !plan.contains("Index Scan Backward using events_pkey"),
            "{status:?}:\n{plan}"
        );
    }
}

/// A payload with multi-byte characters, so byte and character offsets differ.
const DATA: &str = r#"{"note":"naïve ✓","n":[1,"}"]}"#;

/// An event whose envelope's `data` is a verbatim part of its raw body (stored cut).
fn with_payload(key: &str) -> NewEvent {
    let envelope = format!(r#"{{"id":"{key}","subject":"ü → 1","data":{DATA},"x":"t"}}"#);
    let raw_body = format!(r#"{{"id":"{key}","tag":"é","data":{DATA}}}"#);
    NewEvent {
        subject: None,
        data_span: Some(DataSpan {
            in_envelope: envelope.find(DATA).expect("data in the envelope"),
            in_body: raw_body.find(DATA).expect("data in the body"),
            len: DATA.len(),
        }),
        envelope,
        raw_body: raw_body.into(),
        headers: r#"{"webhook-id":"msg_1"}"#.into(),
        ..conformance::event("ledger", key, 42)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_shows_its_envelope_as_ingested_with_its_deliveries_runs_and_steps() {
    let db = Db::new("detail").await;
    let cut = with_payload("evt_cut");
    let whole = NewEvent {
        subject: None,
        envelope: r#"{"id":"evt_whole","data":{"ü":"→"}}"#.into(),
        ..conformance::event("ledger", "evt_whole", 43)
    };
    let cut_seq = db.ingest(cut.clone()).await;
    let whole_seq = db.ingest(whole.clone()).await;
    assert_eq!(
        db.ints(&format!(
            "SELECT count(*) FROM events WHERE seq = {cut_seq} AND data_at IS NOT NULL \
             AND octet_length(envelope) = {}",
            cut.envelope.len() - DATA.len()
        ))
        .await,
        [1],
        "the payload is stored once, in the raw body"
    );
    db.routed(cut_seq, EventStatus::Failed).await;
    db.exec(
        "UPDATE routings SET plugin_results = $2 WHERE seq = $1",
        &[
            &cut_seq,
            &r#"[{"route":"r","plugin":"p","result":"retry","reason":"later","micros":12}]"#,
        ],
    )
    .await;
    let first = db.delivery(cut_seq, "delivered", None, None).await;
    let second = db
        .delivery(cut_seq, "pending", Some(99), Some("replica-a"))
        .await;
    let run = db.run(cut_seq, "dead", None, None).await;
    db.delivery(whole_seq, "dead", None, None).await;

    let detail = db
        .store
        .event(cut_seq)
        .await
        .expect("reads")
        .expect("exists");
    let parsed = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
    assert_eq!(detail.envelope, parsed(&cut.envelope));
    assert_eq!(detail.headers, parsed(&cut.headers));
    assert_eq!(detail.summary.id, "evt_cut");
    assert_eq!(detail.summary.status, "failed");
    assert_eq!(detail.summary.received_at, 42);
    assert_eq!(detail.plugin_results.len(), 1);
    assert_eq!(detail.plugin_results[0].reason.as_deref(), Some("later"));
    assert_eq!(detail.plugin_results[0].micros, 12);
    let ids: Vec<i64> = detail.deliveries.iter().map(|d| d.id).collect();
    assert_eq!(ids, [first, second]);
    let pending = &detail.deliveries[1];
    assert_eq!(
        (
            pending.status.as_str(),
            pending.attempts,
            pending.next_attempt_at
        ),
        ("pending", 3, Some(99))
    );
    assert_eq!(pending.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(pending.history.len(), 1);
    assert_eq!(pending.history[0].status, Some(503));
    assert_eq!(
        (pending.created_at, pending.updated_at, pending.event_seq),
        (10, 20, cut_seq)
    );
    assert_eq!(pending.webhook_id, format!("msg_{cut_seq}"));
    assert_eq!(detail.route_runs.len(), 1);
    assert_eq!(
        (
            detail.route_runs[0].id,
            detail.route_runs[0].status.as_str(),
            detail.route_runs[0].attempts
        ),
        (run, "dead", 2)
    );

    let other = db
        .store
        .event(whole_seq)
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(other.envelope, parsed(&whole.envelope));
    assert_eq!(other.summary.status, "pending");
    assert!(other.plugin_results.is_empty() && other.route_runs.is_empty());
    assert_eq!(other.deliveries.len(), 1);
    // Byte for byte, not only the same JSON.
    let c = db.store.pool.get().await.expect("a connection");
    let text: String = c
        .query_one(
            "SELECT envelope FROM stored_events WHERE seq = $1",
            &[&cut_seq],
        )
        .await
        .expect("reads")
        .get(0);
    assert_eq!(text, cut.envelope);
    assert!(
        db.store
            .event(whole_seq + 1)
            .await
            .expect("reads")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_span_is_the_first_and_the_last_event() {
    let db = Db::new("span").await;
    assert_eq!(db.store.stored_span().await.expect("reads"), None);
    let first = db.event("a", "one", 500).await;
    db.event("a", "two", 600).await;
    let last = db.event("a", "three", 700).await;
    assert_eq!(
        db.store.stored_span().await.expect("reads"),
        Some(StoredSpan {
            oldest_seq: first,
            oldest_received_at: 500,
            newest_seq: last,
            newest_received_at: 700,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_bodies_list_newest_first_by_source_and_page_with_text_and_base64() {
    let db = Db::new("quarantine").await;
    let body = |source: &str, raw: &'static [u8], at| QuarantinedBody {
        source: source.into(),
        reason: format!("bad body from {source}"),
        raw_body: bytes::Bytes::from_static(raw),
        headers: r#"{"content-type":"application/json"}"#.into(),
        received_at_ms: at,
    };
    let q = &db.store;
    q.quarantine(body("a", b"{not json", 100))
        .await
        .expect("keeps");
    q.quarantine(body("b", b"\xff\xfe binary", 200))
        .await
        .expect("keeps");
    q.quarantine(body("a", b"{also not", 300))
        .await
        .expect("keeps");
    q.quarantine(body("a", b"{not json", 400))
        .await
        .expect("counts a repeat");

    let all = q.list_quarantine(None, None, 10).await.expect("lists");
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(all.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let (newest, binary, repeated) = (&all[0], &all[1], &all[2]);
    assert_eq!(newest.body_text.as_deref(), Some("{also not"));
    assert_eq!(binary.body_text, None);
    assert_eq!(binary.body_base64, "//4gYmluYXJ5");
    assert_eq!(binary.size, 9);
    assert_eq!(binary.source, "b");
    assert_eq!(
        (
            repeated.repeats,
            repeated.received_at,
            repeated.last_seen_at
        ),
        (2, 100, 400)
    );
    assert_eq!(repeated.reason, "bad body from a");
    assert_eq!(repeated.headers["content-type"], "application/json");

    let of_a = q
        .list_quarantine(Some("a".into()), None, 10)
        .await
        .expect("lists");
    assert_eq!(
        of_a.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[0], ids[2]]
    );
    let page = q
        .list_quarantine(None, Some(ids[0]), 1)
        .await
        .expect("lists");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1]]);
    let none = q
        .list_quarantine(Some("a' OR 'x'='x".into()), None, 10)
        .await
        .expect("lists");
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_the_newest_dead_deliveries_and_route_runs() {
    let db = Db::new("dead_letters").await;
    let seq = db.event("a", "e", 1).await;
    db.routed(seq, EventStatus::Failed).await;
    let d1 = db.delivery(seq, "dead", None, None).await;
    db.delivery(seq, "delivered", None, None).await;
    let d2 = db.delivery(seq, "dead", None, Some("replica-a")).await;
    db.delivery(seq, "pending", Some(5), None).await;
    let d3 = db.delivery(seq, "dead", None, None).await;
    let r1 = db.run(seq, "dead", None, None).await;
    db.run(seq, "retry", Some(5), None).await;
    let r2 = db.run(seq, "dead", None, None).await;

    let (deliveries, runs) = db.store.dead_letters(2).await.expect("reads");
    assert_eq!(
        deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
        [d3, d2]
    );
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [r2, r1]);
    assert!(deliveries.iter().all(|d| d.status == "dead"));
    let (deliveries, runs) = db.store.dead_letters(10).await.expect("reads");
    assert_eq!(
        deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
        [d3, d2, d1]
    );
    assert_eq!(runs.len(), 2);
    assert_eq!(deliveries[0].history.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_counts_waiting_work_and_seeks_its_first_due_time() {
    let db = Db::new("backlog").await;
    assert_eq!(
        db.store.backlog().await.expect("counts"),
        Backlog::default()
    );
    // A replay of an old event (no due time), two waiting events, retries.
    let replayed = db.event("a", "old", 500).await;
    db.routed(replayed, EventStatus::Replay).await;
    for (key, at) in [("e1", 1_000), ("e2", 2_000)] {
        let seq = db.event("a", key, at).await;
        db.waiting(seq).await;
    }
    let routed = db.event("a", "routed", 2_500).await;
    db.routed(routed, EventStatus::Failed).await;
    db.delivery(routed, "pending", Some(3_000), None).await;
    db.delivery(routed, "pending", Some(1_500), Some("replica-a"))
        .await;
    db.delivery(routed, "dead", None, None).await;
    db.delivery(routed, "delivered", None, None).await;
    let run = db.run(routed, "retry", Some(800), None).await;
    db.run(routed, "dead", None, None).await;
    db.run(routed, "dead", None, None).await;
    db.run(routed, "done", None, None).await;

    let backlog = db.store.backlog().await.expect("counts");
    assert_eq!(
        backlog,
        Backlog {
            queue_depth: 3 + 2 + 1,
            dead_letters: 1 + 2,
            first_due_at_ms: Some(800),
        }
    );
    db.exec("DELETE FROM route_runs WHERE id = $1", &[&run])
        .await;
    assert_eq!(
        db.store.backlog().await.expect("counts").first_due_at_ms,
        Some(1_000),
        "the oldest waiting event; the older replay has no due time"
    );

    // Seeks into the indexes ordered by due time, no sorts, no scans.
    let plan = db.plan(admin::BACKLOG_SQL, &[]).await;
    assert!(plan.contains("deliveries_due"), "{plan}");
    assert!(plan.contains("route_runs_due"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    // The oldest waiting event is two index lookups: a join (even with LIMIT 1) was planned
    // as a merge join that walked `events` from its first row under load.
    assert!(!plan.contains("Join"), "{plan}");
    assert!(!plan.contains("Nested Loop"), "{plan}");
}

/// Searches that match few or only old events go through `events_source`, `events_type`, the
/// rows of hashes `event_ids` and `event_subjects`, or a seq range (a time range's bound),
/// never a walk of every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_by_source_type_glob_id_subject_and_time_use_indexes() {
    let db = Db::new("search_plans").await;
    db.exec(
        "INSERT INTO events (source, dedup_key, event_type, envelope, raw_body, headers, \
           received_at) \
         SELECT CASE WHEN n <= 10 THEN 'old' ELSE 'bulk' END, 'k' || n, \
                CASE WHEN n <= 10 THEN 'payment.failed' WHEN n <= 20 THEN 'payment.old' \
                     ELSE 't' END, \
                json_build_object('subject', \
                    CASE WHEN n % 1000 = 0 THEN 'acct_x' ELSE 's' || n END)::text, \
                '\\x7b7d', '{}', n * 1000 \
         FROM generate_series(1, 20000) AS n",
        &[],
    )
    .await;
    db.exec(
        "INSERT INTO routings (seq, status, processed_at) SELECT seq, 'routed', 1 FROM events",
        &[],
    )
    .await;
    db.exec("DELETE FROM event_work", &[]).await;
    // The hashes as a copy writes them (SQL's SHA-256, so the search's hash, made in Rust, must
    // agree with it). The ingest statement wrote none: the events went in by hand.
    db.exec(super::copy::INDEX_SUBJECTS, &[]).await;
    db.exec(super::copy::INDEX_IDS, &[]).await;
    db.exec("ANALYZE", &[]).await;
    let by = |f: fn(&mut EventFilter)| {
        let mut filter = filter();
        f(&mut filter);
        filter
    };
    for (f, index) in [
        (by(|f| f.source = Some("old".into())), "events_source"),
        (by(|f| f.source = Some("nobody".into())), "events_source"),
        (
            by(|f| f.event_type = Some("payment.failed".into())),
            "events_type",
        ),
        (
            by(|f| f.event_type = Some("payment.*".into())),
            "events_type",
        ),
        (by(|f| f.id = Some("k7".into())), "Seq Scan on event_ids"),
        (
            by(|f| f.subject = Some("acct_x".into())),
            "Seq Scan on event_subjects",
        ),
        (by(|f| f.until_ms = Some(5_000)), "Index Cond: (seq <"),
    ] {
        // The planner as it is (with statistics of 20,000 events): sorting a few matches is
        // what it should choose for an id.
        let plan = listing_plan(&db, &f, 50).await;
        assert!(plan.contains(index), "{f:?}:\n{plan}");
        assert!(!plan.contains("Seq Scan on events"), "{f:?}:\n{plan}");
        let found = db.store.list_events(f.clone(), 50).await.expect("lists");
        let expected = match (&f.source, &f.event_type, &f.id) {
            _ if f.subject.is_some() => 20,
            (Some(s), ..) if s == "nobody" => 0,
            (_, Some(t), _) if t == "payment.*" => 20,
            (_, _, Some(_)) => 1,
            _ if f.until_ms.is_some() => 4,
            _ => 10,
        };
        assert_eq!(found.len(), expected, "{f:?}");
    }
    // The newest one of a subject or id: its candidates through the primary key, never a walk
    // down the events from the newest (the plan `seq IN (subquery)` got with a small limit).
    for f in [
        by(|f| f.subject = Some("acct_x".into())),
        by(|f| f.id = Some("k19999".into())),
    ] {
        let plan = listing_plan(&db, &f, 1).await;
        assert!(plan.contains("Index Cond: (seq = ANY"), "{f:?}:\n{plan}");
        assert!(!plan.contains("Seq Scan on events"), "{f:?}:\n{plan}");
    }
}

/// Migration 9 replaces the index on the dedup key with rows of hashes: the events stored
/// before it get theirs from the migration, so every one is still found by its id, and the
/// index is gone (it cost every ack a random index entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_before_migration_9_are_found_by_id() {
    let db = Db::new("ids_before_9").await;
    let mut seqs = Vec::new();
    for n in 1..=1500 {
        seqs.push(
            db.ingest(conformance::event("shop", &format!("evt_{n}"), n))
                .await,
        );
    }
    // As a gateway of version 8 left them: no rows of hashes, the index on the dedup key.
    for sql in [
        "DROP TABLE event_ids",
        "CREATE INDEX events_dedup_key ON events (dedup_key)",
        "DELETE FROM gateway_schema_migrations WHERE version >= 9",
    ] {
        db.exec(sql, &[]).await;
    }
    let mut c = db.store.pool.get().await.expect("a connection");
    let applied = super::migrations::migrate(&mut c).await.expect("migrates");
    assert_eq!(applied, versions_from(9));
    let index: Option<String> = c
        .query_one("SELECT to_regclass('events_dedup_key')::text", &[])
        .await
        .expect("reads the catalog")
        .get(0);
    assert_eq!(index, None);
    drop(c);
    for (n, seq) in [(1, seqs[0]), (1000, seqs[999]), (1500, seqs[1499])] {
        let mut f = filter();
        f.id = Some(format!("evt_{n}"));
        let found = db.store.list_events(f, 10).await.expect("lists");
        let found: Vec<i64> = found.iter().map(|e| e.seq).collect();
        assert_eq!(found, [seq], "evt_{n}");
    }
    // And an event stored after the migration, through the ingest statement's row.
    let later = db
        .ingest(conformance::event("shop", "evt_later", 1501))
        .await;
    let mut f = filter();
    f.id = Some("evt_later".into());
    let found = db.store.list_events(f, 10).await.expect("lists");
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), [later]);
}

/// The plan PostgreSQL makes for the listing of `f`'s newest `limit` events.
async fn listing_plan(db: &Db, f: &EventFilter, limit: u32) -> String {
    let lookups = db.store.lookups(f).await.expect("looks up");
    let (sql, args) = admin::list_events_query(f, &lookups, limit);
    let c = db.store.pool.get().await.expect("a connection");
    c.query(&format!("EXPLAIN {sql}"), &admin::bound(&args))
        .await
        .expect("explains")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dead deliveries stored before migration 7 get their amounts from it (so the groups sum
/// them exactly); the groups are read from the dead deliveries' index; and a filter counts
/// and pages them up to a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_group_with_exact_sums_and_page_by_filter() {
    use super::super::DeadFilter;
    let db = Db::new("dead_groups").await;
    let mut ids = Vec::new();
    for (n, amount) in [(1, "0.10"), (2, "0.20"), (3, "7")] {
        let mut e = conformance::event("shop", &format!("d{n}"), n);
        e.envelope = format!(r#"{{"data":{{"amount":"{amount}","currency":"eur"}}}}"#);
        let seq = db.ingest(e).await;
        ids.push(db.delivery(seq, "dead", None, None).await);
    }
    // As a gateway before version 7 left them: no amount columns (nor the later versions'
    // tables), then migrated again.
    for sql in [
        "ALTER TABLE deliveries DROP COLUMN amount, DROP COLUMN currency, \
         DROP COLUMN amount_units, DROP COLUMN amount_scale",
        "DROP TABLE event_subjects, event_ids",
        "CREATE INDEX events_dedup_key ON events (dedup_key)",
        "DELETE FROM gateway_schema_migrations WHERE version >= 7",
    ] {
        db.exec(sql, &[]).await;
    }
    let mut c = db.store.pool.get().await.expect("a connection");
    let applied = super::migrations::migrate(&mut c).await.expect("migrates");
    assert_eq!(applied, versions_from(7));
    drop(c);
    // The dead rows alone, never their events' envelopes.
    let plan = db
        .plan(super::super::dead_letters::GROUP_ROWS_SQL, &[])
        .await;
    assert!(plan.contains("deliveries_dead"), "{plan}");
    assert!(!plan.contains("events"), "{plan}");
    let groups = db.store.dead_letter_groups().await.expect("groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(
        (groups[0].count, groups[0].amounts[0].sum.as_str()),
        (3, "7.30")
    );
    let filter = DeadFilter {
        source: Some("shop".into()),
        reason: Some("HTTP 503".into()),
        ..DeadFilter::default()
    };
    let (count, through) = db.store.count_dead(filter.clone()).await.expect("counts");
    assert_eq!((count, through), (3, ids.last().copied()));
    let first = db
        .store
        .dead_page(filter.clone(), 0, ids[1], 1)
        .await
        .expect("pages");
    assert_eq!(first, [ids[0]]);
    let rest = db
        .store
        .dead_page(filter, ids[0], ids[1], 10)
        .await
        .expect("pages");
    assert_eq!(rest, [ids[1]], "never past the bound");
}

/// The schema's versions from `first` on: what a database migrated back to before `first`
/// gets again.
fn versions_from(first: i32) -> Vec<i32> {
    super::migrations::versions()
        .into_iter()
        .filter(|v| *v >= first)
        .collect()
}
