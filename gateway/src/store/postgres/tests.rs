//! What only a shared database has to prove: replicas racing on one key, replicas migrating at
//! once, a newer schema refused, a database that restarts under the store, the ack's
//! durability setting forced, group commit really grouping, a stalled commit not holding the
//! acks behind it, and a writer spacing its batches. Each test starts its own throwaway
//! cluster (fsync on), except the last two, which take a database on the cluster the other
//! store tests share (`test_db.rs`).

use super::*;
use std::sync::Arc;
use throwaway_pg::{Cluster, Options, StopMode};

fn cluster(options: &Options) -> Cluster {
    let cluster = Cluster::start_with(options).expect("a throwaway PostgreSQL cluster");
    cluster.create_database("gateway").expect("createdb");
    cluster
}

async fn replica(cluster: &Cluster, metrics: &Metrics) -> PgStore {
    PgStore::connect(
        &cluster.conninfo("gateway"),
        &PgOptions::default(),
        metrics.clone(),
    )
    .await
    .expect("connects")
}

fn event(key: &str) -> NewEvent {
    super::super::conformance::event("ledger", key, super::super::unix_ms())
}

fn count(cluster: &Cluster, sql: &str) -> i64 {
    cluster
        .psql("gateway", sql)
        .expect("counts")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_sent_to_two_replicas_at_once_is_stored_once() {
    let pg = cluster(&Options::default());
    let metrics = Metrics::new().expect("metrics");
    let replicas = [replica(&pg, &metrics).await, replica(&pg, &metrics).await];
    for round in 0..5 {
        let key = format!("evt_race_{round}");
        let sends: Vec<_> = (0..50)
            .map(|i| {
                let store = replicas[i % 2].clone();
                let e = event(&key);
                tokio::spawn(async move { store.ingest(e).await })
            })
            .collect();
        let mut stored = 0;
        for s in sends {
            if let IngestOutcome::Stored { .. } = s.await.expect("joins").expect("ingests") {
                stored += 1;
            }
        }
        assert_eq!(stored, 1, "{key}");
    }
    assert_eq!(count(&pg, "SELECT count(*) FROM events"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let pg = cluster(&Options::default());
    let metrics = Metrics::new().expect("metrics");
    let conninfo = pg.conninfo("gateway");
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let (conninfo, metrics) = (conninfo.clone(), metrics.clone());
            tokio::spawn(async move {
                PgStore::connect(&conninfo, &PgOptions::default(), metrics).await
            })
        })
        .collect();
    for s in starts {
        s.await.expect("joins").expect("every replica starts");
    }
    assert_eq!(
        count(&pg, "SELECT count(*) FROM gateway_schema_migrations"),
        i64::try_from(migrations::versions().len()).expect("a few")
    );
    let status = PgStore::schema_status(&conninfo, Duration::from_secs(5))
        .await
        .expect("reads");
    assert!(status.is_current(), "{status:?}");

    // A newer gateway migrated this database: this one must not touch it.
    pg.psql(
        "gateway",
        "INSERT INTO gateway_schema_migrations (version, name) VALUES (999, 'from the future')",
    )
    .expect("writes");
    let refused = PgStore::connect(&conninfo, &PgOptions::default(), metrics).await;
    match refused {
        Err(StoreError::Schema(message)) => {
            assert!(
                message.contains("999") && message.contains("newer"),
                "{message}"
            );
        }
        other => panic!("a newer schema was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_writes_while_down_and_heals_without_a_new_store() {
    let pg = cluster(&Options::default());
    let metrics = Metrics::new().expect("metrics");
    let store = replica(&pg, &metrics).await;
    assert!(matches!(
        store.ingest(event("before")).await.expect("ingests"),
        IngestOutcome::Stored { .. }
    ));
    pg.stop(StopMode::Immediate).expect("stops");
    // Down: every write is an error (the caller answers 503), never a success.
    assert!(store.ingest(event("during")).await.is_err());
    assert!(store.check_writable().await.is_err());
    pg.start_again().expect("starts");
    // Back: the same store writes again; what was acked before the crash is there.
    assert!(matches!(
        store
            .ingest(event("after"))
            .await
            .expect("ingests after the restart"),
        IngestOutcome::Stored { .. }
    ));
    assert_eq!(
        store.ingest(event("before")).await.expect("ingests"),
        IngestOutcome::Duplicate
    );
    store.check_writable().await.expect("writable again");
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM events WHERE dedup_key IN ('before', 'after')"
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_wait_for_the_flush_even_when_the_server_default_does_not() {
    let pg = cluster(&Options::default().set("synchronous_commit", "off"));
    assert_eq!(
        pg.psql("gateway", "SHOW synchronous_commit")
            .expect("reads")
            .trim(),
        "off"
    );
    let store = replica(&pg, &Metrics::new().expect("metrics")).await;
    assert_eq!(store.session_setting("synchronous_commit").await, "on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingests_share_transactions() {
    let pg = cluster(&Options::default());
    let metrics = Metrics::new().expect("metrics");
    let store = Arc::new(replica(&pg, &metrics).await);
    let sends: Vec<_> = (0..400)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.ingest(event(&format!("g{i}"))).await })
        })
        .collect();
    for s in sends {
        s.await.expect("joins").expect("ingests");
    }
    let text = metrics.render();
    let batches: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gateway_store_batch_size_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the batch size histogram");
    assert!(
        batches < 200.0,
        "400 concurrent ingests took {batches} transactions"
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM events"), 400);
}

/// A commit that stalls (here: waiting for a row lock another session holds) does not hold
/// every ack behind it: the requests that arrive meanwhile are committed by the replica's other
/// writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_piling_up_behind_a_stalled_commit_are_committed_by_another_writer() {
    let db = super::test_db::Db::new("ingest_stalled_commit").await;
    let store = Arc::new(db.store.clone());
    let blocker = db.store.pool.get().await.expect("a connection");
    blocker
        .batch_execute(
            "BEGIN; INSERT INTO dedup_keys (source, dedup_key, seen) \
             VALUES ('ledger', 'stalled', 0)",
        )
        .await
        .expect("holds the key");
    let stalled = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.ingest(event("stalled")).await })
    };
    // Until the first writer's insert waits for the lock.
    let watcher = db.store.pool.get().await.expect("a connection");
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE wait_event_type = 'Lock' AND datname = current_database()";
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while watcher
            .query_one(waiting, &[])
            .await
            .expect("reads")
            .get::<_, i64>(0)
            == 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the first ingest waits for the lock");
    let piled: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.ingest(event(&format!("piled{i}"))).await })
        })
        .collect();
    for p in piled {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), p)
            .await
            .expect("acked while the first commit still waits")
            .expect("joins")
            .expect("ingests");
        assert!(matches!(outcome, IngestOutcome::Stored { .. }));
    }
    assert!(!stalled.is_finished());
    blocker.batch_execute("ROLLBACK").await.expect("lets go");
    let outcome = stalled.await.expect("joins").expect("ingests");
    assert!(matches!(outcome, IngestOutcome::Stored { .. }));
}

/// A writer starts its next batch no sooner than `ack_spacing` after its previous one started
/// (so that at moderate rates a commit carries more than a handful of events), and a request
/// that finds it idle since longer than that is written at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_spaces_its_batches_but_a_request_finding_it_idle_waits_for_nobody() {
    // Long enough that a first commit on a busy CI machine stays well inside it.
    let spacing = std::time::Duration::from_secs(3);
    let options = PgOptions {
        writers: 1,
        ack_spacing: spacing,
        ..PgOptions::default()
    };
    let db = super::test_db::Db::with_options("ingest_spacing", &options).await;
    let first_sent = std::time::Instant::now();
    db.ingest(event("first")).await;
    let first_acked = first_sent.elapsed();
    assert!(
        first_acked < spacing,
        "the first batch of an idle writer waited {first_acked:?}"
    );
    db.ingest(event("second")).await;
    // The second batch could start only `spacing` after the first one did, and the first one
    // started after `first_sent`.
    let second_acked = first_sent.elapsed();
    assert!(
        second_acked >= spacing,
        "the next batch started {second_acked:?} after the first was sent"
    );
}
