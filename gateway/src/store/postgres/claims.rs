//! Claims on PostgreSQL: how the replicas share the work after the ack without two live ones
//! ever doing the same piece. A replica claims rows (`event_work`, due `deliveries`, due
//! `route_runs`) with `FOR UPDATE SKIP LOCKED`, writing its id into `lease_owner` and moving
//! the row's due time one lease ahead; a renewal task moves it on while the replica works. If
//! the replica dies the row becomes due again when the lease runs out and another replica
//! claims it. A result is written only where the claim is still this replica's (the work row
//! deleted, or the delivery / route run updated, `WHERE lease_owner = me`), so a replica that
//! lost its lease writes nothing and the other one's result stands.
//!
//! The rows this replica holds are also kept in memory: renewals touch only them (a claim
//! whose answer was lost in a broken connection is never renewed, so it runs out), and a row
//! held here is never claimed again by this replica while its work runs.
//!
//! This module never decides what routing does; it only hands out work and records results.

use super::super::work::{
    AttemptDone, ClaimedEvent, DeliveryState, DueDelivery, DueRouteRun, Processed, RouteRunState,
    StoredEvent,
};
use super::{PgPool, PooledClient, StoreError, with_retries};
use std::collections::HashSet;
use std::sync::Mutex;
use tokio_postgres::Transaction;

/// The channel replicas announce new work on.
pub(super) const WORK_CHANNEL: &str = "gateway_work";

/// What this replica holds, by kind.
#[derive(Debug, Default)]
struct Held {
    events: HashSet<i64>,
    deliveries: HashSet<i64>,
    route_runs: HashSet<i64>,
}

/// This replica's claims.
#[derive(Debug)]
pub(super) struct Claims {
    /// This replica's id in `lease_owner`: host, pid and a random part (a restarted process
    /// with the same pid is someone else).
    pub(super) owner: String,
    /// How long a claim lasts without renewal (ms).
    pub(super) lease_ms: i64,
    held: Mutex<Held>,
}

const CLAIM_EVENTS: &str = "\
WITH picked AS ( \
    SELECT seq FROM event_work \
     WHERE available_at <= $1 AND NOT (seq = ANY($5)) \
     ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED \
), claimed AS ( \
    UPDATE event_work w SET lease_owner = $3, available_at = $4 \
      FROM picked WHERE w.seq = picked.seq \
    RETURNING w.seq, w.replay \
) \
SELECT c.seq, c.replay, e.dedup_key, e.source, e.event_type, e.envelope \
  FROM claimed c JOIN stored_events e ON e.seq = c.seq ORDER BY c.seq";

const CLAIM_DELIVERIES: &str = "\
WITH picked AS ( \
    SELECT id FROM deliveries \
     WHERE status = 'pending' AND next_attempt_at <= $1 AND NOT (id = ANY($5)) \
     ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED \
), claimed AS ( \
    UPDATE deliveries d SET lease_owner = $3, next_attempt_at = $4 \
      FROM picked WHERE d.id = picked.id \
    RETURNING d.id, d.event_seq, d.route, d.destination, d.webhook_id, d.envelope, d.attempts \
) \
SELECT c.id, c.event_seq, c.route, c.destination, c.webhook_id, \
       coalesce(c.envelope, e.envelope), c.attempts \
  FROM claimed c JOIN stored_events e ON e.seq = c.event_seq ORDER BY c.id";

const CLAIM_ROUTE_RUNS: &str = "\
WITH picked AS ( \
    SELECT id FROM route_runs \
     WHERE status = 'retry' AND next_attempt_at <= $1 AND NOT (id = ANY($5)) \
     ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED \
), claimed AS ( \
    UPDATE route_runs r SET lease_owner = $3, next_attempt_at = $4 \
      FROM picked WHERE r.id = picked.id \
    RETURNING r.id, r.route, r.attempts, r.event_seq \
) \
SELECT c.id, c.route, c.attempts, e.seq, e.dedup_key, e.source, e.event_type, e.envelope \
  FROM claimed c JOIN stored_events e ON e.seq = c.event_seq ORDER BY c.id";

