//! PostgreSQL: what the admin API and retention change after the ack. A replay marks routed
//! events and gives each a work row; a redrive sends dead letters (or route runs waiting for
//! a retry) back to work; retention deletes finished events. Each commits on its own and,
//! when it made work, wakes every replica's workers (`NOTIFY gateway_work` in the same
//! transaction, so the wake-up is delivered exactly when the work is visible).
//!
//! Several replicas may run these at once, and workers claim rows meanwhile: every change is
//! guarded by the row's state in the statement that makes it (re-checked under the row lock),
//! never by what an earlier read saw. This module never claims work and never routes.

use super::super::event_filter::{Dialect, newest_seqs};
use super::super::work::{EventFilter, RedriveSelection};
use super::super::{ExpiredEvents, unix_ms};
use super::admin::bound;
use super::{PgStore, PooledClient, StoreError};
use deadpool_postgres::Transaction;

/// The channel every replica's workers listen on for new work.
pub(super) const WORK_CHANNEL: &str = "gateway_work";

/// Dead letters one bulk redrive transaction sends back: each step is short, so its row
/// locks and its WAL burst (which standbys replay) stay small, and a failure mid-way keeps
/// the steps already committed.
const REDRIVE_STEP: i64 = 1_000;

/// A redriven delivery or route run starts a fresh set of attempts, due now, claimed by no
/// one; its history keeps the old ones.
const REDRIVE_DELIVERIES: &str = "UPDATE deliveries SET status = 'pending', attempts = 0, \
     next_attempt_at = $1, updated_at = $1, lease_owner = NULL WHERE status = 'dead'";
const REDRIVE_RUNS: &str = "UPDATE route_runs SET status = 'retry', attempts = 0, \
     next_attempt_at = $1, updated_at = $1, lease_owner = NULL WHERE status = 'dead'";

/// Route runs waiting for a retry, made due now (attempt counts stay). A run whose due time
/// lies ahead while a replica's id is on it is being tried right now: its claim moved the due
/// time one lease ahead. Making it due would let another replica claim it too and run its
/// plugins (and first delivery) twice, so it is left to the attempt under way, which is what
/// "due now" asks for anyway. This relies on a replica clearing `lease_owner` when it writes
/// a run's result; a run whose lease ran out is due already and is not counted.
const REDRIVE_WAITING_RUNS: &str = "UPDATE route_runs SET next_attempt_at = $1, updated_at = $1 \
     WHERE status = 'retry' AND next_attempt_at > $1 AND lease_owner IS NULL";

/// Which dead letters a bulk redrive walks, by id through their partial index.
#[derive(Debug, Clone, Copy)]
enum DeadLetters {
    Deliveries,
    RouteRuns,
}

impl DeadLetters {
    /// One step: the next [`REDRIVE_STEP`] dead ones after id `$2`, redriven; returns the
    /// last id looked at, how many were looked at and how many were redriven (another
    /// replica's redrive may have taken some meanwhile).
    fn step_sql(self) -> String {
        let (table, update) = match self {
            Self::Deliveries => ("deliveries", REDRIVE_DELIVERIES),
            Self::RouteRuns => ("route_runs", REDRIVE_RUNS),
        };
        format!(
            "WITH step AS (SELECT id FROM {table} WHERE status = 'dead' AND id > $2 \
                           ORDER BY id LIMIT $3), \
                  redriven AS ({update} AND id IN (SELECT id FROM step) RETURNING 1) \
             SELECT (SELECT max(id) FROM step), (SELECT count(*) FROM step), \
                    (SELECT count(*) FROM redriven)"
        )
    }
}

