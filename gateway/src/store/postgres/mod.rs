//! The PostgreSQL store, for several gateway replicas on one database: a connection pool,
//! versioned migrations (`migrations`), the ack path with group commit (`ingest`), the admin
//! API's reads and the backlog gauges (`admin`), and the admin actions and event retention
//! (`actions`).
//!
//! Every promise of the SQLite store holds per cluster here: an ingest is answered after its
//! transaction committed with `synchronous_commit = on` (forced on every connection, whatever
//! the server's default), and "stored once" is a unique index, not a check in memory. A
//! connection that fails (server gone, or read-only after a failover: SQLSTATE 25006) is taken
//! out of the pool, so the next write gets a fresh one, on whichever host now takes writes
//! (`target_session_attrs=read-write`); nothing needs a restart when the database is back.
//!
//! This module never sees HTTP or provider formats, and never logs a connection string (it
//! may hold a password).

mod actions;
mod admin;
mod attempts;
mod claims;
mod combine;
mod control;
mod copy;
mod handoff;
mod ingest;
mod membership;
mod migrations;
mod ordering;
mod pool_watch;
mod results;

use super::dead_letters::{DeadFilter, DeadLetterGroup};
use super::work::{
    AttemptDone, AuditRecord, Backlog, BlockedSubject, ClaimedEvent, DeliveryView, DueDelivery,
    DueRouteRun, EventDetail, EventFilter, EventSummary, Processed, QuarantineEntry,
    RedriveSelection, RouteRunView, StoredSpan,
};
use super::{
    DedupPruneStep, ExpiredEvents, IngestOutcome, Intake, NewEvent, QuarantinedBody, Store,
    StoreError,
};
use crate::metrics::Metrics;
use crate::metrics::events::{ClaimsLost, StoreBatchCommitted};
pub use copy::{CopyError, CopySummary, copy_from_sqlite};
use ingest::IngestRequest;
pub use migrations::{SchemaStatus, latest as latest_schema_version};
use sha2::{Digest as _, Sha256};
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

pub(super) type PgPool = deadpool_postgres::Pool;

/// Rows one step of a pruning pass deletes: small enough that the step is a few milliseconds
/// and holds no lock an ingest would wait for long.
const PRUNE_ROWS: i64 = 2_000;

/// How the store connects and batches.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections at most, all uses together.
    pub pool_size: usize,
    /// Batches being written at once by the whole cluster (each holds a connection while it
    /// commits): every replica commits through its share of them (see `membership.rs`).
    pub writers: usize,
    /// How soon after one of its batches started a writer may start the next (see
    /// `ingest.rs`).
    pub ack_spacing: Duration,
    /// Connecting, and waiting for a free pooled connection, give up after this.
    pub connect_timeout: Duration,
    /// The server cancels any one statement running longer (`-c statement_timeout` on every
    /// connection), so a stuck query cannot hold a pooled connection for good.
    pub statement_timeout: Duration,
    /// How long a replica's claim on work lasts without renewal.
    pub lease: Duration,
    /// Stored events ingest hands to this replica's intake directly, at most (see
    /// `handoff.rs`; 0: every event is claimed through the table).
    pub handoff: usize,
    /// Events this replica routes at once (`[workers] concurrency`): each holds a slot until
    /// its result is written, so a batch of results starts without its spacing once it holds
    /// half of them (see `claims.rs`). 256 by default, as `[workers] concurrency`.
    pub routing_slots: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            writers: 2,
            ack_spacing: Duration::from_millis(2),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            handoff: handoff::DEFAULT_CAPACITY,
            routing_slots: 256,
        }
    }
}

impl From<&crate::config::PostgresSettings> for PgOptions {
    fn from(settings: &crate::config::PostgresSettings) -> Self {
        Self {
            pool_size: settings.pool_size,
            writers: settings.ack_writers,
            ack_spacing: settings.ack_spacing,
            connect_timeout: settings.connect_timeout,
            statement_timeout: settings.statement_timeout,
            lease: settings.lease,
            ..Self::default()
        }
    }
}

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    ingest: mpsc::Sender<IngestRequest>,
    claims: Arc<claims::Claims>,
    /// Woken by the control connection when a replica announced work.
    work: Arc<Notify>,
    /// Whether this replica holds the cluster-jobs lock now.
    leader: Arc<AtomicBool>,
    metrics: Metrics,
    /// The background tasks (control connection, lease renewals) run while a clone of this
    /// store exists; they hold it weakly.
    _alive: Arc<()>,
}

