//! Replays, redrives and event retention on PostgreSQL, against a real throwaway cluster (see
//! `test_db`).

use super::super::work::{EventFilter, EventStatus, RedriveSelection};
use super::super::{ExpiredEvents, IngestOutcome, Intake as _, conformance, unix_ms};
use super::actions;
use super::test_db::{Db, filter};
use std::time::Duration;

/// Notifications on the work channel, on a connection of their own (kept open by the
/// returned client).
async fn listen(
    db: &Db,
    name: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use futures::StreamExt as _;
    let (client, mut connection) =
        tokio_postgres::connect(&db.cluster.conninfo(name), tokio_postgres::NoTls)
            .await
            .expect("connects");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                drop(tx.send(n.channel().to_owned()));
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", actions::WORK_CHANNEL))
        .await
        .expect("listens");
    (client, rx)
}

async fn woken(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(
        got.expect("a notification within 10 s").as_deref(),
        Some(actions::WORK_CHANNEL)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_marks_only_finished_events_queues_each_once_and_wakes_the_workers() {
    let name = "replay";
    let db = Db::new(name).await;
    let states = [
        EventStatus::Routed,
        EventStatus::Unrouted,
        EventStatus::Pending,
        EventStatus::Failed,
        EventStatus::Replay,
        EventStatus::Routed,
    ];
    for (n, status) in (1_i64..).zip(states) {
        let seq = db.event("a", &format!("e{n}"), n).await;
        match status {
            EventStatus::Pending => db.waiting(seq).await,
            _ => db.routed(seq, status).await,
        }
    }
    let work = "SELECT seq FROM event_work ORDER BY seq";
    let marked_for_replay = "SELECT seq FROM event_work WHERE replay ORDER BY seq";
    assert_eq!(db.ints(work).await, [3, 5]);
    let (_listening, mut notes) = listen(&db, name).await;
    let client = db.store.pool.get().await.expect("a connection");
    client
        .batch_execute("LISTEN gateway_work")
        .await
        .expect("listens");

    // The newest first, within the limit.
    assert_eq!(
        db.store.request_replay(filter(), 1).await.expect("marks"),
        1
    );
    assert_eq!(db.ints(marked_for_replay).await, [5, 6]);
    let only = |seq| EventFilter {
        seq: Some(seq),
        ..filter()
    };
    // Not routed yet, or marked already: on its way, left alone.
    assert_eq!(
        db.store.request_replay(only(3), 10).await.expect("marks"),
        0
    );
    assert_eq!(
        db.store.request_replay(only(5), 10).await.expect("marks"),
        0
    );
    assert_eq!(
        db.store.request_replay(filter(), 10).await.expect("marks"),
        3
    );
    assert_eq!(db.ints(work).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(db.ints(marked_for_replay).await, [1, 2, 4, 5, 6]);
    assert_eq!(
        db.ints("SELECT seq FROM routings WHERE status = 'replay' ORDER BY seq")
            .await,
        [1, 2, 4, 5, 6]
    );
    // Asking again changes nothing: one work row per event.
    assert_eq!(
        db.store.request_replay(filter(), 10).await.expect("marks"),
        0
    );
    assert_eq!(db.ints("SELECT count(*) FROM event_work").await, [6]);
    woken(&mut notes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrives_send_dead_letters_back_and_make_waiting_runs_due_but_not_claimed_ones() {
    let name = "redrive";
    let db = Db::new(name).await;
    let seq = db.event("a", "e", 1).await;
    db.routed(seq, EventStatus::Failed).await;
    let far = unix_ms() + 3_600_000;
    let d1 = db.delivery(seq, "dead", None, Some("replica-gone")).await;
    let d2 = db.delivery(seq, "dead", None, None).await;
    let delivered = db.delivery(seq, "delivered", None, None).await;
    let r1 = db.run(seq, "dead", None, Some("replica-gone")).await;
    let r2 = db.run(seq, "dead", None, None).await;
    let waiting = db.run(seq, "retry", Some(far), None).await;
    let claimed = db.run(seq, "retry", Some(far), Some("replica-b")).await;
    let overdue = db.run(seq, "retry", Some(5), Some("replica-c")).await;
    let (_listening, mut notes) = listen(&db, name).await;

    let before = unix_ms();
    let n = db
        .store
        .redrive(RedriveSelection::Deliveries(vec![d1, delivered]))
        .await
        .expect("redrives");
    assert_eq!(n, 1, "only the dead one");
    let (back,) = {
        let c = db.store.pool.get().await.expect("a connection");
        let row = c
            .query_one(
                "SELECT status, attempts, next_attempt_at, lease_owner, history \
                 FROM deliveries WHERE id = $1",
                &[&d1],
            )
            .await
            .expect("reads");
        let (status, attempts, next, lease, history): (String, i32, i64, Option<String>, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert_eq!((status.as_str(), attempts, lease), ("pending", 0, None));
        assert!(next >= before && next <= unix_ms(), "due now: {next}");
        (history,)
    };
    assert!(back.contains("503"), "the history stays: {back}");
    woken(&mut notes).await;

    let n = db
        .store
        .redrive(RedriveSelection::RouteRuns(vec![r1, waiting]))
        .await
        .expect("redrives");
    assert_eq!(n, 1, "only the dead one");
    assert_eq!(
        db.ints(&format!(
            "SELECT attempts::int8 FROM route_runs WHERE id = {r1} AND status = 'retry' \
             AND lease_owner IS NULL AND next_attempt_at <= {}",
            unix_ms()
        ))
        .await,
        [0]
    );

    // Waiting: made due now, attempts kept; the one being tried (its claim moved its due
    // time a lease ahead) and the one due already are left alone.
    let now = unix_ms();
    let n = db
        .store
        .redrive(RedriveSelection::WaitingRouteRuns)
        .await
        .expect("redrives");
    assert_eq!(n, 1);
    let due = |id| format!("SELECT next_attempt_at FROM route_runs WHERE id = {id}");
    let made_due = db.ints(&due(waiting)).await[0];
    assert!(made_due >= now && made_due <= unix_ms(), "{made_due}");
    assert_eq!(db.ints(&due(claimed)).await, [far]);
    assert_eq!(db.ints(&due(overdue)).await, [5]);
    assert_eq!(
        db.ints(&format!(
            "SELECT attempts::int8 FROM route_runs WHERE id = {waiting}"
        ))
        .await,
        [2]
    );

    // Everything dead, in several steps.
    let many = 2_500_i64;
    db.exec(
        "INSERT INTO deliveries (event_seq, route, destination, webhook_id, status, attempts, \
           history, created_at, updated_at) \
         SELECT $1, 'r', 'd', 'w' || n, CASE n % 2 WHEN 0 THEN 'dead' ELSE 'delivered' END, \
           5, '[]', 1, 1 FROM generate_series(1, $2::int8 * 2) AS n",
        &[&seq, &many],
    )
    .await;
    let n = db
        .store
        .redrive(RedriveSelection::All)
        .await
        .expect("redrives");
    assert_eq!(n, u64::try_from(many).expect("positive") + 2, "+ d2 and r2");
    assert_eq!(
        db.ints("SELECT count(*) FROM deliveries WHERE status = 'dead'")
            .await,
        [0]
    );
    assert_eq!(
        db.ints("SELECT count(*) FROM route_runs WHERE status = 'dead'")
            .await,
        [0]
    );
    assert_eq!(
        db.ints(&format!(
            "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts = 0 \
             AND id IN ({d2}, {d1})"
        ))
        .await,
        [2]
    );
    assert_eq!(
        db.ints("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
            .await,
        [many + 1]
    );
    assert_eq!(
        db.ints(&format!(
            "SELECT attempts::int8 FROM route_runs WHERE id = {r2}"
        ))
        .await,
        [0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_finished_events_and_never_the_newest() {
    let db = Db::new("retention").await;
    let keys = [
        "delivered",
        "unrouted",
        "dropped",
        "waiting",
        "dead",
        "retry",
        "run-dead",
        "run-done",
        "pending",
        "replaying",
        "newest",
    ];
    for (n, key) in (1_i64..).zip(keys) {
        assert_eq!(db.event("ledger", key, n * 1_000).await, n);
    }
    db.routed(1, EventStatus::Routed).await;
    db.delivery(1, "delivered", None, None).await;
    db.routed(2, EventStatus::Unrouted).await;
    db.routed(3, EventStatus::Dropped).await;
    db.routed(4, EventStatus::Routed).await;
    db.delivery(4, "delivered", None, None).await;
    db.delivery(4, "pending", Some(0), None).await;
    db.routed(5, EventStatus::Routed).await;
    db.delivery(5, "dead", None, None).await;
    db.routed(6, EventStatus::Retrying).await;
    db.run(6, "retry", Some(0), None).await;
    db.routed(7, EventStatus::Failed).await;
    db.run(7, "dead", None, None).await;
    db.routed(8, EventStatus::Routed).await;
    db.delivery(8, "delivered", None, None).await;
    db.run(8, "done", None, None).await;
    db.waiting(9).await;
    // Routed, and a replay asked for: its work row says it is not finished.
    db.routed(10, EventStatus::Routed).await;
    db.exec(
        "INSERT INTO event_work (seq, replay) VALUES (10, true)",
        &[],
    )
    .await;
    db.routed(11, EventStatus::Unrouted).await;
    // The search's subject rows, as batches leave them: a row goes once all its events have.
    db.exec(
        "INSERT INTO event_subjects (first_seq, last_seq, seqs, hashes) VALUES \
         (1, 2, '{1,2}', '{0,0}'), (3, 3, '{3}', '{0}'), (4, 6, '{4,5,6}', '{0,0,0}'), \
         (8, 8, '{8}', '{0}'), (7, 11, '{7,9,10,11}', '{0,0,0,0}')",
        &[],
    )
    .await;

    // Nothing is old enough.
    let none = db.store.expire_events(500, 0, 100).await.expect("expires");
    assert_eq!(
        none,
        ExpiredEvents {
            deleted: 0,
            resume_after: None
        }
    );
    // Events 1 to 3 are older than the cutoff; event 4 ends the pass.
    let young = db
        .store
        .expire_events(4_000, 0, 100)
        .await
        .expect("expires");
    assert_eq!(
        young,
        ExpiredEvents {
            deleted: 3,
            resume_after: None
        }
    );
    // Every event is older than this; steps of 3 resume where they ended.
    let (mut after, mut deleted, mut steps) = (0, 0, 0);
    loop {
        let step = db
            .store
            .expire_events(i64::MAX, after, 3)
            .await
            .expect("expires");
        deleted += step.deleted;
        steps += 1;
        match step.resume_after {
            Some(seq) => after = seq,
            None => break,
        }
    }
    // Seven candidates left (4..=10; the newest is never one): 3 + 3 + 1.
    assert_eq!((deleted, steps), (1, 3), "run-done");
    assert_eq!(
        db.ints("SELECT seq FROM events ORDER BY seq").await,
        [4, 5, 6, 7, 9, 10, 11]
    );
    assert_eq!(
        db.ints("SELECT seq FROM routings ORDER BY seq").await,
        [4, 5, 6, 7, 10, 11]
    );
    assert_eq!(
        db.ints("SELECT first_seq FROM event_subjects ORDER BY 1")
            .await,
        [4, 7]
    );
    // The id search's rows: one per ingest here (each event was its own batch).
    assert_eq!(
        db.ints("SELECT first_seq FROM event_ids ORDER BY 1").await,
        [4, 5, 6, 7, 9, 10, 11]
    );
    assert_eq!(
        db.ints("SELECT DISTINCT event_seq FROM deliveries ORDER BY 1")
            .await,
        [4, 5]
    );
    assert_eq!(
        db.ints("SELECT DISTINCT event_seq FROM route_runs ORDER BY 1")
            .await,
        [6, 7]
    );
    assert!(db.store.event(1).await.expect("reads").is_none());
    // Dedup is not retention's: the key is still known.
    assert_eq!(
        db.store
            .ingest(conformance::event("ledger", "delivered", 1))
            .await
            .expect("ingests"),
        IngestOutcome::Duplicate
    );
}