/// Ends the claims on routed events: only the rows still this replica's come back.
const FINISH_EVENTS: &str =
    "DELETE FROM event_work WHERE seq = ANY($1) AND lease_owner = $2 RETURNING seq";
const HOLDS_ROUTE_RUNS: &str = "SELECT id FROM route_runs \
     WHERE id = ANY($1) AND lease_owner = $2 AND status = 'retry' FOR UPDATE";

const INSERT_DELIVERIES: &str = "\
INSERT INTO deliveries (event_seq, route, destination, webhook_id, envelope, status, attempts, \
                        next_attempt_at, last_error, history, created_at, updated_at) \
SELECT seq, route, destination, webhook_id, envelope, status, attempts, next_at, last_error, \
       history, $11, $11 \
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
              $7::int4[], $8::int8[], $9::text[], $10::text[]) \
    AS i(seq, route, destination, webhook_id, envelope, status, attempts, next_at, last_error, \
         history)";

const INSERT_ROUTE_RUNS: &str = "\
INSERT INTO route_runs (event_seq, route, status, attempts, next_attempt_at, reason, \
                        created_at, updated_at) \
SELECT seq, route, status, attempts, next_at, reason, $7, $7 \
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::text[]) \
    AS i(seq, route, status, attempts, next_at, reason)";

const UPDATE_ROUTE_RUNS: &str = "\
UPDATE route_runs r SET status = i.status, attempts = i.attempts, next_attempt_at = i.next_at, \
       reason = i.reason, updated_at = $6, lease_owner = NULL \
  FROM unnest($1::int8[], $2::text[], $3::int4[], $4::int8[], $5::text[]) \
    AS i(id, status, attempts, next_at, reason) \
 WHERE r.id = i.id";

/// A first routing (or one whose plugin steps replace the earlier ones).
const SET_ROUTINGS: &str = "\
INSERT INTO routings (seq, status, plugin_results, processed_at) \
SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[]) \
ON CONFLICT (seq) DO UPDATE SET status = excluded.status, \
    plugin_results = coalesce(excluded.plugin_results, routings.plugin_results), \
    processed_at = excluded.processed_at";

/// A replay or a plugin retry: its steps are added to the event's history. After a plugin
/// retry (`derive`) the status sums up all the event's runs, as SQLite's `derived_status`.
const APPEND_ROUTINGS: &str = "\
INSERT INTO routings AS r (seq, status, plugin_results, processed_at) \
SELECT i.seq, \
       CASE WHEN NOT i.derive THEN i.status \
            WHEN EXISTS (SELECT 1 FROM route_runs x WHERE x.event_seq = i.seq AND x.status = 'dead') \
                 THEN 'failed' \
            WHEN EXISTS (SELECT 1 FROM route_runs x WHERE x.event_seq = i.seq AND x.status = 'retry') \
                 THEN 'retrying' \
            WHEN EXISTS (SELECT 1 FROM deliveries x WHERE x.event_seq = i.seq) THEN 'routed' \
            ELSE i.status END, \
       i.steps, $5 \
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::bool[]) AS i(seq, status, steps, derive) \
ON CONFLICT (seq) DO UPDATE SET status = excluded.status, \
    plugin_results = (coalesce(r.plugin_results, '[]')::jsonb \
                      || coalesce(excluded.plugin_results, '[]')::jsonb)::text, \
    processed_at = excluded.processed_at";

/// One retried attempt, written only while the claim is this replica's.
const RECORD_ATTEMPT: &str = "\
UPDATE deliveries SET status = $3, attempts = attempts + 1, next_attempt_at = $4, \
       last_error = coalesce($5, last_error), \
       history = (history::jsonb || $6::text::jsonb)::text, \
       envelope = CASE WHEN $3 = 'delivered' THEN NULL ELSE envelope END, \
       updated_at = $7, lease_owner = NULL \
 WHERE id = $1 AND lease_owner = $2 AND status = 'pending'";

