//! `store copy` end to end on real stores: a SQLite store filled through `SqliteStore` (ingest,
//! quarantine, routing results, a replay) is copied into a throwaway PostgreSQL cluster, and
//! what PostgreSQL then holds is compared row for row with what SQLite held, envelopes read
//! back through both `stored_events` views. Then the copy is used: a new event continues the
//! sequence, a Ledig retry of a copied latest state is a duplicate. A second copy is refused,
//! and a copy that fails halfway leaves the database empty.

use super::sqlite_side::Table;
use super::*;
use crate::metrics::Metrics;
use crate::store::{
    AttemptRecord, DataSpan, DeliveryState, EventFilter, EventStatus, IngestOutcome, Intake,
    NewDelivery, NewEvent, ObjectStateClaim, PgOptions, PgStore, Processed, QuarantinedBody,
    RouteRunState, RouteRunUpdate, SqliteStore, Store, StuckAmount,
};
use gateway_providers::envelope::RetryIdentity;
use std::sync::Arc;

const HOUR_MS: i64 = 3_600_000;

/// An event as the webhook path builds it from a body (envelope, data span, object state).
fn normalized(provider: &str, source: &str, body: &str, at: i64) -> NewEvent {
    let n = gateway_providers::normalize_local_payload(provider, source, body.as_bytes(), at)
        .expect("normalizes");
    let envelope = n.envelope.to_json_parts();
    let data_span = envelope
        .data
        .zip(n.data_in_body)
        .map(|(data, in_body)| DataSpan {
            in_envelope: data.start,
            in_body,
            len: data.len(),
        });
    NewEvent {
        subject: n.envelope.subject.clone().filter(|s| !s.is_empty()),
        source: source.into(),
        dedup_key: n.dedup_key.as_str().into(),
        event_type: n.envelope.event_type.clone(),
        envelope: envelope.text,
        data_span,
        raw_body: bytes::Bytes::from(body.to_owned()),
        headers: r#"{"x-ledger-signature":"t=1,v1=ab"}"#.into(),
        received_at_ms: at,
        order: crate::worker::order_key::order_of(
            n.envelope.subject.as_deref(),
            n.envelope.time.as_deref(),
            &n.envelope.data,
        ),
        object_state: match n.retry_identity {
            RetryIdentity::Key => None,
            RetryIdentity::ObjectState(s) => Some(ObjectStateClaim {
                object: s.object,
                state: s.state,
                retry_window_ms: i64::try_from(s.retry_window.as_millis()).expect("fits"),
            }),
        },
    }
}

fn ledger(id: &str, at: i64) -> NewEvent {
    let body = format!(
        r#"{{"id":"{id}","type":"transaction.completed","createdAt":"2024-01-01T00:00:00Z","data":{{"id":"txn_{id}","amount":"10.00"}}}}"#
    );
    normalized("ledger", "ledger", &body, at)
}

