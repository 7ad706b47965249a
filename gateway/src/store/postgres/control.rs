//! The replica's background duties toward the cluster: the control connection, the lease
//! renewals and keeping `event_work` small.
//!
//! The control connection is one connection per replica outside the pool. It LISTENs on the
//! work channel, so a replica's intake wakes when any replica stored an event or released
//! work (intake also polls, so a lost notification only delays), and it tries to hold the
//! cluster-jobs lock: a session advisory lock that at most one replica holds at a time. The
//! holder runs the jobs that must run once per cluster (retention, pruning, the backlog
//! gauges); when it dies or loses its connection the server drops the lock and another replica
//! takes it at its next try. It also holds this replica's share of the membership lock and
//! counts the replicas holding it, which sets how many of this replica's batch writers commit
//! at once (`membership.rs`) and how far apart its batches of routing results start
//! (`claims.rs`). The connection reconnects by itself (after a failover, to the new
//! primary).
//!
//! `event_work` takes an insert, a claim and a delete per event, so it is mostly dead rows
//! unless vacuumed often, and every claim's index scan walks the dead entries before the first
//! free row (under load: 1,150 buffers and 8 ms for a claim of 128, with 300,000 dead rows).
//! Autovacuum looks at each database only once per `autovacuum_naptime` (a minute by default)
//! whatever the table's thresholds say, so the cluster-jobs holder vacuums it itself whenever
//! the server counts [`VACUUM_AFTER_DEAD`] dead rows in it.
//!
//! This module never touches event data.

use super::claims::{Claims, WORK_CHANNEL};
use super::membership::{self, AckWriters};
use super::{PgPool, describe};
use crate::metrics::Metrics;
use crate::metrics::events::StoreReplicasCounted;
use futures::StreamExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

/// The advisory lock whose holder runs the cluster's jobs (any fixed number unused by other
/// applications on the database; not the migration lock).
const CLUSTER_JOBS_LOCK: i64 = 0x7765_6268_6f6f_6b32;
/// How often the control connection tries for the lock, or checks it is alive while holding
/// it (a dead holder's lock is free as soon as the server notices the connection is gone).
const CONTROL_TICK: Duration = Duration::from_secs(2);
/// How long to wait before reconnecting a lost control connection.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// How often the cluster-jobs holder reads `event_work`'s dead-row count (the control loop's
/// tick; the lock is tried, or checked, every [`CONTROL_TICK`]).
const VACUUM_TICK: Duration = Duration::from_millis(500);
/// Dead rows in `event_work` from which the holder vacuums it: at 20,000 events/s (two dead
/// rows each) a vacuum every quarter second, each over a table of a few thousand live rows.
pub(super) const VACUUM_AFTER_DEAD: i64 = 10_000;
/// The server's count of dead rows in `event_work` (its statistics, refreshed about once a
/// second; 0 before the first report).
const DEAD_WORK_ROWS: &str = "SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables \
     WHERE relid = 'event_work'::regclass), 0)";

/// What the control connection needs to count the replicas and share the ack commits.
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) writers: Arc<AckWriters>,
    /// Spaces its batches of routing results by the count too.
    pub(super) claims: Arc<Claims>,
    pub(super) metrics: Metrics,
}

impl Membership {
    /// Counts the replicas holding the membership lock and sets this replica's share.
    async fn count(&self, client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        let (high, low) = membership::key_halves();
        let counted: i64 = client
            .query_one(membership::COUNT, &[&high, &low])
            .await?
            .get(0);
        let replicas = usize::try_from(counted).unwrap_or(1);
        self.set(replicas, replicas);
        Ok(())
    }

    /// Without a control connection nobody is counted (the gauge says 0) and this replica
    /// commits through all its writers again: alone, that is what it needs; with others, at
    /// worst what it did before counting.
    fn uncounted(&self) {
        self.set(1, 0);
    }

    fn set(&self, replicas: usize, shown: usize) {
        self.writers.set_replicas(replicas);
        let spacing = self.claims.set_replicas(replicas);
        StoreReplicasCounted {
            metrics: &self.metrics,
            replicas: shown,
            writers: self.writers.active(),
            results_spacing: spacing,
        }
        .emit();
    }
}

/// Starts the control connection's task on the current runtime. It ends (closing its
/// connection, so the lock is free for another replica) once `alive` has no strong reference
/// left: the store was dropped.
pub(super) fn spawn_control(
    config: tokio_postgres::Config,
    signal: Arc<Notify>,
    claims: Arc<Claims>,
    leader: Arc<AtomicBool>,
    membership: Membership,
    alive: Weak<()>,
) {
    tokio::spawn(async move {
        let mut reported_down = false;
        while alive.strong_count() > 0 {
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    if reported_down {
                        tracing::info!("control connection to the store is back");
                        reported_down = false;
                    }
                    let duties = Duties {
                        signal: &signal,
                        claims: &claims,
                        leader: &leader,
                        membership: &membership,
                    };
                    serve(&client, connection, &duties, &alive).await;
                    membership.uncounted();
                    if leader.swap(false, Ordering::SeqCst) {
                        tracing::warn!(
                            "lost the control connection: this replica no longer runs the cluster's jobs"
                        );
                    }
                }
                Err(e) => {
                    if !reported_down {
                        tracing::warn!(error = %describe(&e), "cannot open the control connection to the store; retrying");
                        reported_down = true;
                    }
                }
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    });
}

