//! Claims between replicas, with the clock passed in so leases can run out without waiting:
//! two replicas never hold the same work, a dead replica's work is taken over after its lease,
//! the replica that lost a claim writes nothing, renewals keep a claim, a release hands the
//! work over at once. One throwaway cluster (fsync on) for the file, a database per test.

use super::claims::Claims;
use super::*;
use crate::store::{
    AttemptDone, AttemptRecord, DeliveryState, EventStatus, NewDelivery, Processed, RouteRunState,
    RouteRunUpdate,
};
use std::sync::Arc;

const LEASE: i64 = 1_000;

/// A fresh database with the schema (on the cluster the PostgreSQL tests share), a store on
/// it and two replicas' claims.
async fn setup(name: &str) -> (super::test_db::Db, Claims, Claims) {
    // Without the handoff: every event waits in the table, where these two replicas claim.
    let options = PgOptions {
        handoff: 0,
        ..PgOptions::default()
    };
    let db = super::test_db::Db::with_options(name, &options).await;
    (db, Claims::new(LEASE, 0, 256), Claims::new(LEASE, 0, 256))
}

async fn store_events(store: &PgStore, keys: &[&str]) -> Vec<i64> {
    let mut seqs = Vec::new();
    for key in keys {
        let e = crate::store::conformance::event("ledger", key, 1_000);
        match store.ingest(e).await.expect("ingests") {
            IngestOutcome::Stored { seq } => seqs.push(seq),
            IngestOutcome::Duplicate => panic!("{key} is new"),
        }
    }
    seqs
}

fn routed(seq: i64, deliveries: Vec<NewDelivery>) -> Processed {
    Processed {
        seq,
        status: EventStatus::Routed,
        steps: Vec::new(),
        deliveries,
        route_runs: Vec::new(),
        append: false,
    }
}

fn delivery(state: DeliveryState) -> NewDelivery {
    NewDelivery {
        route: "r".into(),
        destination: "d".into(),
        webhook_id: "ledger:x".into(),
        envelope: None,
        state,
        attempts: vec![AttemptRecord {
            at: 1,
            status: Some(503),
            error: None,
            duration_ms: 1,
        }],
        order: None,
        stuck: None,
    }
}

async fn count(store: &PgStore, sql: &str) -> i64 {
    let client = store.pool.get().await.expect("a connection");
    client.query_one(sql, &[]).await.expect("counts").get(0)
}