impl Claims {
    pub(super) fn new(lease_ms: i64) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let random: u32 = rand::random();
        Self {
            owner: format!("{host}:{}:{random:08x}", std::process::id()),
            lease_ms,
            held: Mutex::default(),
        }
    }

    fn held<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let mut guard = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    fn held_ids(&self, pick: fn(&Held) -> &HashSet<i64>) -> Vec<i64> {
        self.held(|h| pick(h).iter().copied().collect())
    }

    pub(super) async fn claim_events(
        &self,
        pool: &PgPool,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let held = self.held_ids(|h| &h.events);
        let until = now_ms.saturating_add(self.lease_ms);
        let (owner, lease, held) = (&self.owner, &until, &held);
        let limit = i64::from(limit);
        let rows = with_retries(pool, |c| {
            Box::pin(async move {
                let r = c
                    .query(CLAIM_EVENTS, &[&now_ms, &limit, owner, lease, held])
                    .await;
                (c, r)
            })
        })
        .await?;
        let claimed: Vec<ClaimedEvent> = rows
            .iter()
            .map(|r| ClaimedEvent {
                replay: r.get(1),
                event: StoredEvent {
                    seq: r.get(0),
                    id: r.get(2),
                    source: r.get(3),
                    event_type: r.get(4),
                    envelope: r.get(5),
                },
            })
            .collect();
        self.held(|h| h.events.extend(claimed.iter().map(|c| c.event.seq)));
        Ok(claimed)
    }

    pub(super) async fn claim_due_deliveries(
        &self,
        pool: &PgPool,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let held = self.held_ids(|h| &h.deliveries);
        let until = now_ms.saturating_add(self.lease_ms);
        let (owner, lease, held) = (&self.owner, &until, &held);
        let limit = i64::from(limit);
        let rows = with_retries(pool, |c| {
            Box::pin(async move {
                let r = c
                    .query(CLAIM_DELIVERIES, &[&now_ms, &limit, owner, lease, held])
                    .await;
                (c, r)
            })
        })
        .await?;
        let due: Vec<DueDelivery> = rows
            .iter()
            .map(|r| DueDelivery {
                id: r.get(0),
                event_seq: r.get(1),
                route: r.get(2),
                destination: r.get(3),
                webhook_id: r.get(4),
                envelope: r.get(5),
                attempts: u32::try_from(r.get::<_, i32>(6)).unwrap_or(0),
            })
            .collect();
        self.held(|h| h.deliveries.extend(due.iter().map(|d| d.id)));
        Ok(due)
    }

    pub(super) async fn claim_due_route_runs(
        &self,
        pool: &PgPool,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRouteRun>, StoreError> {
        let held = self.held_ids(|h| &h.route_runs);
        let until = now_ms.saturating_add(self.lease_ms);
        let (owner, lease, held) = (&self.owner, &until, &held);
        let limit = i64::from(limit);
        let rows = with_retries(pool, |c| {
            Box::pin(async move {
                let r = c
                    .query(CLAIM_ROUTE_RUNS, &[&now_ms, &limit, owner, lease, held])
                    .await;
                (c, r)
            })
        })
        .await?;
        let due: Vec<DueRouteRun> = rows
            .iter()
            .map(|r| DueRouteRun {
                id: r.get(0),
                route: r.get(1),
                attempts: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                event: StoredEvent {
                    seq: r.get(3),
                    id: r.get(4),
                    source: r.get(5),
                    event_type: r.get(6),
                    envelope: r.get(7),
                },
            })
            .collect();
        self.held(|h| h.route_runs.extend(due.iter().map(|r| r.id)));
        Ok(due)
    }

    /// Records routing results for the claims still held, in one transaction; returns how
    /// many results were not written because their claim was lost.
    pub(super) async fn complete(
        &self,
        pool: &PgPool,
        processed: &[Processed],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let owner = &self.owner;
        let lost = with_retries(pool, |mut c| {
            Box::pin(async move {
                let r = complete_tx(&mut c, processed, owner, now_ms).await;
                (c, r)
            })
        })
        .await?;
        self.held(|h| {
            for p in processed {
                match retried_runs(p) {
                    Some(ids) => {
                        for id in ids {
                            h.route_runs.remove(&id);
                        }
                    }
                    None => {
                        h.events.remove(&p.seq);
                    }
                }
            }
        });
        Ok(lost)
    }

    /// Records one retried attempt; false when the claim was lost (nothing written).
    pub(super) async fn record_attempt(
        &self,
        pool: &PgPool,
        done: &AttemptDone,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (status, next, error) = match &done.state {
            DeliveryState::Delivered => ("delivered", None, None),
            DeliveryState::Pending { next_attempt_ms } => (
                "pending",
                Some(*next_attempt_ms),
                attempt_error(&done.attempt),
            ),
            DeliveryState::Dead { reason } => ("dead", None, Some(reason.clone())),
        };
        let attempt = serde_json::to_string(&[&done.attempt])
            .map_err(|e| StoreError::Write(format!("cannot encode an attempt: {e}")))?;
        let (owner, id, error, attempt) = (&self.owner, &done.delivery_id, &error, &attempt);
        let written = with_retries(pool, |c| {
            Box::pin(async move {
                let r = c
                    .execute(
                        RECORD_ATTEMPT,
                        &[id, owner, &status, &next, error, attempt, &now_ms],
                    )
                    .await;
                (c, r)
            })
        })
        .await?;
        self.held(|h| h.deliveries.remove(&done.delivery_id));
        Ok(written == 1)
    }

    /// Moves the leases of everything held one lease ahead.
    pub(super) async fn renew(&self, pool: &PgPool, now_ms: i64) -> Result<(), StoreError> {
        let events = self.held_ids(|h| &h.events);
        let deliveries = self.held_ids(|h| &h.deliveries);
        let runs = self.held_ids(|h| &h.route_runs);
        if events.is_empty() && deliveries.is_empty() && runs.is_empty() {
            return Ok(());
        }
        let until = now_ms.saturating_add(self.lease_ms);
        let (owner, events, deliveries, runs) = (&self.owner, &events, &deliveries, &runs);
        with_retries(pool, |c| {
            Box::pin(async move {
                let r = renew_tx(&c, owner, until, events, deliveries, runs).await;
                (c, r)
            })
        })
        .await?;
        Ok(())
    }

    /// Gives back everything held: due now, for any replica.
    pub(super) async fn release(&self, pool: &PgPool, now_ms: i64) -> Result<(), StoreError> {
        let events = self.held_ids(|h| &h.events);
        let deliveries = self.held_ids(|h| &h.deliveries);
        let runs = self.held_ids(|h| &h.route_runs);
        let (owner, events, deliveries, runs) = (&self.owner, &events, &deliveries, &runs);
        with_retries(pool, |c| {
            Box::pin(async move {
                let r = async {
                    c.execute(
                        "UPDATE event_work SET available_at = 0, lease_owner = NULL \
                         WHERE seq = ANY($1) AND lease_owner = $2",
                        &[events, owner],
                    )
                    .await?;
                    c.execute(
                        "UPDATE deliveries SET next_attempt_at = $3, lease_owner = NULL \
                         WHERE id = ANY($1) AND lease_owner = $2 AND status = 'pending'",
                        &[deliveries, owner, &now_ms],
                    )
                    .await?;
                    c.execute(
                        "UPDATE route_runs SET next_attempt_at = $3, lease_owner = NULL \
                         WHERE id = ANY($1) AND lease_owner = $2 AND status = 'retry'",
                        &[runs, owner, &now_ms],
                    )
                    .await?;
                    c.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
                        .await
                }
                .await;
                (c, r)
            })
        })
        .await?;
        self.held(|h| *h = Held::default());
        Ok(())
    }
}