/// A database error with what the server said (`tokio_postgres::Error`'s own text is often
/// just "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Where a connection string points, without its password: for errors and logs.
fn where_to(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "postgres {} database {}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)")
    )
}

/// Where a connection string points (hosts and database), without its password: what the
/// one-shot commands print. `None` when it does not parse.
pub fn target_of(conninfo: &str) -> Option<String> {
    tokio_postgres::Config::from_str(conninfo)
        .ok()
        .map(|c| where_to(&c))
}

/// Parses a connection string (URL or key/value, several hosts allowed) and adds what every
/// gateway connection must have.
fn connection_config(
    conninfo: &str,
    options: &PgOptions,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(conninfo).map_err(|e| StoreError::Open {
        path: "postgres (connection string)".into(),
        source: Box::new(e),
    })?;
    // An ack must wait for the WAL flush even where the server's default says otherwise.
    let ours = format!(
        "-c synchronous_commit=on -c statement_timeout={}",
        options.statement_timeout.as_millis().max(1)
    );
    let options_line = match config.get_options() {
        Some(existing) => format!("{existing} {ours}"),
        None => ours,
    };
    config.options(&options_line);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("webhook-gateway");
    }
    Ok(config)
}

impl PgStore {
    /// Connects, brings the schema to this version (waiting while another replica does), and
    /// starts the batch writers on the current runtime.
    pub async fn connect(
        conninfo: &str,
        options: &PgOptions,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        let config = connection_config(conninfo, options)?;
        let place = where_to(&config);
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(options.writers + 2))
            // The connection returned last is handed out next: the few that the load needs
            // stay hot (their server processes' caches, their prepared statements), the rest
            // idle. FIFO rotated every request through all of them.
            .queue_mode(deadpool_postgres::QueueMode::Lifo)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Open {
                path: place.clone(),
                source: Box::new(e),
            })?;
        let mut client = pool.get().await.map_err(|e| StoreError::Open {
            path: place.clone(),
            source: Box::new(e),
        })?;
        let applied = migrations::migrate(&mut client)
            .await
            .map_err(|e| StoreError::Schema(e.to_string()))?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "store schema migrated");
        }
        drop(client);
        pool_watch::spawn(&pool, metrics.clone(), place);
        let work = Arc::new(Notify::new());
        let announcer = Arc::new(ingest::Announcer::new(Arc::clone(&work)));
        let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX);
        let claims = Arc::new(claims::Claims::new(
            lease_ms.max(1),
            options.handoff,
            options.routing_slots,
        ));
        let writers = membership::AckWriters::new(options.writers);
        let ingest = ingest::spawn_writers(
            pool.clone(),
            metrics.clone(),
            Arc::clone(&writers),
            options.ack_spacing,
            announcer,
            Arc::clone(&claims),
        );
        let leader = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(());
        control::spawn_control(
            config,
            Arc::clone(&work),
            Arc::clone(&claims),
            Arc::clone(&leader),
            control::Membership {
                writers,
                claims: Arc::clone(&claims),
                metrics: metrics.clone(),
            },
            Arc::downgrade(&alive),
        );
        control::spawn_renewals(pool.clone(), Arc::clone(&claims), Arc::downgrade(&alive));
        Ok(Self {
            pool,
            ingest,
            claims,
            work,
            leader,
            metrics,
            _alive: alive,
        })
    }

    /// Migrates without starting anything (`gateway migrate`). Returns the versions applied.
    pub async fn migrate_only(conninfo: &str, timeout: Duration) -> Result<Vec<i32>, StoreError> {
        let (mut client, place) = connect_once(conninfo, timeout).await?;
        migrations::migrate(&mut client)
            .await
            .map_err(|e| StoreError::Schema(format!("{place}: {e}")))
    }

    /// Where the database's schema stands, changing nothing (`gateway check`).
    pub async fn schema_status(
        conninfo: &str,
        timeout: Duration,
    ) -> Result<SchemaStatus, StoreError> {
        let (client, place) = connect_once(conninfo, timeout).await?;
        migrations::status(&client)
            .await
            .map_err(|e| StoreError::Schema(format!("{place}: {e}")))
    }
}