fn seqs(claimed: &[crate::store::ClaimedEvent]) -> Vec<i64> {
    claimed.iter().map(|c| c.event.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_claiming_at_once_never_get_the_same_event() {
    let (db, a, b) = setup("claims_disjoint").await;
    let store = &db.store;
    let keys: Vec<String> = (0..200).map(|i| format!("evt_{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let all = store_events(store, &keys).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for claims in [&a, &b] {
        for _ in 0..4 {
            let (claims, pool) = (Arc::clone(claims), store.pool.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = claims.claim_events(&pool, 5_000, 7).await.expect("claims");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(seqs(&got));
                }
            }));
        }
    }
    let mut handed_out = Vec::new();
    for t in tasks {
        handed_out.extend(t.await.expect("joins"));
    }
    handed_out.sort_unstable();
    assert_eq!(
        handed_out, all,
        "every event exactly once, across both replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_event_is_taken_over_after_its_lease_and_its_late_result_is_dropped() {
    let (db, dead, live) = setup("claims_takeover").await;
    let store = &db.store;
    let [seq] = store_events(store, &["evt_1"]).await[..] else {
        panic!("one event")
    };
    assert_eq!(
        seqs(
            &dead
                .claim_events(&store.pool, 10_000, 10)
                .await
                .expect("claims")
        ),
        [seq]
    );
    assert!(
        live.claim_events(&store.pool, 10_000 + LEASE - 1, 10)
            .await
            .expect("claims")
            .is_empty(),
        "held until the lease runs out"
    );
    assert_eq!(
        seqs(
            &live
                .claim_events(&store.pool, 10_000 + LEASE, 10)
                .await
                .expect("claims")
        ),
        [seq],
        "taken over"
    );
    // The first replica was only slow: its result comes too late and is not written.
    let lost = dead
        .complete(
            &store.pool,
            &Arc::new(vec![routed(seq, vec![delivery(DeliveryState::Delivered)])]),
            12_000,
        )
        .await
        .expect("completes");
    assert_eq!(lost, 1);
    assert_eq!(count(store, "SELECT count(*) FROM deliveries").await, 0);
    let lost = live
        .complete(
            &store.pool,
            &Arc::new(vec![routed(seq, vec![delivery(DeliveryState::Delivered)])]),
            12_000,
        )
        .await
        .expect("completes");
    assert_eq!(lost, 0);
    assert_eq!(count(store, "SELECT count(*) FROM deliveries").await, 1);
    assert_eq!(
        count(store, "SELECT count(*) FROM event_work").await,
        0,
        "finished work leaves the hot table"
    );
    assert_eq!(
        store
            .event(seq)
            .await
            .expect("reads")
            .expect("exists")
            .summary
            .status,
        "routed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_keeps_a_claim_and_releasing_hands_it_over_at_once() {
    let (db, a, b) = setup("claims_renew").await;
    let store = &db.store;
    let [seq] = store_events(store, &["evt_1"]).await[..] else {
        panic!("one event")
    };
    a.claim_events(&store.pool, 10_000, 10)
        .await
        .expect("claims");
    a.renew(&store.pool, 10_900).await.expect("renews");
    assert!(
        b.claim_events(&store.pool, 11_500, 10)
            .await
            .expect("claims")
            .is_empty(),
        "renewed at 10.9 s: held until 11.9 s"
    );
    a.release(&store.pool, 11_600).await.expect("releases");
    assert_eq!(
        seqs(
            &b.claim_events(&store.pool, 11_600, 10)
                .await
                .expect("claims")
        ),
        [seq]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_delivery_is_attempted_by_one_replica_and_a_lost_claim_records_nothing() {
    let (db, a, b) = setup("claims_deliveries").await;
    let store = &db.store;
    let [seq] = store_events(store, &["evt_1"]).await[..] else {
        panic!("one event")
    };
    a.claim_events(&store.pool, 10_000, 10)
        .await
        .expect("claims");
    let waiting = DeliveryState::Pending {
        next_attempt_ms: 10_500,
    };
    a.complete(
        &store.pool,
        &Arc::new(vec![routed(seq, vec![delivery(waiting)])]),
        10_100,
    )
    .await
    .expect("completes");
    assert!(
        a.claim_due_deliveries(&store.pool, 10_400, 10)
            .await
            .expect("claims")
            .is_empty(),
        "not due yet"
    );
    let due = a
        .claim_due_deliveries(&store.pool, 10_500, 10)
        .await
        .expect("claims");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 1);
    assert!(
        b.claim_due_deliveries(&store.pool, 11_000, 10)
            .await
            .expect("claims")
            .is_empty(),
        "a's"
    );
    let taken = b
        .claim_due_deliveries(&store.pool, 11_500, 10)
        .await
        .expect("claims");
    assert_eq!(taken.len(), 1, "a's lease ran out");
    let attempt = |delivery_id, status| AttemptDone {
        delivery_id,
        attempt: AttemptRecord {
            at: 11_600,
            status: Some(status),
            error: None,
            duration_ms: 3,
        },
        state: DeliveryState::Delivered,
        holds_subject: false,
        stuck: None,
    };
    assert!(
        !a.record_attempt(&store.pool, &attempt(due[0].id, 204), 11_700)
            .await
            .expect("runs"),
        "a lost it"
    );
    assert!(
        b.record_attempt(&store.pool, &attempt(taken[0].id, 200), 11_700)
            .await
            .expect("runs")
    );
    let detail = store.event(seq).await.expect("reads").expect("exists");
    let d = &detail.deliveries[0];
    assert_eq!((d.status.as_str(), d.attempts), ("delivered", 2));
    assert_eq!(
        d.history
            .iter()
            .filter_map(|h| h.status)
            .collect::<Vec<_>>(),
        [503, 200],
        "b's attempt only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_retry_is_claimed_once_and_its_result_sums_up_the_event() {
    let (db, a, b) = setup("claims_route_runs").await;
    let store = &db.store;
    let [seq] = store_events(store, &["evt_1"]).await[..] else {
        panic!("one event")
    };
    a.claim_events(&store.pool, 10_000, 10)
        .await
        .expect("claims");
    let mut first = routed(seq, Vec::new());
    first.status = EventStatus::Retrying;
    first.route_runs = vec![RouteRunUpdate {
        id: None,
        route: "r".into(),
        state: RouteRunState::Retry {
            next_attempt_ms: 10_200,
        },
        reason: "plugin asked".into(),
        attempts: 1,
    }];
    a.complete(&store.pool, &Arc::new(vec![first]), 10_100)
        .await
        .expect("completes");
    let due = b
        .claim_due_route_runs(&store.pool, 10_200, 10)
        .await
        .expect("claims");
    assert_eq!(due.len(), 1);
    assert!(
        a.claim_due_route_runs(&store.pool, 10_300, 10)
            .await
            .expect("claims")
            .is_empty()
    );
    let retried = Processed {
        seq,
        status: EventStatus::Routed,
        steps: Vec::new(),
        deliveries: vec![delivery(DeliveryState::Delivered)],
        route_runs: vec![RouteRunUpdate {
            id: Some(due[0].id),
            route: "r".into(),
            state: RouteRunState::Done,
            reason: "plugin asked".into(),
            attempts: 2,
        }],
        append: true,
    };
    assert_eq!(
        b.complete(&store.pool, &Arc::new(vec![retried]), 10_400)
            .await
            .expect("completes"),
        0
    );
    let detail = store.event(seq).await.expect("reads").expect("exists");
    assert_eq!(detail.summary.status, "routed");
    assert_eq!(detail.route_runs[0].status, "done");
}

/// Autovacuum visits a database once a minute at best; a work table that only it vacuums is
/// hundreds of thousands of dead rows deep under load, and every claim walks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_jobs_holder_vacuums_the_work_table_once_it_fills_with_dead_rows() {
    let db = super::test_db::Db::new("claims_vacuum").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let vacuums = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'event_work'";
    assert_eq!(db.ints(vacuums).await, [0]);
    let dead = super::control::VACUUM_AFTER_DEAD + 1_000;
    db.exec(
        "INSERT INTO event_work (seq) SELECT g FROM generate_series(1000001, 1000000 + $1::int8) g",
        &[&dead],
    )
    .await;
    db.exec("DELETE FROM event_work WHERE seq > 1000000", &[])
        .await;
    while db.ints(vacuums).await != [1] {
        assert!(
            std::time::Instant::now() < deadline,
            "event_work was never vacuumed (leader: {})",
            db.store.runs_cluster_jobs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let left = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'event_work'";
    assert!(
        db.ints(left).await[0] < 1_000,
        "the vacuum removed the dead rows"
    );
}

/// Every ack inserts into `event_work`, and cutting off the table's empty end takes an ACCESS
/// EXCLUSIVE lock that every ack batch would wait behind. The gateway's own vacuum passes
/// TRUNCATE false; this checks a plain `VACUUM`, as autovacuum runs it (migration 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_vacuum_truncates_the_work_table_every_ack_inserts_into() {
    let db = super::test_db::Db::new("claims_no_truncate").await;
    db.exec(
        "INSERT INTO event_work (seq) SELECT g FROM generate_series(1000001, 1020000) g",
        &[],
    )
    .await;
    let size = "SELECT pg_relation_size('event_work')";
    let filled = db.ints(size).await;
    assert!(filled[0] > 8192 * 50, "20,000 rows fill pages: {filled:?}");
    db.exec("DELETE FROM event_work WHERE seq > 1000000", &[])
        .await;
    let c = db.store.pool.get().await.expect("a connection");
    c.batch_execute("VACUUM event_work").await.expect("vacuums");
    drop(c);
    assert_eq!(
        db.ints(size).await,
        filled,
        "a vacuum truncated the emptied work table"
    );
}

/// A replica on `db`'s database with its own claims (and handoff of `handoff` events).
async fn other_replica(db: &super::test_db::Db, name: &str, options: &PgOptions) -> PgStore {
    PgStore::connect(
        &db.cluster.conninfo(name),
        options,
        Metrics::new().expect("metrics"),
    )
    .await
    .expect("connects")
}

fn seqs_of(claimed: &[crate::store::ClaimedEvent]) -> Vec<i64> {
    claimed.iter().map(|c| c.event.seq).collect()
}

async fn lease_owners(db: &super::test_db::Db) -> Vec<i64> {
    db.ints("SELECT count(DISTINCT lease_owner) FROM event_work WHERE lease_owner IS NOT NULL")
        .await
}

/// The replica that stored an event routes it without claiming it through the table; the
/// row is claimed by it in the same statement, so no other replica takes it meanwhile, and a
/// release (SIGTERM) hands it over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_that_stored_an_event_holds_it_and_hands_it_to_its_own_intake() {
    use crate::store::Store as _;
    let db = super::test_db::Db::new("claims_handoff").await;
    let b = other_replica(&db, "claims_handoff", &PgOptions::default()).await;
    let stored = store_events(&db.store, &["h1", "h2"]).await;
    assert_eq!(
        lease_owners(&db).await,
        [1],
        "claimed by the storing replica"
    );
    assert!(b.claim_events(10).await.expect("claims").is_empty());
    let own = db.store.claim_events(1).await.expect("claims");
    assert_eq!(seqs_of(&own), stored[..1]);
    let c = db.store.pool.get().await.expect("a connection");
    let row = c
        .query_one(
            "SELECT dedup_key, source, event_type, envelope FROM stored_events WHERE seq = $1",
            &[&stored[0]],
        )
        .await
        .expect("the stored event");
    let event = &own[0].event;
    let read: (String, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        read,
        (
            event.id.clone(),
            event.source.clone(),
            event.event_type.clone(),
            event.envelope.clone()
        ),
        "the handed-off event is the stored one"
    );
    // SIGTERM: everything held, routed or still queued, is anybody's at once.
    db.store.release_claims().await.expect("releases");
    // Once the release's announcement reaches `b` (its previous scan was just now).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let taken = loop {
        let taken = b.claim_events(10).await.expect("claims");
        if !taken.is_empty() || std::time::Instant::now() > deadline {
            break taken;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(seqs_of(&taken), stored, "both, with no lease to wait for");
    assert!(db.store.claim_events(10).await.expect("claims").is_empty());
}

/// When intake is behind and the handoff is full, ingest writes the rows unclaimed, and any
/// replica takes them at once; a replica that dies with events handed off loses them to the
/// others when its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_handoff_leaves_events_to_any_replica_and_a_dead_ones_return_after_its_lease() {
    use crate::store::Store as _;
    let db = super::test_db::Db::new("claims_handoff_full").await;
    let small = PgOptions {
        handoff: 1,
        lease: std::time::Duration::from_millis(300),
        ..PgOptions::default()
    };
    let a = other_replica(&db, "claims_handoff_full", &small).await;
    let b = other_replica(&db, "claims_handoff_full", &PgOptions::default()).await;
    let stored = store_events(&a, &["f1", "f2", "f3"]).await;
    let unclaimed = db
        .ints("SELECT seq FROM event_work WHERE lease_owner IS NULL ORDER BY seq")
        .await;
    assert_eq!(
        unclaimed,
        stored[1..],
        "the first filled the handoff of one"
    );
    assert_eq!(
        seqs_of(&b.claim_events(10).await.expect("claims")),
        stored[1..]
    );
    // `a` dies with f1 handed off and never routed.
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let taken = b.claim_events(10).await.expect("claims");
        if !taken.is_empty() {
            assert_eq!(seqs_of(&taken), stored[..1]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "f1 was never taken over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A gauge's value as `metrics` renders it.
fn gauge(metrics: &Metrics, name: &str) -> Option<i64> {
    metrics.render().lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Waits until replica `metrics` counted `replicas` and commits through `writers`.
async fn wait_for_share(metrics: &Metrics, replicas: i64, writers: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let seen = (
            gauge(metrics, crate::metrics::STORE_REPLICAS),
            gauge(metrics, crate::metrics::STORE_ACK_WRITERS),
        );
        if seen == (Some(replicas), Some(writers)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {replicas} replicas and {writers} writers, saw {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Replicas divide the cluster's ack writers among themselves, so the database sees about as
/// many ack commits in flight with several replicas as with one, and space their batches of
/// routing results by the count, so it sees about as many of those commits too; a replica that
/// goes away gives its share back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_clusters_ack_writers_and_a_leaving_one_gives_its_share_back() {
    let db = super::test_db::Db::new("claims_membership").await;
    let options = PgOptions {
        writers: 6,
        ..PgOptions::default()
    };
    let metrics = Metrics::new().expect("metrics");
    let a = PgStore::connect(
        &db.cluster.conninfo("claims_membership"),
        &options,
        metrics.clone(),
    )
    .await
    .expect("connects");
    use super::claims::first_routings_spacing as spacing;
    wait_for_share(&metrics, 2, 3).await;
    assert_eq!(a.claims.results_spacing(), spacing(2));
    let b = other_replica(&db, "claims_membership", &options).await;
    wait_for_share(&metrics, 3, 2).await;
    assert_eq!(a.claims.results_spacing(), spacing(3));
    // Still acks with its share: writes go through.
    store_events(&a, &["m1", "m2", "m3"]).await;
    drop(b);
    wait_for_share(&metrics, 2, 3).await;
    assert_eq!(a.claims.results_spacing(), spacing(2));
}

/// One replica spaces its batches of first routings by the base spacing, and each replica
/// more adds as much, up to a bound, so the cluster commits about as many of them whatever
/// the count.
#[test]
fn the_spacing_of_routing_results_grows_with_the_replicas_up_to_a_bound() {
    use super::claims::first_routings_spacing as spacing;
    let ms = std::time::Duration::from_millis;
    assert_eq!(spacing(1), ms(4));
    assert_eq!(spacing(2), ms(8));
    assert_eq!(spacing(3), ms(12));
    assert_eq!(spacing(8), ms(32));
    assert_eq!(spacing(50), ms(32), "bounded");
    assert_eq!(spacing(0), ms(4), "nobody counted: as alone");
}

/// A batch of routing results starts without its spacing once its events hold half of the
/// replica's routing slots (with every slot waiting for the spacing, the intake could route
/// nothing meanwhile); the replica's slots come from its options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_results_holding_half_the_routing_slots_start_their_batch() {
    use super::claims::first_routings_fill as fill;
    assert_eq!(fill(256), 128);
    assert_eq!(fill(3), 1);
    assert_eq!(fill(1), 1);
    assert_eq!(fill(0), 1, "never waits for more than one event");
    let db = super::test_db::Db::new("claims_results_fill").await;
    let options = PgOptions {
        routing_slots: 64,
        ..PgOptions::default()
    };
    let store = PgStore::connect(
        &db.cluster.conninfo("claims_results_fill"),
        &options,
        Metrics::new().expect("metrics"),
    )
    .await
    .expect("connects");
    assert_eq!(store.claims.results_fill(), 32);
}

/// A first routing is written without `ON CONFLICT` (nothing routed has a work row without a
/// replay mark); an event that has one anyway (a store repaired by hand) still gets its
/// routing recorded, overwriting the old one through the general path, together with the
/// rest of its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_routing_over_a_recorded_one_overwrites_it_through_the_general_path() {
    let (db, a, _) = setup("claims_routed_twice").await;
    let store = &db.store;
    let stored = store_events(store, &["evt_1", "evt_2"]).await;
    let (one, two) = (stored[0], stored[1]);
    let now = 5_000;
    let claimed = a.claim_events(&store.pool, now, 1).await.expect("claims");
    assert_eq!(seqs(&claimed), [one]);
    let lost = a
        .complete(&store.pool, &Arc::new(vec![routed(one, Vec::new())]), now)
        .await
        .expect("completes");
    assert_eq!(lost, 0);
    store
        .pool
        .get()
        .await
        .expect("a connection")
        .execute("INSERT INTO event_work (seq) VALUES ($1)", &[&one])
        .await
        .expect("a work row without a replay mark");
    let claimed = a.claim_events(&store.pool, now, 10).await.expect("claims");
    assert_eq!(seqs(&claimed), [one, two]);
    let mut again = routed(one, vec![delivery(DeliveryState::Delivered)]);
    again.status = EventStatus::Unrouted;
    let lost = a
        .complete(
            &store.pool,
            &Arc::new(vec![
                again,
                routed(two, vec![delivery(DeliveryState::Delivered)]),
            ]),
            now,
        )
        .await
        .expect("completes through the general path");
    assert_eq!(lost, 0);
    assert_eq!(count(store, "SELECT count(*) FROM event_work").await, 0);
    assert_eq!(
        count(
            store,
            &format!("SELECT count(*) FROM routings WHERE seq = {one} AND status = 'unrouted'")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            store,
            &format!("SELECT count(*) FROM routings WHERE seq = {two} AND status = 'routed'")
        )
        .await,
        1
    );
    assert_eq!(count(store, "SELECT count(*) FROM deliveries").await, 2);
}

/// First routings of several chunks completed at once share statements (a statement is its own
/// transaction, so the rows' `xmin` tells how many wrote them), and each chunk is told how many
/// of its own results lost their claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_completed_at_once_share_a_statement_and_are_answered_each() {
    let (db, a, b) = setup("claims_shared_completion").await;
    let store = &db.store;
    let stored = store_events(store, &["c0", "c1", "c2", "c3", "c4", "c5"]).await;
    let claimed = a
        .claim_events(&store.pool, 5_000, 10)
        .await
        .expect("claims");
    assert_eq!(seqs(&claimed), stored);
    // The lease on the last one ran out and the other replica took it.
    db.exec(
        "UPDATE event_work SET available_at = 0 WHERE seq = $1",
        &[&stored[5]],
    )
    .await;
    let taken = b
        .claim_events(&store.pool, 5_500, 10)
        .await
        .expect("claims");
    assert_eq!(seqs(&taken), [stored[5]]);
    let chunks: Vec<Arc<Vec<Processed>>> = stored
        .chunks(2)
        .map(|pair| Arc::new(pair.iter().map(|&seq| routed(seq, Vec::new())).collect()))
        .collect();
    let a = &a;
    let lost = futures::future::join_all(chunks.iter().enumerate().map(|(i, chunk)| async move {
        let now = 10_100 + 100 * i as i64;
        a.complete(&store.pool, chunk, now)
            .await
            .expect("completes")
    }))
    .await;
    assert_eq!(lost, [0, 0, 1], "only the last chunk lost one");
    assert_eq!(count(store, "SELECT count(*) FROM routings").await, 5);
    assert_eq!(
        count(store, "SELECT count(DISTINCT xmin::text) FROM routings").await,
        2,
        "the first chunk alone, then the two queued behind it in one statement"
    );
    assert_eq!(
        count(store, "SELECT count(*) FROM event_work").await,
        1,
        "the other replica's claim stays"
    );
}

/// When a chunk that shares a statement with others finds a routing already recorded, the
/// statement writes nothing, and every chunk in it is written through the general path: the
/// others lose nothing because of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_in_a_shared_statement_sends_every_chunk_in_it_the_general_way() {
    let (db, a, _) = setup("claims_shared_conflict").await;
    let store = &db.store;
    let stored = store_events(store, &["s1", "s2", "s3"]).await;
    let claimed = a.claim_events(&store.pool, 5_000, 1).await.expect("claims");
    assert_eq!(seqs(&claimed), [stored[0]]);
    a.complete(
        &store.pool,
        &Arc::new(vec![routed(stored[0], Vec::new())]),
        5_000,
    )
    .await
    .expect("completes");
    db.exec("INSERT INTO event_work (seq) VALUES ($1)", &[&stored[0]])
        .await;
    let claimed = a
        .claim_events(&store.pool, 5_000, 10)
        .await
        .expect("claims");
    assert_eq!(seqs(&claimed), stored);
    let mut again = routed(stored[0], Vec::new());
    again.status = EventStatus::Unrouted;
    // The first chunk is written alone; the other two queue behind it and share a statement.
    let chunks = [
        Arc::new(vec![routed(
            stored[2],
            vec![delivery(DeliveryState::Delivered)],
        )]),
        Arc::new(vec![again]),
        Arc::new(vec![routed(
            stored[1],
            vec![delivery(DeliveryState::Delivered)],
        )]),
    ];
    let a = &a;
    let lost = futures::future::join_all(
        chunks
            .iter()
            .map(|chunk| async move { a.complete(&store.pool, chunk, 6_000).await }),
    )
    .await;
    let lost: Vec<usize> = lost.into_iter().map(|l| l.expect("completes")).collect();
    assert_eq!(lost, [0, 0, 0]);
    assert_eq!(count(store, "SELECT count(*) FROM event_work").await, 0);
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM routings WHERE status = 'routed' AND processed_at = 6000"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM routings WHERE status = 'unrouted'"
        )
        .await,
        1
    );
    assert_eq!(count(store, "SELECT count(*) FROM deliveries").await, 2);
}