/// The route runs a result retried, when it is a plugin retry (not a routing of the event).
fn retried_runs(p: &Processed) -> Option<Vec<i64>> {
    let ids: Vec<i64> = p.route_runs.iter().filter_map(|r| r.id).collect();
    (p.append && !ids.is_empty()).then_some(ids)
}

fn attempt_error(a: &super::super::work::AttemptRecord) -> Option<String> {
    a.error
        .clone()
        .or_else(|| a.status.map(|s| format!("HTTP {s}")))
}

async fn renew_tx(
    c: &PooledClient,
    owner: &String,
    until: i64,
    events: &Vec<i64>,
    deliveries: &Vec<i64>,
    runs: &Vec<i64>,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE event_work SET available_at = $3 WHERE seq = ANY($1) AND lease_owner = $2",
        &[events, owner, &until],
    )
    .await?;
    c.execute(
        "UPDATE deliveries SET next_attempt_at = $3 \
         WHERE id = ANY($1) AND lease_owner = $2 AND status = 'pending'",
        &[deliveries, owner, &until],
    )
    .await?;
    c.execute(
        "UPDATE route_runs SET next_attempt_at = $3 \
         WHERE id = ANY($1) AND lease_owner = $2 AND status = 'retry'",
        &[runs, owner, &until],
    )
    .await?;
    Ok(())
}

