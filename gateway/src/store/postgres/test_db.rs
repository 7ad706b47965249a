//! What the PostgreSQL admin and retention tests share: one throwaway cluster for all of them
//! while any runs (a cluster start costs about a second), a database of its own for each, and
//! the rows of the work after the ack written directly, as the workers would write them.

use super::super::work::{EventFilter, EventStatus, EventSummary};
use super::super::{NewEvent, conformance};
use super::{IngestOutcome, Intake as _, Metrics, PgOptions, PgStore};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use throwaway_pg::Cluster;
use tokio_postgres::types::ToSql;

/// The cluster the running tests share; stopped when the last of them ends.
static CLUSTER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

fn shared_cluster() -> Arc<Cluster> {
    let mut slot = CLUSTER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = slot.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(Cluster::start().expect("a throwaway PostgreSQL cluster"));
    *slot = Arc::downgrade(&cluster);
    cluster
}

/// A store on a fresh database of the shared cluster.
pub(super) struct Db {
    pub(super) store: PgStore,
    pub(super) cluster: Arc<Cluster>,
}

impl Db {
    pub(super) async fn new(name: &str) -> Self {
        Self::with_options(name, &PgOptions::default()).await
    }

    pub(super) async fn with_options(name: &str, options: &PgOptions) -> Self {
        let cluster = shared_cluster();
        cluster.create_database(name).expect("createdb");
        let store = PgStore::connect(
            &cluster.conninfo(name),
            options,
            Metrics::new().expect("metrics"),
        )
        .await
        .expect("connects");
        Self { store, cluster }
    }

    pub(super) async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> u64 {
        let c = self.store.pool.get().await.expect("a connection");
        c.execute(sql, params).await.expect(sql)
    }

    pub(super) async fn ints(&self, sql: &str) -> Vec<i64> {
        let c = self.store.pool.get().await.expect("a connection");
        let rows = c.query(sql, &[]).await.expect(sql);
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Stores an event (through the ack path) and returns its seq.
    pub(super) async fn ingest(&self, event: NewEvent) -> i64 {
        match self.store.ingest(event).await.expect("ingests") {
            IngestOutcome::Stored { seq } => seq,
            IngestOutcome::Duplicate => panic!("stored as a duplicate"),
        }
    }

    pub(super) async fn event(&self, source: &str, key: &str, at: i64) -> i64 {
        self.ingest(conformance::event(source, key, at)).await
    }

    /// The event not routed yet: its work row (ingest may have written it already).
    pub(super) async fn waiting(&self, seq: i64) {
        self.exec(
            "INSERT INTO event_work (seq) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&seq],
        )
        .await;
    }

    /// What routing decided; a replay also gets its work row, as a replay request gives it.
    pub(super) async fn routed(&self, seq: i64, status: EventStatus) {
        self.exec(
            "INSERT INTO routings (seq, status, processed_at) VALUES ($1, $2, 1)",
            &[&seq, &status.as_str()],
        )
        .await;
        let replay = status == EventStatus::Replay;
        self.exec(
            "INSERT INTO event_work (seq, replay) VALUES ($1, true) \
             ON CONFLICT (seq) DO UPDATE SET replay = true",
            &[&seq],
        )
        .await;
        if !replay {
            self.exec("DELETE FROM event_work WHERE seq = $1", &[&seq])
                .await;
        }
    }

    /// A delivery of `seq` in `status`; returns its id.
    pub(super) async fn delivery(
        &self,
        seq: i64,
        status: &str,
        next: Option<i64>,
        lease: Option<&str>,
    ) -> i64 {
        let c = self.store.pool.get().await.expect("a connection");
        c.query_one(
            "INSERT INTO deliveries (event_seq, route, destination, webhook_id, status, \
               attempts, next_attempt_at, lease_owner, last_error, history, created_at, \
               updated_at) \
             VALUES ($1, 'r', 'https://example.test/hook', 'msg_' || $1::int8, $2, 3, $3, $4, \
               'HTTP 503', '[{\"at\":5,\"status\":503,\"duration_ms\":7}]', 10, 20) \
             RETURNING id",
            &[&seq, &status, &next, &lease],
        )
        .await
        .expect("inserts a delivery")
        .get(0)
    }

    /// A route run of `seq` in `status`; returns its id.
    pub(super) async fn run(
        &self,
        seq: i64,
        status: &str,
        next: Option<i64>,
        lease: Option<&str>,
    ) -> i64 {
        let c = self.store.pool.get().await.expect("a connection");
        c.query_one(
            "INSERT INTO route_runs (event_seq, route, status, attempts, next_attempt_at, \
               lease_owner, reason, created_at, updated_at) \
             VALUES ($1, 'r', $2, 2, $3, $4, 'plugin said retry', 10, 20) RETURNING id",
            &[&seq, &status, &next, &lease],
        )
        .await
        .expect("inserts a route run")
        .get(0)
    }

    /// The query plan of `sql` when the planner must use an index wherever one serves (the
    /// tables here are tiny, and a scan of a tiny table is what the planner would choose).
    pub(super) async fn plan(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> String {
        let mut c = self.store.pool.get().await.expect("a connection");
        let tx = c.transaction().await.expect("begins");
        tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
            .await
            .expect("sets");
        let rows = tx
            .query(&format!("EXPLAIN {sql}"), params)
            .await
            .expect("explains");
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub(super) fn filter() -> EventFilter {
    EventFilter::default()
}

pub(super) fn seqs(events: &[EventSummary]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}