/// What the control connection serves.
struct Duties<'a> {
    signal: &'a Arc<Notify>,
    claims: &'a Arc<Claims>,
    leader: &'a AtomicBool,
    membership: &'a Membership,
}

/// Listens, counts the replicas and holds (or tries for) the lock until the connection fails
/// or the store is gone.
async fn serve(
    client: &tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<
        tokio_postgres::Socket,
        tokio_postgres::tls::NoTlsStream,
    >,
    duties: &Duties<'_>,
    alive: &Weak<()>,
) {
    let Duties {
        signal,
        claims,
        leader,
        membership,
    } = *duties;
    let wake = Arc::clone(signal);
    let told = Arc::clone(claims);
    let mut messages = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    told.handoff.want_scan();
                    wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "control connection to the store ended");
                    return;
                }
            }
        }
    });
    if let Err(e) = client
        .batch_execute(&format!("LISTEN {WORK_CHANNEL}"))
        .await
    {
        tracing::warn!(error = %describe(&e), "cannot listen for new work; polling only");
        messages.abort();
        return;
    }
    if let Err(e) = client
        .execute(membership::JOIN, &[&membership::key()])
        .await
    {
        tracing::warn!(error = %describe(&e), "cannot join the store's replica count; reconnecting");
        messages.abort();
        return;
    }
    // Work announced while this replica was not listening is found now.
    claims.handoff.want_scan();
    signal.notify_one();
    let mut tick = tokio::time::interval(VACUUM_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checked_at: Option<std::time::Instant> = None;
    let mut vacuum_failing = false;
    while alive.strong_count() > 0 {
        tokio::select! {
            _ = &mut messages => return,
            _ = tick.tick() => {}
        }
        if leader.load(Ordering::SeqCst) {
            vacuum_failing = vacuum_if_due(client, vacuum_failing).await;
        }
        if checked_at.is_some_and(|at| at.elapsed() < CONTROL_TICK) {
            continue;
        }
        checked_at = Some(std::time::Instant::now());
        if membership.count(client).await.is_err() {
            break;
        }
        let healthy = if leader.load(Ordering::SeqCst) {
            client.simple_query("SELECT 1").await.is_ok()
        } else {
            match client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&CLUSTER_JOBS_LOCK])
                .await
            {
                Ok(row) => {
                    if row.get::<_, bool>(0) {
                        leader.store(true, Ordering::SeqCst);
                        tracing::info!(
                            "this replica runs the cluster's jobs (retention, pruning, backlog gauges)"
                        );
                    }
                    true
                }
                Err(_) => false,
            }
        };
        if !healthy {
            break;
        }
    }
    messages.abort();
}

/// Starts the task renewing this replica's claims every third of a lease, until the store is
/// dropped (`alive`).
pub(super) fn spawn_renewals(pool: PgPool, claims: Arc<Claims>, alive: Weak<()>) {
    let every = Duration::from_millis(u64::try_from(claims.lease_ms / 3).unwrap_or(1_000).max(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while alive.strong_count() > 0 {
            tick.tick().await;
            if let Err(e) = claims.renew(&pool, super::super::unix_ms()).await {
                tracing::warn!(error = %e, "cannot renew this replica's claims; if the store stays unreachable past the lease, other replicas take the work over");
            }
        }
    });
}

/// Vacuums `event_work` if the server counts enough dead rows in it, on the control
/// connection (the pool's connections are the ack path's). Without truncating: the free pages
/// at the table's end are where the next inserts go, and truncating takes a lock that stops
/// every claim and ingest on the table while the vacuum waits for it (a vacuum then took 1.8 s
/// of which 0.03 s was work). Returns whether it failed, logging only the first failure of a
/// streak (the control connection's own loss is logged by its task).
async fn vacuum_if_due(client: &tokio_postgres::Client, failing: bool) -> bool {
    let result = async {
        let dead: i64 = client.query_one(DEAD_WORK_ROWS, &[]).await?.get(0);
        if dead >= VACUUM_AFTER_DEAD {
            client
                .batch_execute("VACUUM (TRUNCATE false) event_work")
                .await?;
        }
        Ok::<(), tokio_postgres::Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            if failing {
                tracing::info!("vacuuming the work table works again");
            }
            false
        }
        Err(e) => {
            if !failing {
                tracing::warn!(error = %describe(&e), "cannot vacuum the work table; claims slow down as it fills with dead rows");
            }
            true
        }
    }
}