/// The routing results whose claims are still held, written in one transaction. Returns how
/// many were dropped because their claim was lost.
async fn complete_tx(
    c: &mut PooledClient,
    processed: &[Processed],
    owner: &String,
    now_ms: i64,
) -> Result<usize, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    let event_seqs: Vec<i64> = processed
        .iter()
        .filter(|p| retried_runs(p).is_none())
        .map(|p| p.seq)
        .collect();
    let run_ids: Vec<i64> = processed
        .iter()
        .filter_map(retried_runs)
        .flatten()
        .collect();
    let mut still_held: HashSet<i64> = HashSet::new();
    if !event_seqs.is_empty() {
        for row in tx.query(FINISH_EVENTS, &[&event_seqs, owner]).await? {
            still_held.insert(row.get(0));
        }
    }
    let mut runs_held: HashSet<i64> = HashSet::new();
    if !run_ids.is_empty() {
        for row in tx.query(HOLDS_ROUTE_RUNS, &[&run_ids, owner]).await? {
            runs_held.insert(row.get(0));
        }
    }
    let kept: Vec<&Processed> = processed
        .iter()
        .filter(|p| match retried_runs(p) {
            Some(ids) => ids.iter().all(|id| runs_held.contains(id)),
            None => still_held.contains(&p.seq),
        })
        .collect();
    write_results(&tx, &kept, now_ms).await?;
    tx.commit().await?;
    Ok(processed.len() - kept.len())
}

async fn write_results(
    tx: &Transaction<'_>,
    kept: &[&Processed],
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    if kept.is_empty() {
        return Ok(());
    }
    write_route_runs(tx, kept, now_ms).await?;
    write_deliveries(tx, kept, now_ms).await?;
    let to_json = |steps: &[super::super::work::PluginStep]| {
        serde_json::to_string(steps).unwrap_or_else(|_| "[]".to_owned())
    };
    let (mut set, mut append) = (RoutingColumns::default(), RoutingColumns::default());
    for p in kept {
        let columns = if p.append { &mut append } else { &mut set };
        columns.seq.push(p.seq);
        columns.status.push(p.status.as_str());
        columns
            .steps
            .push((p.append || !p.steps.is_empty()).then(|| to_json(&p.steps)));
        columns.derive.push(retried_runs(p).is_some());
    }
    if !set.seq.is_empty() {
        tx.execute(
            SET_ROUTINGS,
            &[
                &set.seq,
                &set.status,
                &set.steps,
                &vec![now_ms; set.seq.len()],
            ],
        )
        .await?;
    }
    if !append.seq.is_empty() {
        tx.execute(
            APPEND_ROUTINGS,
            &[
                &append.seq,
                &append.status,
                &append.steps,
                &append.derive,
                &now_ms,
            ],
        )
        .await?;
    }
    Ok(())
}

#[derive(Default)]
struct RoutingColumns {
    seq: Vec<i64>,
    status: Vec<&'static str>,
    steps: Vec<Option<String>>,
    derive: Vec<bool>,
}

