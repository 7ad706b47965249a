//! Ordered delivery between replicas, with the clock passed in: however two replicas'
//! claims interleave (with each other, and with the routing that records an older event of a
//! subject whose newer one is being claimed), no subject ever has two deliveries in flight, and
//! a dead replica's hold on a subject lasts until its lease runs out, then moves on.

use super::claims::Claims;

const LEASE: i64 = 1_000;

/// Inserts a pending ordered delivery of `seq` for `subject` with this provider time.
async fn ordered(db: &super::test_db::Db, seq: i64, subject: &str, provider_ms: i64) -> i64 {
    let c = db.store.pool.get().await.expect("a connection");
    c.query_one(
        "INSERT INTO deliveries (event_seq, route, destination, webhook_id, status, attempts, \
           next_attempt_at, history, created_at, updated_at, subject, order_at) \
         VALUES ($1, 'r', 'd', 'w', 'pending', 0, 0, '[]', 1, 1, $2, $3) RETURNING id",
        &[&seq, &subject, &provider_ms],
    )
    .await
    .expect("inserts")
    .get(0)
}

async fn events(db: &super::test_db::Db, n: usize, prefix: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        seqs.push(db.event("ledger", &format!("{prefix}{i}"), 1).await);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_not_yet_committed_keeps_another_replica_off_its_subject() {
    let db = super::test_db::Db::new("ordering_race").await;
    let other = Claims::new(LEASE, 0, 256);
    let pool = &db.store.pool;
    let seqs = events(&db, 3, "k").await;
    let newer = ordered(&db, seqs[0], "s", 200).await;
    let unrelated = ordered(&db, seqs[1], "t", 200).await;
    // Replica A claims `s`'s only delivery; its transaction has not committed yet (a slow
    // commit, a stall between the statements).
    let mut a = pool.get().await.expect("a connection");
    let tx = a.transaction().await.expect("begins");
    let owner = "replica-a".to_owned();
    let by_a = super::ordering::claim_in(&tx, (10_000, 1), (&owner, 10_000 + LEASE), &Vec::new())
        .await
        .expect("claims");
    assert_eq!(by_a.iter().map(|d| d.id).collect::<Vec<_>>(), [newer]);
    // Meanwhile routing records an older event of `s`, and replica B claims: what it reads
    // shows `s:200` as not claimed and `s:100` as `s`'s next. It must not take it.
    let older = ordered(&db, seqs[2], "s", 100).await;
    let by_b = other
        .claim_due_deliveries(pool, 10_001, 10)
        .await
        .expect("claims");
    assert_eq!(
        by_b.iter().map(|d| d.id).collect::<Vec<_>>(),
        [unrelated],
        "`s` is being claimed by replica A"
    );
    tx.commit().await.expect("commits");
    let by_b = other
        .claim_due_deliveries(pool, 10_002, 10)
        .await
        .expect("claims");
    assert!(by_b.is_empty(), "`s:200` is in flight: {by_b:?}");
    assert_ne!(older, newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_hold_on_a_subject_lasts_until_its_lease_runs_out() {
    let db = super::test_db::Db::new("ordering_takeover").await;
    let (dead, live) = (Claims::new(LEASE, 0, 256), Claims::new(LEASE, 0, 256));
    let pool = &db.store.pool;
    let seqs = events(&db, 2, "k").await;
    let first = ordered(&db, seqs[0], "s", 100).await;
    let got = dead
        .claim_due_deliveries(pool, 10_000, 10)
        .await
        .expect("claims");
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), [first]);
    // An older event arrives while the first is in flight on a replica that then dies.
    let older = ordered(&db, seqs[1], "s", 50).await;
    drop(dead);
    for now in [10_001, 9_999 + LEASE] {
        let got = live
            .claim_due_deliveries(pool, now, 10)
            .await
            .expect("claims");
        assert!(
            got.is_empty(),
            "at {now}: `s` is in flight on the dead replica: {got:?}"
        );
    }
    let got = live
        .claim_due_deliveries(pool, 10_000 + LEASE, 10)
        .await
        .expect("claims");
    assert_eq!(
        got.iter().map(|d| d.id).collect::<Vec<_>>(),
        [older],
        "the lease ran out: the subject goes on, oldest first"
    );
}