/// One connection outside any pool, for the one-shot commands.
async fn connect_once(
    conninfo: &str,
    timeout: Duration,
) -> Result<(tokio_postgres::Client, String), StoreError> {
    let options = PgOptions {
        connect_timeout: timeout,
        ..PgOptions::default()
    };
    let config = connection_config(conninfo, &options)?;
    let place = where_to(&config);
    let (client, connection) =
        config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| StoreError::Open {
                path: place.clone(),
                source: Box::new(e),
            })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "store connection ended");
        }
    });
    Ok((client, place))
}

/// Whether an error means the connection must not be used again: it is closed, or it is to a
/// server that no longer takes writes (a demoted primary answers 25006 read_only_sql_transaction).
fn connection_is_spent(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
        || e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN)
        || e.code() == Some(&tokio_postgres::error::SqlState::CRASH_SHUTDOWN)
}

/// Whether running the same transaction again may succeed: it lost a deadlock or a
/// serialization conflict to another replica's.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
        || e.code() == Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
}

pub(super) type PooledClient = deadpool_postgres::Client;

/// One try of some work on a pooled connection: the connection comes back with the result, so
/// the retry loop can drop it from the pool when it is spent. (A boxed future rather than an
/// async closure: the futures of async closures that borrow their argument cannot be shown to
/// be `Send` yet, and these run on the multi-threaded runtime.)
pub(super) type Attempt<'a, T> =
    futures::future::BoxFuture<'a, (PooledClient, Result<T, tokio_postgres::Error>)>;

/// Why a store call failed, for the caller's 503 and the logs.
#[derive(Debug, thiserror::Error)]
pub(super) enum PgFailure {
    #[error("no database connection: {0}")]
    Pool(String),
    #[error("database: {0}")]
    Query(String),
}

impl From<PgFailure> for StoreError {
    fn from(e: PgFailure) -> Self {
        StoreError::Write(e.to_string())
    }
}

/// Runs `work` on a pooled connection. A spent connection is dropped from the pool and the
/// work tried once more on a fresh one (after a failover the fresh one reaches the new
/// primary); a conflict with another replica's transaction is tried again up to three times.
/// The work must be safe to run twice: every write here is insert-if-absent or idempotent,
/// which is also what makes an ack whose commit outcome was lost safe to retry.
pub(super) async fn with_retries<'a, T>(
    pool: &PgPool,
    mut work: impl FnMut(PooledClient) -> Attempt<'a, T>,
) -> Result<T, PgFailure> {
    let mut fresh_tries = 1;
    let mut conflict_tries = 3;
    loop {
        let client = pool
            .get()
            .await
            .map_err(|e| PgFailure::Pool(e.to_string()))?;
        let (client, result) = work(client).await;
        match result {
            Ok(value) => return Ok(value),
            Err(e) if connection_is_spent(&e) => {
                drop(deadpool_postgres::Object::take(client));
                if fresh_tries == 0 {
                    return Err(PgFailure::Query(describe(&e)));
                }
                fresh_tries -= 1;
            }
            Err(e) if is_conflict(&e) && conflict_tries > 0 => conflict_tries -= 1,
            Err(e) => return Err(PgFailure::Query(describe(&e))),
        }
    }
}

impl PgStore {
    async fn write<'a, T>(
        &self,
        work: impl FnMut(PooledClient) -> Attempt<'a, T>,
    ) -> Result<T, StoreError> {
        Ok(with_retries(&self.pool, work).await?)
    }

    /// [`Self::write`] for work that only reads: its failure is a read error.
    async fn read<'a, T>(
        &self,
        work: impl FnMut(PooledClient) -> Attempt<'a, T>,
    ) -> Result<T, StoreError> {
        with_retries(&self.pool, work)
            .await
            .map_err(|e| StoreError::Read(e.to_string()))
    }
}

/// Deletes up to [`PRUNE_ROWS`] rows of `table` matching `condition` (with `$1`), oldest
/// first by `column`; the step is the whole pass when fewer matched.
async fn prune_step(
    store: &PgStore,
    sql: &'static str,
    bound: i64,
) -> Result<DedupPruneStep, StoreError> {
    let deleted = store
        .write(|c| {
            Box::pin(async move {
                let r = c.execute(sql, &[&bound, &PRUNE_ROWS]).await;
                (c, r)
            })
        })
        .await?;
    Ok(DedupPruneStep {
        forgotten: deleted,
        done: deleted < u64::try_from(PRUNE_ROWS).unwrap_or(u64::MAX),
    })
}