fn payout(id: &str, status: &str) -> String {
    format!(r#"{{"event":"crypto_payout_update","data":{{"id":"{id}","status":"{status}"}}}}"#)
}

fn attempt(at: i64, status: u16) -> AttemptRecord {
    AttemptRecord {
        at,
        status: Some(status),
        error: None,
        duration_ms: 3,
    }
}

fn delivery(state: DeliveryState, status: u16, at: i64) -> NewDelivery {
    NewDelivery {
        route: "all".into(),
        destination: "ledger-sink".into(),
        webhook_id: format!("wh_{at}"),
        envelope: None,
        state,
        attempts: vec![attempt(at, status)],
        order: None,
        stuck: None,
    }
}

fn routed(seq: i64, status: EventStatus, deliveries: Vec<NewDelivery>) -> Processed {
    Processed {
        seq,
        status,
        steps: Vec::new(),
        deliveries,
        route_runs: Vec::new(),
        append: false,
    }
}

fn stored(outcome: IngestOutcome) -> i64 {
    match outcome {
        IngestOutcome::Stored { seq } => seq,
        IngestOutcome::Duplicate => panic!("expected a new event"),
    }
}

/// Fills a SQLite store through its own code paths; returns the sequence numbers stored.
async fn fill(path: &Path, now: i64) -> Vec<i64> {
    let (store, writer) =
        SqliteStore::open(path, Duration::from_secs(3600), Metrics::new().expect("m"))
            .expect("opens");
    let mut seqs = Vec::new();
    // Outside the 1 h dedup window the copy is given: stored, but its key is not copied.
    seqs.push(stored(
        store
            .ingest(ledger("evt_old", now - 2 * HOUR_MS))
            .await
            .expect("i"),
    ));
    for (i, id) in ["evt_a", "evt_b", "evt_c", "evt_d", "evt_e"]
        .iter()
        .enumerate()
    {
        let at = now - 60_000 + i64::try_from(i).expect("small");
        seqs.push(stored(store.ingest(ledger(id, at)).await.expect("ingests")));
    }
    for (i, body) in [
        payout("p1", "pending"),
        payout("p1", "failed"),
        payout("p2", "pending"),
    ]
    .iter()
    .enumerate()
    {
        let at = now - 30_000 + i64::try_from(i).expect("small");
        let event = normalized("ledig", "ledig", body, at);
        seqs.push(stored(store.ingest(event).await.expect("ingests")));
    }
    for (body, at) in [
        (&b"not json"[..], now - 5_000),
        (&b"not json"[..], now - 4_000),
        (&b"<xml/>"[..], now),
    ] {
        store
            .quarantine(QuarantinedBody {
                source: "ledger".into(),
                reason: "body is not valid JSON".into(),
                raw_body: bytes::Bytes::copy_from_slice(body),
                headers: "{}".into(),
                received_at_ms: at,
            })
            .await
            .expect("quarantines");
    }
    let t = now - 50_000;
    let retrying = Processed {
        route_runs: vec![RouteRunUpdate {
            id: None,
            route: "all".into(),
            state: RouteRunState::Retry {
                next_attempt_ms: now + 60_000,
            },
            reason: "plugin answered retry".into(),
            attempts: 1,
        }],
        ..routed(seqs[4], EventStatus::Retrying, Vec::new())
    };
    let results = vec![
        routed(
            seqs[0],
            EventStatus::Routed,
            vec![delivery(DeliveryState::Delivered, 200, t)],
        ),
        routed(
            seqs[1],
            EventStatus::Routed,
            vec![delivery(DeliveryState::Delivered, 204, t)],
        ),
        routed(
            seqs[2],
            EventStatus::Routed,
            vec![delivery(
                DeliveryState::Pending {
                    next_attempt_ms: now + 30_000,
                },
                503,
                t + 1,
            )],
        ),
        routed(
            seqs[3],
            EventStatus::Routed,
            // Dead, with the amount it keeps (the groups' sums).
            vec![NewDelivery {
                stuck: StuckAmount::of_envelope(r#"{"data":{"amount":"10.00"}}"#),
                ..delivery(
                    DeliveryState::Dead {
                        reason: "410 Gone".into(),
                    },
                    410,
                    t + 2,
                )
            }],
        ),
        retrying,
    ];
    store.complete(Arc::new(results)).await.expect("completes");
    let replay = EventFilter {
        seq: Some(seqs[1]),
        ..EventFilter::default()
    };
    assert_eq!(store.request_replay(replay, 10).await.expect("marks"), 1);
    let audit = crate::store::AuditRecord {
        id: 0,
        at: now,
        actor: "alice".into(),
        action: "replay".into(),
        selection: format!("event {}", seqs[1]),
        count: 1,
    };
    store.record_audit(audit).await.expect("records");
    drop(store);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .expect("joins");
    seqs
}

async fn pg_client(cluster: &throwaway_pg::Cluster, db: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&cluster.conninfo(db), tokio_postgres::NoTls)
            .await
            .expect("connects");
    tokio::spawn(connection);
    client
}

/// Rows of one query on SQLite, every column as text (or hex for blobs), for comparing.
fn sqlite_rows(path: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(path).expect("opens");
    let mut stmt = conn.prepare(sql).expect("prepares");
    let columns = stmt.column_count();
    stmt.query_map([], |r| {
        (0..columns)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Real(f) => f.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => hex::encode(b),
                })
            })
            .collect()
    })
    .expect("queries")
    .collect::<Result<_, _>>()
    .expect("reads")
}