async fn write_deliveries(
    tx: &Transaction<'_>,
    kept: &[&Processed],
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let mut c = DeliveryColumns::default();
    for p in kept {
        for d in &p.deliveries {
            // A delivered envelope is not needed again (a replay routes the event anew).
            let envelope = match d.state {
                DeliveryState::Delivered => None,
                _ => d.envelope.clone(),
            };
            let (status, next, error) = match &d.state {
                DeliveryState::Delivered => ("delivered", None, None),
                DeliveryState::Pending { next_attempt_ms } => (
                    "pending",
                    Some(*next_attempt_ms),
                    d.attempts.last().and_then(attempt_error),
                ),
                DeliveryState::Dead { reason } => ("dead", None, Some(reason.clone())),
            };
            c.seq.push(p.seq);
            c.route.push(d.route.as_str());
            c.destination.push(d.destination.as_str());
            c.webhook_id.push(d.webhook_id.as_str());
            c.envelope.push(envelope);
            c.status.push(status);
            c.attempts
                .push(i32::try_from(d.attempts.len()).unwrap_or(i32::MAX));
            c.next.push(next);
            c.error.push(error);
            c.history
                .push(serde_json::to_string(&d.attempts).unwrap_or_else(|_| "[]".to_owned()));
        }
    }
    if c.seq.is_empty() {
        return Ok(());
    }
    tx.execute(
        INSERT_DELIVERIES,
        &[
            &c.seq,
            &c.route,
            &c.destination,
            &c.webhook_id,
            &c.envelope,
            &c.status,
            &c.attempts,
            &c.next,
            &c.error,
            &c.history,
            &now_ms,
        ],
    )
    .await?;
    Ok(())
}

#[derive(Default)]
struct DeliveryColumns<'a> {
    seq: Vec<i64>,
    route: Vec<&'a str>,
    destination: Vec<&'a str>,
    webhook_id: Vec<&'a str>,
    envelope: Vec<Option<String>>,
    status: Vec<&'static str>,
    attempts: Vec<i32>,
    next: Vec<Option<i64>>,
    error: Vec<Option<String>>,
    history: Vec<String>,
}

async fn write_route_runs(
    tx: &Transaction<'_>,
    kept: &[&Processed],
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let (mut new, mut updated) = (RunColumns::default(), RunColumns::default());
    for p in kept {
        for run in &p.route_runs {
            let (status, next) = match run.state {
                RouteRunState::Retry { next_attempt_ms } => ("retry", Some(next_attempt_ms)),
                RouteRunState::Dead => ("dead", None),
                RouteRunState::Done => ("done", None),
            };
            let columns = if run.id.is_some() {
                &mut updated
            } else {
                &mut new
            };
            columns.key.push(run.id.unwrap_or(p.seq));
            columns.route.push(run.route.as_str());
            columns.status.push(status);
            columns
                .attempts
                .push(i32::try_from(run.attempts).unwrap_or(i32::MAX));
            columns.next.push(next);
            columns.reason.push(run.reason.as_str());
        }
    }
    if !new.key.is_empty() {
        tx.execute(
            INSERT_ROUTE_RUNS,
            &[
                &new.key,
                &new.route,
                &new.status,
                &new.attempts,
                &new.next,
                &new.reason,
                &now_ms,
            ],
        )
        .await?;
    }
    if !updated.key.is_empty() {
        tx.execute(
            UPDATE_ROUTE_RUNS,
            &[
                &updated.key,
                &updated.status,
                &updated.attempts,
                &updated.next,
                &updated.reason,
                &now_ms,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Route runs as one array per column; `key` is the run's id for updates, the event's seq for
/// new runs.
#[derive(Default)]
struct RunColumns<'a> {
    key: Vec<i64>,
    route: Vec<&'a str>,
    status: Vec<&'static str>,
    attempts: Vec<i32>,
    next: Vec<Option<i64>>,
    reason: Vec<&'a str>,
}