const PRUNE_DEDUP: &str = "DELETE FROM dedup_keys WHERE (source, dedup_key) IN \
     (SELECT source, dedup_key FROM dedup_keys WHERE seen < $1 ORDER BY seen LIMIT $2)";
const PRUNE_STATES: &str = "DELETE FROM object_states WHERE (source, object) IN \
     (SELECT source, object FROM object_states WHERE expires <= $1 ORDER BY expires LIMIT $2)";
const QUARANTINE: &str = "INSERT INTO quarantine \
     (source, reason, raw_body, headers, received_at, body_hash, last_seen_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $5) \
     ON CONFLICT (source, body_hash) DO UPDATE \
        SET repeats = quarantine.repeats + 1, \
            last_seen_at = greatest(quarantine.last_seen_at, excluded.last_seen_at)";
const PROBE: &str = "INSERT INTO meta (key, value) VALUES ('probe', $1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

#[async_trait::async_trait]
impl Intake for PgStore {
    async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ingest
            .send(IngestRequest { event, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn quarantine(&self, body: QuarantinedBody) -> Result<(), StoreError> {
        let digest: &[u8] = &Sha256::digest(&body.raw_body);
        let (body, raw): (&QuarantinedBody, &[u8]) = (&body, &body.raw_body);
        self.write(|c| {
            Box::pin(async move {
                let r = c
                    .execute(
                        QUARANTINE,
                        &[
                            &body.source,
                            &body.reason,
                            &raw,
                            &body.headers,
                            &body.received_at_ms,
                            &digest,
                        ],
                    )
                    .await;
                (c, r)
            })
        })
        .await
        .map(drop)
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let now = &super::unix_ms().to_string();
        self.write(|c| {
            Box::pin(async move {
                let r = c.execute(PROBE, &[now]).await;
                (c, r)
            })
        })
        .await
        .map(drop)
    }

    async fn prune_dedup(&self, cutoff_ms: i64) -> Result<DedupPruneStep, StoreError> {
        prune_step(self, PRUNE_DEDUP, cutoff_ms).await
    }

    async fn prune_object_states(&self, now_ms: i64) -> Result<DedupPruneStep, StoreError> {
        prune_step(self, PRUNE_STATES, now_ms).await
    }

    async fn expire_quarantine(
        &self,
        cutoff_ms: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<ExpiredEvents, StoreError> {
        let limit = i64::from(limit);
        self.write(|mut c| {
            Box::pin(async move {
                let r = expire_quarantine_step(&mut c, cutoff_ms, after_id, limit).await;
                (c, r)
            })
        })
        .await
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn expire_events(
        &self,
        cutoff_ms: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<ExpiredEvents, StoreError> {
        PgStore::expire_events(self, cutoff_ms, after_seq, limit).await
    }

    fn work_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.work)
    }

    async fn claim_events(&self, limit: u32) -> Result<Vec<ClaimedEvent>, StoreError> {
        self.claims
            .claim_events(&self.pool, super::unix_ms(), limit)
            .await
    }

    async fn complete(&self, processed: Arc<Vec<Processed>>) -> Result<(), StoreError> {
        let lost = self
            .claims
            .complete(&self.pool, &processed, super::unix_ms())
            .await?;
        if lost > 0 {
            ClaimsLost {
                metrics: &self.metrics,
                kind: "event",
                count: lost,
            }
            .emit();
        }
        Ok(())
    }

    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.claims
            .claim_due_deliveries(&self.pool, now_ms, limit)
            .await
    }

    async fn record_attempt(&self, done: AttemptDone) -> Result<(), StoreError> {
        let written = self
            .claims
            .record_attempt(&self.pool, &done, super::unix_ms())
            .await?;
        if !written {
            ClaimsLost {
                metrics: &self.metrics,
                kind: "delivery",
                count: 1,
            }
            .emit();
        }
        Ok(())
    }

    async fn claim_due_route_runs(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRouteRun>, StoreError> {
        self.claims
            .claim_due_route_runs(&self.pool, now_ms, limit)
            .await
    }

    async fn release_claims(&self) -> Result<(), StoreError> {
        self.claims.release(&self.pool, super::unix_ms()).await
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        PgStore::backlog(self).await
    }

    fn runs_cluster_jobs(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn list_events(
        &self,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<EventSummary>, StoreError> {
        PgStore::list_events(self, filter, limit).await
    }

    async fn event(&self, seq: i64) -> Result<Option<EventDetail>, StoreError> {
        PgStore::event(self, seq).await
    }

    async fn stored_span(&self) -> Result<Option<StoredSpan>, StoreError> {
        PgStore::stored_span(self).await
    }

    async fn list_quarantine(
        &self,
        source: Option<String>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        PgStore::list_quarantine(self, source, before, limit).await
    }

    async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<(Vec<DeliveryView>, Vec<RouteRunView>), StoreError> {
        PgStore::dead_letters(self, limit).await
    }

    async fn dead_letter_groups(&self) -> Result<Vec<DeadLetterGroup>, StoreError> {
        PgStore::dead_letter_groups(self).await
    }

    async fn count_dead(&self, filter: DeadFilter) -> Result<(u64, Option<i64>), StoreError> {
        PgStore::count_dead(self, filter).await
    }

    async fn dead_page(
        &self,
        filter: DeadFilter,
        after: i64,
        through: i64,
        limit: u32,
    ) -> Result<Vec<i64>, StoreError> {
        PgStore::dead_page(self, filter, after, through, limit).await
    }

    async fn request_replay(&self, filter: EventFilter, limit: u32) -> Result<u64, StoreError> {
        let marked = PgStore::request_replay(self, filter, limit).await?;
        // The marked rows are claimable now; this replica's intake need not wait to hear its
        // own announcement come back.
        self.claims.handoff.want_scan();
        Ok(marked)
    }

    async fn redrive(&self, selection: RedriveSelection) -> Result<u64, StoreError> {
        PgStore::redrive(self, selection).await
    }

    async fn count_replay(&self, filter: EventFilter, limit: u32) -> Result<u64, StoreError> {
        PgStore::count_replay(self, filter, limit).await
    }

    async fn record_audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        PgStore::record_audit(self, record).await
    }

    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        PgStore::list_audit(self, before, limit).await
    }

    async fn blocked_subjects(&self, limit: u32) -> Result<Vec<BlockedSubject>, StoreError> {
        self.read(|c| {
            Box::pin(async move {
                let r = ordering::blocked_subjects(&c, limit).await;
                (c, r)
            })
        })
        .await
    }

    async fn skip_blocking(&self, delivery_id: i64) -> Result<u64, StoreError> {
        let now = super::unix_ms();
        self.write(|c| {
            Box::pin(async move {
                let r = ordering::skip_blocking(&c, delivery_id, now).await;
                (c, r)
            })
        })
        .await
    }
}

/// One step of a quarantine retention pass, in one transaction (see the trait).
async fn expire_quarantine_step(
    c: &mut PooledClient,
    cutoff_ms: i64,
    after_id: i64,
    limit: i64,
) -> Result<ExpiredEvents, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    let rows = tx
        .query(
            "SELECT id, received_at, last_seen_at FROM quarantine \
                     WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after_id, &limit],
        )
        .await?;
    let mut expired = ExpiredEvents {
        deleted: 0,
        resume_after: None,
    };
    let mut doomed: Vec<i64> = Vec::new();
    let mut reached_young = false;
    for row in &rows {
        let (id, received_at, seen_at): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if received_at >= cutoff_ms {
            reached_young = true;
            break;
        }
        expired.resume_after = Some(id);
        if seen_at < cutoff_ms {
            doomed.push(id);
        }
    }
    if !doomed.is_empty() {
        expired.deleted = tx
            .execute("DELETE FROM quarantine WHERE id = ANY($1)", &[&doomed])
            .await?;
    }
    tx.commit().await?;
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit;
    if reached_young || !full {
        expired.resume_after = None;
    }
    Ok(expired)
}

/// What a batch writer reports once its transaction ended.
fn batch_done(metrics: &Metrics, size: usize, elapsed: Duration, error: Option<&str>) {
    StoreBatchCommitted {
        metrics,
        size,
        elapsed,
        error,
    }
    .emit();
}

#[cfg(test)]
impl PgStore {
    /// A setting as this store's own connections see it.
    async fn session_setting(&self, name: &str) -> String {
        let client = self.pool.get().await.expect("a connection");
        client
            .query_one("SELECT current_setting($1)", &[&name])
            .await
            .expect("reads")
            .get(0)
    }
}

#[cfg(test)]
mod actions_tests;
#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod claims_tests;
#[cfg(test)]
mod ordering_tests;
#[cfg(test)]
mod test_db;
#[cfg(test)]
mod tests;