/// The same query on PostgreSQL, with every column cast to text in `sql` itself.
async fn pg_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    client
        .query(sql, &[])
        .await
        .expect("queries")
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect()
}

/// Columns the copy leaves out on purpose: (side, table, column, why).
const LEFT_OUT: &[(&str, &str, &str, &str)] = &[
    (
        "sqlite",
        "events",
        "status",
        "unused: the routing state is in `routings`, which is copied",
    ),
    (
        "postgres",
        "deliveries",
        "lease_owner",
        "a claim by a running replica: copied rows are claimed by none",
    ),
    (
        "postgres",
        "route_runs",
        "lease_owner",
        "a claim by a running replica: copied rows are claimed by none",
    ),
];

/// The tables copied row for row into a PostgreSQL table of the same name, as the copy
/// writes them: `table (column, ...)`.
fn row_for_row_targets() -> Vec<&'static str> {
    let mut targets: Vec<&str> = [
        Table::Events,
        Table::Routings,
        Table::Deliveries,
        Table::RouteRuns,
        Table::AdminAudit,
    ]
    .into_iter()
    .map(|t| t.shape().1)
    .collect();
    targets.push(QUARANTINE_TARGET);
    targets
}

/// `side table.column` for every column of those tables, in the SQLite store or in the
/// PostgreSQL schema, that the copy neither writes nor lists in [`LEFT_OUT`].
async fn columns_the_copy_misses(sqlite: &Path, pg: &tokio_postgres::Client) -> Vec<String> {
    let conn = rusqlite::Connection::open(sqlite).expect("opens");
    let mut missed = Vec::new();
    for target in row_for_row_targets() {
        let (table, list) = target.split_once('(').expect("a column list");
        let table = table.trim();
        let copied: Vec<&str> = list
            .trim_end_matches(')')
            .split(',')
            .map(str::trim)
            .collect();
        let on_sqlite: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .expect("prepares")
            .query_map([table], |r| r.get(0))
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("reads");
        let on_postgres: Vec<String> = pg
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .await
            .expect("queries")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            !on_sqlite.is_empty() && !on_postgres.is_empty(),
            "{table} on both sides"
        );
        for (side, columns) in [("sqlite", on_sqlite), ("postgres", on_postgres)] {
            for column in columns {
                let left_out = LEFT_OUT
                    .iter()
                    .any(|&(s, t, c, _)| (s, t, c) == (side, table, column.as_str()));
                if !copied.contains(&column.as_str()) && !left_out {
                    missed.push(format!("{side} {table}.{column}"));
                }
            }
        }
    }
    missed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_sqlite_store_is_copied_whole_and_works_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("g.db");
    let now = crate::store::unix_ms();
    let seqs = fill(&db, now).await;
    let pg = throwaway_pg::Cluster::start().expect("a throwaway PostgreSQL cluster");
    pg.create_database("gateway").expect("createdb");
    let conninfo = pg.conninfo("gateway");
    let timeout = Duration::from_secs(10);
    let window = Duration::from_secs(3600);

    let summary = copy_from_sqlite(&db, &conninfo, timeout, window, now)
        .await
        .expect("copies");
    assert_eq!(
        summary,
        CopySummary {
            migrated: super::super::migrations::versions(),
            events: 9,
            dedup_keys: 8,
            object_states: 2,
            object_states_lost: 0,
            routings: 5,
            deliveries: 4,
            route_runs: 1,
            quarantine: 2,
            quarantine_merged: 0,
            // Never routed: evt_e and the three Ledig events; asked to replay: evt_a.
            event_work: 5,
            admin_audit: 1,
        }
    );
    let client = pg_client(&pg, "gateway").await;
    let events = "SELECT seq, source, dedup_key, event_type, envelope, raw_body, headers, \
                  received_at FROM stored_events ORDER BY seq";
    let pg_events = "SELECT seq::text, source, dedup_key, event_type, envelope, \
                     encode(raw_body, 'hex'), headers, received_at::text \
                     FROM stored_events ORDER BY seq";
    let from_sqlite = sqlite_rows(&db, events);
    assert_eq!(from_sqlite.len(), 9);
    assert_eq!(pg_rows(&client, pg_events).await, from_sqlite);
    // Some envelopes were stored without their data: the view put it back the same way.
    assert!(
        pg_rows(
            &client,
            "SELECT count(*)::text FROM events WHERE data_at IS NOT NULL"
        )
        .await
            != vec![vec!["0".to_owned()]]
    );
    let deliveries = "SELECT id, event_seq, route, destination, webhook_id, envelope, status, \
                      attempts, next_attempt_at, last_error, history, created_at, updated_at, \
                      amount, currency, amount_units, amount_scale FROM deliveries ORDER BY id";
    let pg_deliveries = "SELECT id::text, event_seq::text, route, destination, webhook_id, \
                         envelope, status, attempts::text, next_attempt_at::text, last_error, \
                         history, created_at::text, updated_at::text, amount, currency, \
                         amount_units::text, amount_scale::text FROM deliveries ORDER BY id";
    assert_eq!(
        pg_rows(&client, pg_deliveries).await,
        sqlite_rows(&db, deliveries)
    );
    let runs = "SELECT id, event_seq, route, status, attempts, next_attempt_at, reason \
                FROM route_runs ORDER BY id";
    let pg_runs = "SELECT id::text, event_seq::text, route, status, attempts::text, \
                   next_attempt_at::text, reason FROM route_runs ORDER BY id";
    assert_eq!(pg_rows(&client, pg_runs).await, sqlite_rows(&db, runs));
    assert_eq!(
        pg_rows(
            &client,
            "SELECT seq::text, status FROM routings ORDER BY seq"
        )
        .await,
        sqlite_rows(&db, "SELECT seq, status FROM routings ORDER BY seq")
    );
    assert_eq!(
        pg_rows(
            &client,
            "SELECT source, repeats::text, last_seen_at::text, \
                    (body_hash = sha256(raw_body))::text \
             FROM quarantine ORDER BY id"
        )
        .await
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>(),
        [
            format!("ledger 2 {} true", now - 4_000),
            format!("ledger 1 {now} true")
        ]
    );
    assert_eq!(
        pg_rows(
            &client,
            "SELECT seq::text, replay::text FROM event_work ORDER BY seq"
        )
        .await,
        [seqs[1], seqs[5], seqs[6], seqs[7], seqs[8]]
            .iter()
            .map(|s| vec![s.to_string(), (*s == seqs[1]).to_string()])
            .collect::<Vec<_>>()
    );
    // The events not routed yet keep their hold on their subjects (a replay holds nothing).
    assert_eq!(
        pg_rows(
            &client,
            "SELECT seq::text FROM event_work WHERE subject IS NOT NULL ORDER BY seq"
        )
        .await,
        [seqs[5], seqs[6], seqs[7], seqs[8]]
            .iter()
            .map(|s| vec![s.to_string()])
            .collect::<Vec<_>>()
    );
    assert_eq!(
        pg_rows(
            &client,
            "SELECT dedup_key FROM dedup_keys WHERE dedup_key LIKE 'evt_%' ORDER BY 1"
        )
        .await
        .concat(),
        ["evt_a", "evt_b", "evt_c", "evt_d", "evt_e"],
        "every key inside the window, none before it"
    );

    // Every column either side has is carried, or left out on purpose (a column added to
    // one schema and not to the copy would otherwise be dropped without a word).
    assert_eq!(
        columns_the_copy_misses(&db, &client).await,
        Vec::<String>::new()
    );

    // The copy in use: the sequence goes on past the copied events, and the latest state of
    // a Ledig payout copied from SQLite still makes its provider's retry a duplicate (while
    // its older state, a genuine change back, is a new event).
    let store = PgStore::connect(&conninfo, &PgOptions::default(), Metrics::new().expect("m"))
        .await
        .expect("connects");
    // The events are found by subject (the hashes written from the copied envelopes).
    let about = |subject: &str| EventFilter {
        subject: Some(subject.into()),
        ..EventFilter::default()
    };
    let found = |events: Vec<crate::store::EventSummary>| -> Vec<i64> {
        events.iter().map(|e| e.seq).collect()
    };
    assert_eq!(
        found(
            store
                .list_events(about("txn_evt_a"), 10)
                .await
                .expect("lists")
        ),
        [seqs[1]]
    );
    assert_eq!(
        found(store.list_events(about("p1"), 10).await.expect("lists")),
        [seqs[7], seqs[6]]
    );
    // And by id (the dedup keys' hashes written in SQL, searched with Rust's).
    let by_id = EventFilter {
        id: Some("evt_a".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        found(store.list_events(by_id, 10).await.expect("lists")),
        [seqs[1]]
    );
    let later = now + 1_000;
    assert_eq!(
        store
            .ingest(ledger("evt_new", later))
            .await
            .expect("ingests"),
        IngestOutcome::Stored { seq: seqs[8] + 1 }
    );
    assert_eq!(
        store.ingest(ledger("evt_b", later)).await.expect("ingests"),
        IngestOutcome::Duplicate,
        "a dedup key copied from SQLite"
    );
    let retry = normalized("ledig", "ledig", &payout("p1", "failed"), later);
    assert_eq!(
        store.ingest(retry).await.expect("ingests"),
        IngestOutcome::Duplicate,
        "the copied latest state of p1"
    );
    let back = normalized("ledig", "ledig", &payout("p1", "pending"), later + 1);
    assert!(matches!(
        store.ingest(back).await.expect("ingests"),
        IngestOutcome::Stored { .. }
    ));

    // Not empty any more: refused, nothing written.
    match copy_from_sqlite(&db, &conninfo, timeout, window, now).await {
        Err(CopyError::NotEmpty(what)) => assert!(what.contains("events: 11 row(s)"), "{what}"),
        other => panic!("a second copy was not refused: {other:?}"),
    }
    assert_eq!(
        pg_rows(&client, "SELECT count(*)::text FROM events").await,
        [["11"]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_halfway_leaves_the_database_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("g.db");
    let now = crate::store::unix_ms();
    fill(&db, now).await;
    // A row no gateway writes: read after the events, so they were already sent.
    rusqlite::Connection::open(&db)
        .expect("opens")
        .execute(
            "UPDATE deliveries SET attempts = 1 << 40 WHERE id = (SELECT max(id) FROM deliveries)",
            [],
        )
        .expect("updates");
    let pg = throwaway_pg::Cluster::start().expect("a throwaway PostgreSQL cluster");
    pg.create_database("gateway").expect("createdb");
    let conninfo = pg.conninfo("gateway");
    let failed = copy_from_sqlite(
        &db,
        &conninfo,
        Duration::from_secs(10),
        Duration::from_secs(3600),
        now,
    )
    .await;
    assert!(matches!(failed, Err(CopyError::Read { .. })), "{failed:?}");
    let client = pg_client(&pg, "gateway").await;
    for table in TARGET_TABLES {
        assert_eq!(
            pg_rows(&client, &format!("SELECT count(*)::text FROM {table}")).await,
            [["0"]],
            "{table}"
        );
    }
}
