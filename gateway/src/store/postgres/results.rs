//! Writing routing results on PostgreSQL: what `complete` writes for the results whose claims
//! are still held (claims.rs decides which), as a few multi-row statements (arrays through
//! `unnest`) in the caller's transaction: new and retried route runs, deliveries with their
//! first attempts, and the events' routings (set, or appended to for replays and plugin
//! retries). Column meanings are the SQLite schema's (store/schema.rs).
//!
//! This module never decides whose result counts and never commits.

use super::super::stuck_amount::stuck_columns;
use super::super::work::{DeliveryState, PluginStep, Processed, RouteRunState};
use super::claims::retried_runs;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

const INSERT_DELIVERIES: &str = "\
INSERT INTO deliveries (event_seq, route, destination, webhook_id, envelope, status, attempts, \
                        next_attempt_at, last_error, history, created_at, updated_at, \
                        subject, order_at, order_next, amount, currency, amount_units, \
                        amount_scale) \
SELECT seq, route, destination, webhook_id, envelope, status, attempts, next_at, last_error, \
       history, $18, $18, subject, order_at, order_next, amount, currency, units, scale \
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
              $7::int4[], $8::int8[], $9::text[], $10::text[], $11::text[], $12::int8[], \
              $13::int8[], $14::text[], $15::text[], $16::int8[], $17::int8[]) \
    AS i(seq, route, destination, webhook_id, envelope, status, attempts, next_at, last_error, \
         history, subject, order_at, order_next, amount, currency, units, scale)";

/// New route runs, with the ordering key of their event's work row ($8 subject, $9, $10): one
/// left waiting for a plugin retry holds its subject as the unrouted event did (ordering.rs).
const INSERT_ROUTE_RUNS: &str = "\
INSERT INTO route_runs (event_seq, route, status, attempts, next_attempt_at, reason, \
                        created_at, updated_at, subject, order_at, order_next) \
SELECT seq, route, status, attempts, next_at, reason, $7, $7, subject, order_at, order_next \
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::text[], \
              $8::text[], $9::int8[], $10::int8[]) \
    AS i(seq, route, status, attempts, next_at, reason, subject, order_at, order_next)";

/// The ordering keys (subject, provider time, tie-breaker) of the events whose work rows a
/// completion deleted, by seq.
pub(super) type SubjectHolds = std::collections::HashMap<i64, (String, i64, i64)>;

/// A retried run's new state. One that stops waiting (done, dead) drops its ordering key: its
/// hold on its subject ended, and a redrive of it later holds nothing (as on SQLite, where the
/// key is gone with the event's `unrouted_subjects` row; docs/ordering.md).
const UPDATE_ROUTE_RUNS: &str = "\
UPDATE route_runs r SET status = i.status, attempts = i.attempts, next_attempt_at = i.next_at, \
       reason = i.reason, updated_at = $6, lease_owner = NULL, \
       subject = CASE WHEN i.status = 'retry' THEN r.subject END \
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

/// Writes the results of `kept` (route runs first: a plugin retry's event status is derived
/// from all of its runs).
pub(super) async fn write_results(
    tx: &Transaction<'_>,
    kept: &[&Processed],
    now_ms: i64,
    holds: &SubjectHolds,
) -> Result<(), tokio_postgres::Error> {
    if kept.is_empty() {
        return Ok(());
    }
    write_route_runs(tx, kept, now_ms, holds).await?;
    write_deliveries(tx, kept, now_ms).await?;
    let to_json = steps_json;
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
            &tx.prepare_cached(SET_ROUTINGS).await?,
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
            &tx.prepare_cached(APPEND_ROUTINGS).await?,
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
    let c = DeliveryColumns::of(kept.iter().copied());
    if c.seq.is_empty() {
        return Ok(());
    }
    let mut params = c.params();
    params.push(&now_ms);
    tx.execute(&tx.prepare_cached(INSERT_DELIVERIES).await?, &params)
        .await?;
    Ok(())
}

/// `complete` for results that are all first routings (no replay, no plugin retry): the claims
/// ended, the routings and the deliveries written, as one statement, which is one transaction
/// and one round trip where the general path takes five. Returns the seqs written: a result
/// left out lost its claim.
pub(super) async fn complete_first_routings(
    client: &impl deadpool_postgres::GenericClient,
    processed: &[&Processed],
    owner: &str,
    now_ms: i64,
) -> Result<std::collections::HashSet<i64>, tokio_postgres::Error> {
    let seqs: Vec<i64> = processed.iter().map(|p| p.seq).collect();
    let status: Vec<&str> = processed.iter().map(|p| p.status.as_str()).collect();
    let steps: Vec<Option<String>> = processed
        .iter()
        .map(|p| (!p.steps.is_empty()).then(|| steps_json(&p.steps)))
        .collect();
    let c = DeliveryColumns::of(processed.iter().copied());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&seqs, &owner, &status, &steps, &now_ms];
    params.extend(c.params());
    let statement = client.prepare_cached(COMPLETE_FIRST_ROUTINGS).await?;
    let written = client.query(&statement, &params).await?;
    Ok(written.iter().map(|row| row.get(0)).collect())
}