impl PgStore {
    /// Marks the selected routed events for replay through the current routes and queues
    /// them (a work row each), in one transaction. Events not routed yet, or marked already,
    /// are on their way and left alone; so is an event whose mark another replica's request
    /// set first. Returns how many were marked.
    pub(super) async fn request_replay(
        &self,
        filter: EventFilter,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let lookups = self.lookups(&filter).await?;
        let (seqs, args) = newest_seqs(&filter, &lookups, Dialect::Postgres, true, limit);
        // The outer `status <> 'replay'` is checked again under the row lock: of two requests
        // racing for one event, the second marks nothing.
        let sql = &format!(
            "WITH marked AS ( \
                 UPDATE routings SET status = 'replay' \
                  WHERE seq IN ({seqs}) \
                    AND status <> 'replay' \
                 RETURNING seq), \
             queued AS ( \
                 INSERT INTO event_work (seq, replay) SELECT seq, true FROM marked \
                 ON CONFLICT (seq) DO UPDATE SET replay = true) \
             SELECT count(*) FROM marked"
        );
        let args = &args;
        self.write(|mut c| {
            Box::pin(async move {
                let r = async {
                    let tx = c.transaction().await?;
                    let marked: i64 = tx.query_one(sql.as_str(), &bound(args)).await?.get(0);
                    finish(tx, marked).await
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    /// Sends dead letters back to work (deliveries a fresh set of attempts now, route runs a
    /// fresh plugin retry), or makes the route runs waiting for a retry due now. Returns how
    /// many rows changed.
    pub(super) async fn redrive(&self, selection: RedriveSelection) -> Result<u64, StoreError> {
        let (listed, ids) = match &selection {
            RedriveSelection::Deliveries(ids) => (REDRIVE_DELIVERIES, ids),
            RedriveSelection::RouteRuns(ids) => (REDRIVE_RUNS, ids),
            RedriveSelection::WaitingRouteRuns => return self.redrive_waiting().await,
            RedriveSelection::All => {
                let deliveries = self.redrive_all(DeadLetters::Deliveries).await?;
                return Ok(deliveries + self.redrive_all(DeadLetters::RouteRuns).await?);
            }
        };
        let sql = &format!("{listed} AND id = ANY($2)");
        let now = unix_ms();
        self.write(|mut c| {
            Box::pin(async move {
                let r = async {
                    let tx = c.transaction().await?;
                    let n = tx.execute(sql.as_str(), &[&now, ids]).await?;
                    finish(tx, i64::try_from(n).unwrap_or(i64::MAX)).await
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    async fn redrive_waiting(&self) -> Result<u64, StoreError> {
        let now = unix_ms();
        self.write(|mut c| {
            Box::pin(async move {
                let r = async {
                    let tx = c.transaction().await?;
                    let n = tx.execute(REDRIVE_WAITING_RUNS, &[&now]).await?;
                    finish(tx, i64::try_from(n).unwrap_or(i64::MAX)).await
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    /// Every dead letter of one kind, in steps of [`REDRIVE_STEP`] by id. The rows a step has
    /// passed are not looked at again, so one that dies again meanwhile waits for the next
    /// redrive.
    async fn redrive_all(&self, kind: DeadLetters) -> Result<u64, StoreError> {
        let sql = &kind.step_sql();
        let now = unix_ms();
        let (mut after, mut count) = (0_i64, 0);
        loop {
            let (last, looked, redriven) = self
                .write(|mut c| {
                    Box::pin(async move {
                        let r = async {
                            let tx = c.transaction().await?;
                            let row = tx
                                .query_one(sql.as_str(), &[&now, &after, &REDRIVE_STEP])
                                .await?;
                            let (last, looked): (Option<i64>, i64) = (row.get(0), row.get(1));
                            let redriven = finish(tx, row.get(2)).await?;
                            Ok((last, looked, redriven))
                        }
                        .await;
                        (c, r)
                    })
                })
                .await?;
            count += redriven;
            match last {
                Some(id) if looked >= REDRIVE_STEP => after = id,
                _ => return Ok(count),
            }
        }
    }

    /// One step of a retention pass: deletes the finished events received before `cutoff_ms`
    /// among the next `limit` events after `after_seq` (in seq order), with their routing
    /// records. Finished: routed, unrouted or dropped, every delivery delivered (or dropped as
    /// stale or skipped), every plugin stage done, no work row (not being routed or replayed).
    /// The newest event is never deleted (as on SQLite, where seqs would otherwise be reused).
    pub(super) async fn expire_events(
        &self,
        cutoff_ms: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<ExpiredEvents, StoreError> {
        let limit = i64::from(limit);
        self.write(|mut c| {
            Box::pin(async move {
                let r = expire_step(&mut c, cutoff_ms, after_seq, limit).await;
                (c, r)
            })
        })
        .await
    }
}

/// Wakes the workers when `changed` rows made work, and commits. Returns `changed`.
async fn finish(tx: Transaction<'_>, changed: i64) -> Result<u64, tokio_postgres::Error> {
    if changed > 0 {
        tx.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
            .await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

/// The candidates' finished ones, locked (`FOR UPDATE` of their routing) and deleted with
/// everything that refers to them. The lock and the checks in one statement: a replay
/// request racing with this one either marks the routing first (then it is not `routed`
/// any more when checked again under the lock, and the event stays) or finds it gone.
const DELETE_FINISHED: &str = "\
WITH doomed AS ( \
    SELECT r.seq FROM routings r \
     WHERE r.seq = ANY($1) AND r.status IN ('routed', 'unrouted', 'dropped') \
       AND NOT EXISTS (SELECT 1 FROM deliveries d \
                        WHERE d.event_seq = r.seq AND d.status NOT IN ('delivered', 'dropped')) \
       AND NOT EXISTS (SELECT 1 FROM route_runs u WHERE u.event_seq = r.seq AND u.status <> 'done') \
       AND NOT EXISTS (SELECT 1 FROM event_work w WHERE w.seq = r.seq) \
     ORDER BY r.seq FOR UPDATE OF r), \
 deliveries_gone AS (DELETE FROM deliveries WHERE event_seq IN (SELECT seq FROM doomed)), \
 runs_gone AS (DELETE FROM route_runs WHERE event_seq IN (SELECT seq FROM doomed)), \
 routings_gone AS (DELETE FROM routings WHERE seq IN (SELECT seq FROM doomed)) \
DELETE FROM events WHERE seq IN (SELECT seq FROM doomed)";

/// The search's rows of hashes (subjects: migration 8, dedup keys: 9) over this step's seqs
/// whose events are all gone now (one that keeps a dead letter's event stays, and is looked at
/// again by the next pass).
const DELETE_HASH_ROWS: [&str; 2] = [
    "DELETE FROM event_subjects s WHERE s.last_seq >= $1 AND s.first_seq <= $2 \
        AND NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = ANY (s.seqs))",
    "DELETE FROM event_ids s WHERE s.last_seq >= $1 AND s.first_seq <= $2 \
        AND NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = ANY (s.seqs))",
];

async fn expire_step(
    c: &mut PooledClient,
    cutoff_ms: i64,
    after_seq: i64,
    limit: i64,
) -> Result<ExpiredEvents, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    let rows = tx
        .query(
            "SELECT seq, received_at FROM events \
             WHERE seq > $1 AND seq < (SELECT max(seq) FROM events) ORDER BY seq LIMIT $2",
            &[&after_seq, &limit],
        )
        .await?;
    let mut candidates: Vec<i64> = Vec::new();
    let mut reached_young = false;
    for row in &rows {
        let (seq, received_at): (i64, i64) = (row.get(0), row.get(1));
        // Rows are in arrival order, so the first one inside the retention ends the pass.
        if received_at >= cutoff_ms {
            reached_young = true;
            break;
        }
        candidates.push(seq);
    }
    let deleted = match (candidates.first(), candidates.last()) {
        (Some(first), Some(last)) => {
            let deleted = tx.execute(DELETE_FINISHED, &[&candidates]).await?;
            for rows in DELETE_HASH_ROWS {
                tx.execute(rows, &[first, last]).await?;
            }
            deleted
        }
        _ => 0,
    };
    tx.commit().await?;
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit;
    Ok(ExpiredEvents {
        deleted,
        resume_after: candidates
            .last()
            .copied()
            .filter(|_| full && !reached_young),
    })
}