/// What [`complete_first_routings`] runs: the work rows still this replica's are deleted, and
/// only their events' routings and deliveries are written. A first routing finds no routing
/// row (a replay marks its work row), so the insert has no `ON CONFLICT`: that would check the
/// key before inserting and confirm each row afterwards, an index search and a WAL record
/// per event for a conflict that does not happen. If one does, the statement fails whole and
/// the caller takes the general path.
const COMPLETE_FIRST_ROUTINGS: &str = "\
WITH done AS ( \
    DELETE FROM event_work WHERE seq = ANY($1) AND lease_owner = $2 RETURNING seq \
), routed AS ( \
    INSERT INTO routings (seq, status, plugin_results, processed_at) \
    SELECT i.seq, i.status, i.steps, $5 \
      FROM unnest($1::int8[], $3::text[], $4::text[]) AS i(seq, status, steps) \
     WHERE i.seq IN (SELECT seq FROM done) \
), delivered AS ( \
    INSERT INTO deliveries (event_seq, route, destination, webhook_id, envelope, status, \
                            attempts, next_attempt_at, last_error, history, created_at, \
                            updated_at, subject, order_at, order_next, amount, currency, \
                            amount_units, amount_scale) \
    SELECT seq, route, destination, webhook_id, envelope, status, attempts, next_at, \
           last_error, history, $5, $5, subject, order_at, order_next, amount, currency, \
           units, scale \
      FROM unnest($6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                  $12::int4[], $13::int8[], $14::text[], $15::text[], $16::text[], \
                  $17::int8[], $18::int8[], $19::text[], $20::text[], $21::int8[], \
                  $22::int8[]) \
        AS d(seq, route, destination, webhook_id, envelope, status, attempts, next_at, \
             last_error, history, subject, order_at, order_next, amount, currency, units, \
             scale) \
     WHERE d.seq IN (SELECT seq FROM done) \
) \
SELECT seq FROM done";

fn steps_json(steps: &[PluginStep]) -> String {
    serde_json::to_string(steps).unwrap_or_else(|_| "[]".to_owned())
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
    subject: Vec<Option<&'a str>>,
    order_at: Vec<i64>,
    order_next: Vec<i64>,
    /// The amount of a delivery dead at once (dead_letters.rs, `StuckAmount`).
    amount: Vec<Option<&'a str>>,
    currency: Vec<Option<&'a str>>,
    units: Vec<Option<i64>>,
    scale: Vec<Option<i64>>,
}

impl<'a> DeliveryColumns<'a> {
    /// The columns as statement parameters, in the order of the `unnest` of both delivery
    /// inserts.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.seq,
            &self.route,
            &self.destination,
            &self.webhook_id,
            &self.envelope,
            &self.status,
            &self.attempts,
            &self.next,
            &self.error,
            &self.history,
            &self.subject,
            &self.order_at,
            &self.order_next,
            &self.amount,
            &self.currency,
            &self.units,
            &self.scale,
        ]
    }

    /// The deliveries of `results`, one array per column.
    fn of(results: impl Iterator<Item = &'a Processed>) -> Self {
        let mut c = DeliveryColumns::default();
        for p in results {
            for d in &p.deliveries {
                // A delivered envelope is not needed again (a replay routes the event anew).
                let envelope = match d.state {
                    DeliveryState::Delivered => None,
                    _ => d.envelope.clone(),
                };
                let state = d.state.columns(d.attempts.last());
                let (status, next, error) = (state.status, state.next_attempt_at, state.last_error);
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
                let order = d.order.as_ref();
                c.subject.push(order.map(|o| o.subject.as_str()));
                c.order_at.push(order.map_or(0, |o| o.provider_ms));
                c.order_next.push(order.map_or(0, |o| o.provider_next_ms));
                let (amount, currency, units, scale) = stuck_columns(d.stuck.as_ref());
                c.amount.push(amount);
                c.currency.push(currency);
                c.units.push(units);
                c.scale.push(scale);
            }
        }
        c
    }
}

async fn write_route_runs(
    tx: &Transaction<'_>,
    kept: &[&Processed],
    now_ms: i64,
    holds: &SubjectHolds,
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
            if run.id.is_none() {
                let hold = holds.get(&p.seq);
                columns.subject.push(hold.map(|(s, _, _)| s.as_str()));
                columns.order_at.push(hold.map_or(0, |(_, at, _)| *at));
                columns
                    .order_next
                    .push(hold.map_or(0, |(_, _, next)| *next));
            }
        }
    }
    if !new.key.is_empty() {
        tx.execute(
            &tx.prepare_cached(INSERT_ROUTE_RUNS).await?,
            &[
                &new.key,
                &new.route,
                &new.status,
                &new.attempts,
                &new.next,
                &new.reason,
                &now_ms,
                &new.subject,
                &new.order_at,
                &new.order_next,
            ],
        )
        .await?;
    }
    if !updated.key.is_empty() {
        tx.execute(
            &tx.prepare_cached(UPDATE_ROUTE_RUNS).await?,
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
    /// New runs only: their event's ordering key (see [`INSERT_ROUTE_RUNS`]).
    subject: Vec<Option<&'a str>>,
    order_at: Vec<i64>,
    order_next: Vec<i64>,
}
