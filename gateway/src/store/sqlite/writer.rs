//! The single writer: every write to the database goes through this thread, in batches.
//!
//! Requests queue on a bounded channel; the writer takes everything queued (up to
//! [`MAX_BATCH`]), applies it in ONE transaction and commits with ONE fsync (WAL,
//! `synchronous = FULL`), then answers each request. While a commit is in flight new requests
//! queue up, so the batch grows with load and the fsync cost is shared: ingests, routing
//! results and delivery attempts all ride the same commits. A failed batch is rolled back and
//! every request in it gets the error: nothing is acknowledged that is not durable. Admin and
//! retention commands (replay, redrive, expire) run in a savepoint of their own, so when one
//! of them fails it alone gets the error and the ingests batched with it still commit.

use super::super::dedup_index::{BatchKeys, DedupIndex, Entry, IndexKey, index_key};
use super::super::event_filter::search_key;
use super::super::event_filter::{Dialect, newest_seqs};
use super::super::object_states::{BatchStates, ObjectStates, object_key};
use super::super::schema;
use super::super::stuck_amount::stuck_columns;
use super::super::work::{
    AttemptDone, AttemptRecord, AuditRecord, DeliveryState, EventFilter, EventStatus, PluginStep,
    Processed, RouteRunState,
};
use super::super::{
    DedupPruneStep, ExpiredEvents, IngestOutcome, NewEvent, QuarantinedBody, StoreError,
    StoredEvent, unix_ms,
};
use super::envelope_row::stored_envelope;
use super::recent::RecentEvents;
use super::redrive::{Bulk, BulkStep, Listed, redrive, redrive_step};
use crate::metrics::Metrics;
use crate::metrics::events::StoreBatchCommitted;
use rusqlite::{Connection, OptionalExtension as _, Transaction, params, params_from_iter};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, oneshot};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 2048;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

#[derive(Debug)]
pub(super) enum Command {
    /// The event and its hashes (worked out by the caller, not on this thread).
    Ingest(NewEvent, EventKeys, Reply<IngestOutcome>),
    /// The body and its SHA-256 (worked out by the caller, not on this thread).
    Quarantine(QuarantinedBody, [u8; 32], Reply<()>),
    Probe(Reply<()>),
    Prune(i64, Reply<DedupPruneStep>),
    PruneStates(i64, Reply<DedupPruneStep>),
    Expire(ExpireScan, Reply<ExpiredEvents>),
    /// One step of deleting quarantined bodies not seen since the cutoff (`after_seq` is a
    /// quarantine id here).
    ExpireQuarantine(ExpireScan, Reply<ExpiredEvents>),
    Complete(Arc<Vec<Processed>>, Reply<()>),
    Attempt(AttemptDone, Reply<()>),
    Watermark(i64, Reply<()>),
    Replay(EventFilter, u32, Reply<u64>),
    Redrive(Listed, Reply<u64>),
    /// One step of a bulk redrive: (which rows, the last id already looked at).
    RedriveStep(Bulk, i64, Reply<BulkStep>),
    /// One admin audit record (who replayed or redrove what).
    Audit(AuditRecord, Reply<()>),
}

/// What one command did inside a batch, before the commit decides whether it counts.
enum Applied {
    Ingest(IngestOutcome),
    Unit,
    Count(u64),
    Expired(ExpiredEvents),
    Pruned(DedupPruneStep),
    Stepped(BulkStep),
    /// An isolated command failed and was rolled back to its savepoint; the rest commits.
    Failed(String),
}

/// One step of a retention pass: look at up to `limit` events after `after_seq`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ExpireScan {
    pub(super) cutoff_ms: i64,
    pub(super) after_seq: i64,
    pub(super) limit: u32,
}

/// What the writer decides dedup against, in memory: the dedup keys of the window and the
/// latest state of every object (for providers that sign no event id).
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) keys: DedupIndex,
    pub(super) states: ObjectStates,
}

pub(super) fn writer_loop(
    mut conn: Connection,
    mut index: Seen,
    mut rx: mpsc::Receiver<Command>,
    metrics: &Metrics,
    work: &Arc<Notify>,
    recent: &RecentEvents,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        // A panic must not end the writer: that batch's requests see their reply dropped
        // (answered 503, so providers retry) and the next batch runs normally.
        let run = std::panic::AssertUnwindSafe(|| {
            let started = std::time::Instant::now();
            let result = apply(&mut conn, &mut index, &batch);
            let error = result.as_ref().err().map(ToString::to_string);
            StoreBatchCommitted {
                metrics,
                size: batch.len(),
                elapsed: started.elapsed(),
                error: error.as_deref(),
            }
            .emit();
            let creates_work = result.is_ok() && batch.iter().any(creates_work);
            // `recent` learns the commit before anyone hears of it: intake finds the new
            // events in memory when woken, and an answered routing result is never pending.
            if let Ok(applied) = &result {
                let (routed, marked_replays) = routed_and_replays(&batch, applied);
                recent.committed(take_stored(&mut batch, applied), &routed, marked_replays);
            }
            if creates_work {
                work.notify_one();
            }
            reply_all(batch.drain(..), result);
        });
        if std::panic::catch_unwind(run).is_err() {
            batch.clear();
            tracing::error!("store writer recovered from a panic; its batch was answered 503");
        }
    }
}

/// What a committed batch changed for `recent`: the events that got a routing result (no
/// longer pending) and whether any event was marked for replay.
fn routed_and_replays(batch: &[Command], applied: &[Applied]) -> (Vec<i64>, bool) {
    let mut routed = Vec::new();
    let mut replays = false;
    for (cmd, done) in batch.iter().zip(applied) {
        match (cmd, done) {
            (Command::Complete(processed, _), _) => routed.extend(processed.iter().map(|p| p.seq)),
            (Command::Replay(..), Applied::Count(n)) => replays |= *n > 0,
            _ => {}
        }
    }
    (routed, replays)
}

/// The events a committed batch stored, in seq order. Their envelopes move out of the
/// commands (only the replies are needed after this).
fn take_stored(batch: &mut [Command], applied: &[Applied]) -> Vec<StoredEvent> {
    let mut stored = Vec::new();
    for (cmd, done) in batch.iter_mut().zip(applied) {
        if let (Command::Ingest(e, ..), Applied::Ingest(IngestOutcome::Stored { seq })) =
            (cmd, done)
        {
            stored.push(StoredEvent {
                seq: *seq,
                id: std::mem::take(&mut e.dedup_key),
                source: std::mem::take(&mut e.source),
                event_type: std::mem::take(&mut e.event_type),
                envelope: std::mem::take(&mut e.envelope),
            });
        }
    }
    stored
}

fn creates_work(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Ingest(..) | Command::Replay(..) | Command::Redrive(..) | Command::RedriveStep(..)
    )
}

/// An event's hashes for the dedup index and the subject search, computed by the caller's
/// task: on this thread every ack would wait for them.
#[derive(Debug, Clone, Copy)]
pub(super) struct EventKeys {
    index: IndexKey,
    subject: Option<i64>,
}

impl EventKeys {
    pub(super) fn of(e: &NewEvent) -> Self {
        Self {
            index: index_key(&e.source, &e.dedup_key),
            subject: e.subject.as_deref().map(search_key),
        }
    }
}

/// Applies a batch in one transaction; all or nothing. The dedup index learns the batch's
/// keys only after the commit succeeded.
fn apply(
    conn: &mut Connection,
    seen: &mut Seen,
    batch: &[Command],
) -> Result<Vec<Applied>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut applied = Vec::with_capacity(batch.len());
    let mut fresh = BatchKeys::default();
    let mut fresh_states = BatchStates::default();
    let now = unix_ms();
    {
        let mut event = tx.prepare_cached(schema::INSERT_EVENT)?;
        for cmd in batch {
            applied.push(match cmd {
                Command::Ingest(e, keys, _) => {
                    // Only this thread writes, so check-then-insert is atomic. An event with an
                    // object state is a retry by that rule alone (its key names the arrival, so
                    // it is new to the key index anyway); any other by its key.
                    let key = keys.index;
                    let object = e
                        .object_state
                        .map(|claim| (object_key(&e.source, &claim.object), claim));
                    let duplicate = match &object {
                        Some((object, claim)) => {
                            seen.states
                                .is_retry(&fresh_states, object, claim, e.received_at_ms)
                        }
                        None => seen.keys.contains(&key) || fresh.contains(&key),
                    };
                    if duplicate {
                        Applied::Ingest(IngestOutcome::Duplicate)
                    } else {
                        let (envelope, span) = stored_envelope(e);
                        let seq = event.insert(params![
                            e.source,
                            e.dedup_key,
                            e.event_type,
                            envelope,
                            e.raw_body.as_ref(),
                            e.headers,
                            e.received_at_ms,
                            span.map(|s| s.at),
                            span.map(|s| s.from),
                            span.map(|s| s.len),
                        ])?;
                        if let Some(order) = &e.order {
                            tx.prepare_cached(schema::INSERT_UNROUTED_SUBJECT)?
                                .execute(params![
                                    seq,
                                    order.subject,
                                    order.provider_ms,
                                    order.provider_next_ms
                                ])?;
                        }
                        fresh.add(Entry {
                            seq,
                            key,
                            at: e.received_at_ms,
                            subject: keys.subject,
                        });
                        if let Some((object, claim)) = &object {
                            fresh_states.record(&tx, *object, claim, e.received_at_ms)?;
                        }
                        Applied::Ingest(IngestOutcome::Stored { seq })
                    }
                }
                Command::Quarantine(q, digest, _) => {
                    // A body this source sent before is counted on its row, not stored again.
                    let repeated = tx
                        .prepare_cached(schema::REPEAT_QUARANTINE)?
                        .execute(params![q.source, digest.as_slice(), q.received_at_ms])?;
                    if repeated == 0 {
                        tx.prepare_cached(schema::INSERT_QUARANTINE)?
                            .execute(params![
                                q.source,
                                q.reason,
                                q.raw_body.as_ref(),
                                q.headers,
                                q.received_at_ms,
                                digest.as_slice()
                            ])?;
                    }
                    Applied::Unit
                }
                Command::Probe(_) => {
                    let now = crate::envelope::now_rfc3339();
                    tx.prepare_cached(schema::WRITE_PROBE)?
                        .execute(params![now])?;
                    Applied::Unit
                }
                Command::Prune(cutoff, _) => isolated(&tx, || {
                    seen.keys.prune_step(&tx, *cutoff).map(Applied::Pruned)
                })?,
                Command::PruneStates(now_ms, _) => isolated(&tx, || {
                    seen.states.prune_step(&tx, *now_ms).map(Applied::Pruned)
                })?,
                Command::Expire(scan, _) => {
                    isolated(&tx, || expire(&tx, *scan).map(Applied::Expired))?
                }
                Command::ExpireQuarantine(scan, _) => {
                    isolated(&tx, || expire_quarantine(&tx, *scan).map(Applied::Expired))?
                }
                Command::Complete(batch, _) => {
                    for p in batch.iter() {
                        complete(&tx, p, now)?;
                    }
                    Applied::Unit
                }
                Command::Attempt(done, _) => {
                    record_attempt(&tx, done, now)?;
                    Applied::Unit
                }
                Command::Watermark(seq, _) => {
                    tx.prepare_cached(
                        "INSERT INTO meta (key, value) VALUES ('intake_watermark', ?1) \
                         ON CONFLICT (key) DO UPDATE SET value = ?1",
                    )?
                    .execute(params![seq.to_string()])?;
                    Applied::Unit
                }
                Command::Replay(filter, limit, _) => {
                    isolated(&tx, || replay(&tx, filter, *limit).map(Applied::Count))?
                }
                Command::Redrive(listed, _) => {
                    isolated(&tx, || redrive(&tx, listed, now).map(Applied::Count))?
                }
                Command::RedriveStep(bulk, after, _) => isolated(&tx, || {
                    redrive_step(&tx, *bulk, *after, now).map(Applied::Stepped)
                })?,
                Command::Audit(record, _) => isolated(&tx, || {
                    tx.prepare_cached(
                        "INSERT INTO admin_audit (at, actor, action, selection, count) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        record.at,
                        record.actor,
                        record.action,
                        record.selection,
                        i64::try_from(record.count).unwrap_or(i64::MAX)
                    ])?;
                    Ok(Applied::Unit)
                })?,
            });
        }
    }
    let saving = seen.keys.save_due(&tx)?;
    tx.commit()?;
    seen.keys.saved(saving);
    seen.keys.extend(fresh.committed);
    seen.states.extend(fresh_states);
    Ok(applied)
}

/// Runs one command in a savepoint: its failure becomes [`Applied::Failed`] (its changes
/// undone) instead of failing the whole batch. Only for rare commands: a savepoint makes
/// SQLite journal every page the command touches a second time.
fn isolated(
    tx: &Transaction<'_>,
    run: impl FnOnce() -> rusqlite::Result<Applied>,
) -> rusqlite::Result<Applied> {
    tx.execute_batch("SAVEPOINT isolated")?;
    match run() {
        Ok(applied) => {
            tx.execute_batch("RELEASE isolated")?;
            Ok(applied)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO isolated; RELEASE isolated")?;
            Ok(Applied::Failed(e.to_string()))
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn history_of(attempts: &[AttemptRecord]) -> rusqlite::Result<String> {
    to_json(&attempts)
}

/// The routing result of one event: the event's status and plugin steps, its deliveries and
/// its unfinished route runs.
fn complete(tx: &Transaction<'_>, p: &Processed, now: i64) -> rusqlite::Result<()> {
    let mut steps_json = None;
    if p.append {
        let previous: Option<String> = tx
            .prepare_cached("SELECT plugin_results FROM routings WHERE seq = ?1")?
            .query_row([p.seq], |r| r.get(0))
            .optional()?
            .flatten();
        let mut steps: Vec<PluginStep> = previous
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        steps.extend(p.steps.iter().cloned());
        steps_json = Some(to_json(&steps)?);
    } else if !p.steps.is_empty() {
        steps_json = Some(to_json(&p.steps)?);
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (event_seq, route, destination, webhook_id, envelope, status, \
         attempts, next_attempt_at, last_error, history, created_at, updated_at, \
         subject, order_at, order_next, amount, currency, amount_units, amount_scale) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, \
                 ?15, ?16, ?17, ?18)",
    )?;
    for d in &p.deliveries {
        // A delivered envelope is not needed again (a replay routes the event anew), so only
        // deliveries that may be attempted again keep theirs.
        let envelope = match d.state {
            DeliveryState::Delivered => None,
            _ => d.envelope.as_deref(),
        };
        let state = d.state.columns(d.attempts.last());
        let (status, next, error) = (state.status, state.next_attempt_at, state.last_error);
        let (amount, currency, units, scale) = stuck_columns(d.stuck.as_ref());
        insert.execute(params![
            p.seq,
            d.route,
            d.destination,
            d.webhook_id,
            envelope,
            status,
            i64::try_from(d.attempts.len()).unwrap_or(i64::MAX),
            next,
            error,
            history_of(&d.attempts)?,
            now,
            d.order.as_ref().map(|o| o.subject.as_str()),
            d.order.as_ref().map_or(0, |o| o.provider_ms),
            d.order.as_ref().map_or(0, |o| o.provider_next_ms),
            amount,
            currency,
            units,
            scale,
        ])?;
    }
    for run in &p.route_runs {
        let (status, next) = match run.state {
            RouteRunState::Retry { next_attempt_ms } => ("retry", Some(next_attempt_ms)),
            RouteRunState::Dead => ("dead", None),
            RouteRunState::Done => ("done", None),
        };
        match run.id {
            Some(id) => tx
                .prepare_cached(
                    "UPDATE route_runs SET status = ?2, attempts = ?3, next_attempt_at = ?4, \
                     reason = ?5, updated_at = ?6 WHERE id = ?1",
                )?
                .execute(params![id, status, run.attempts, next, run.reason, now])?,
            None => tx
                .prepare_cached(
                    "INSERT INTO route_runs (event_seq, route, status, attempts, \
                     next_attempt_at, reason, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )?
                .execute(params![
                    p.seq,
                    run.route,
                    status,
                    run.attempts,
                    next,
                    run.reason,
                    now
                ])?,
        };
    }
    tx.prepare_cached(schema::FINISH_UNROUTED_SUBJECT)?
        .execute([p.seq])?;
    let status = if p.append && p.route_runs.iter().any(|r| r.id.is_some()) {
        derived_status(tx, p.seq, p.status)?
    } else {
        p.status
    };
    tx.prepare_cached(
        "INSERT INTO routings (seq, status, plugin_results, processed_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (seq) DO UPDATE SET status = excluded.status, \
         plugin_results = coalesce(excluded.plugin_results, plugin_results), \
         processed_at = excluded.processed_at",
    )?
    .execute(params![p.seq, status.as_str(), steps_json, now])?;
    Ok(())
}

/// After a route-run retry the event's status sums up all its runs, not just this one.
fn derived_status(
    tx: &Transaction<'_>,
    seq: i64,
    this_run: EventStatus,
) -> rusqlite::Result<EventStatus> {
    let (dead, retrying, delivered): (i64, i64, i64) = tx
        .prepare_cached(
            "SELECT \
               (SELECT count(*) FROM route_runs WHERE event_seq = ?1 AND status = 'dead'), \
               (SELECT count(*) FROM route_runs WHERE event_seq = ?1 AND status = 'retry'), \
               (SELECT count(*) FROM deliveries WHERE event_seq = ?1)",
        )?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(if dead > 0 {
        EventStatus::Failed
    } else if retrying > 0 {
        EventStatus::Retrying
    } else if delivered > 0 {
        EventStatus::Routed
    } else {
        this_run
    })
}

fn record_attempt(tx: &Transaction<'_>, done: &AttemptDone, now: i64) -> rusqlite::Result<()> {
    let history: Option<String> = tx
        .prepare_cached("SELECT history FROM deliveries WHERE id = ?1")?
        .query_row([done.delivery_id], |r| r.get(0))
        .optional()?;
    let Some(history) = history else {
        return Ok(());
    };
    let mut attempts: Vec<AttemptRecord> = serde_json::from_str(&history).unwrap_or_default();
    attempts.push(done.attempt.clone());
    let state = done.state.columns(Some(&done.attempt));
    let (status, next, error) = (state.status, state.next_attempt_at, state.last_error);
    let (amount, currency, units, scale) = stuck_columns(done.stuck.as_ref());
    tx.prepare_cached(
        "UPDATE deliveries SET status = ?2, attempts = attempts + 1, next_attempt_at = ?3, \
         last_error = coalesce(?4, last_error), history = ?5, updated_at = ?6, \
         holds_subject = (?2 = 'dead' AND ?7 AND subject IS NOT NULL), \
         amount = ?8, currency = ?9, amount_units = ?10, amount_scale = ?11 \
         WHERE id = ?1 AND status = 'pending'",
    )?
    .execute(params![
        done.delivery_id,
        status,
        next,
        error,
        history_of(&attempts)?,
        now,
        done.holds_subject,
        amount,
        currency,
        units,
        scale,
    ])?;
    Ok(())
}

/// Marks routed events for replay. Events still `pending` (no routing yet) or already marked
/// are on their way through the routes and are left alone.
fn replay(tx: &Transaction<'_>, filter: &EventFilter, limit: u32) -> rusqlite::Result<u64> {
    let lookups = super::reader::lookups(tx, filter)?;
    let (seqs, args) = newest_seqs(filter, &lookups, Dialect::Sqlite, true, limit);
    let sql = format!("UPDATE routings SET status = 'replay' WHERE seq IN ({seqs})");
    let n = tx.execute(&sql, params_from_iter(args))?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

fn reply_all(batch: impl Iterator<Item = Command>, result: Result<Vec<Applied>, rusqlite::Error>) {
    match result {
        Ok(applied) => {
            for (cmd, done) in batch.zip(applied) {
                // A requester that gave up (timeout, disconnect) no longer listens; that is fine,
                // its write is committed and a retry will be answered as a duplicate.
                match (cmd, done) {
                    (Command::Ingest(_, _, r), Applied::Ingest(o)) => drop(r.send(Ok(o))),
                    (
                        Command::Quarantine(_, _, r)
                        | Command::Probe(r)
                        | Command::Complete(_, r)
                        | Command::Attempt(_, r)
                        | Command::Watermark(_, r)
                        | Command::Audit(_, r),
                        Applied::Unit,
                    ) => drop(r.send(Ok(()))),
                    (Command::Replay(_, _, r) | Command::Redrive(_, r), Applied::Count(n)) => {
                        drop(r.send(Ok(n)));
                    }
                    (Command::Prune(_, r) | Command::PruneStates(_, r), Applied::Pruned(step)) => {
                        drop(r.send(Ok(step)))
                    }
                    (Command::RedriveStep(_, _, r), Applied::Stepped(step)) => {
                        drop(r.send(Ok(step)));
                    }
                    (
                        Command::Expire(_, r) | Command::ExpireQuarantine(_, r),
                        Applied::Expired(e),
                    ) => drop(r.send(Ok(e))),
                    (cmd, Applied::Failed(msg)) => fail(cmd, &msg),
                    (cmd, _) => fail(cmd, "internal: batch results out of order"),
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for cmd in batch {
                fail(cmd, &msg);
            }
        }
    }
}

fn fail(cmd: Command, msg: &str) {
    let err = || StoreError::Write(msg.to_owned());
    match cmd {
        Command::Ingest(_, _, r) => drop(r.send(Err(err()))),
        Command::Quarantine(_, _, r)
        | Command::Probe(r)
        | Command::Complete(_, r)
        | Command::Attempt(_, r)
        | Command::Watermark(_, r)
        | Command::Audit(_, r) => drop(r.send(Err(err()))),
        Command::Replay(_, _, r) | Command::Redrive(_, r) => drop(r.send(Err(err()))),
        Command::Prune(_, r) | Command::PruneStates(_, r) => drop(r.send(Err(err()))),
        Command::RedriveStep(_, _, r) => drop(r.send(Err(err()))),
        Command::Expire(_, r) | Command::ExpireQuarantine(_, r) => drop(r.send(Err(err()))),
    }
}

/// Deletes the finished events of one scan step, with their routing records. Finished: routed,
/// unrouted or dropped, every delivery delivered (or dropped: stale, skipped) and every plugin
/// stage done; an event with a dead letter or work still waiting is kept whatever its age. The newest event is never
/// deleted, so `seq` (rowid) never goes back to a number intake has already passed.
fn expire(tx: &Transaction<'_>, scan: ExpireScan) -> rusqlite::Result<ExpiredEvents> {
    let rows: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT seq, received_at FROM events \
             WHERE seq > ?1 AND seq < (SELECT max(seq) FROM events) ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![scan.after_seq, scan.limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut finished = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM routings WHERE seq = ?1 AND status IN (?2, ?3, ?4)) \
           AND NOT EXISTS (SELECT 1 FROM deliveries \
                           WHERE event_seq = ?1 AND status NOT IN ('delivered', 'dropped')) \
           AND NOT EXISTS (SELECT 1 FROM route_runs WHERE event_seq = ?1 AND status <> 'done')",
    )?;
    let mut deleted = 0;
    let mut last_seen = None;
    for &(seq, received_at) in &rows {
        // Rows are in arrival order, so the first one inside the retention ends the pass.
        if received_at >= scan.cutoff_ms {
            return Ok(ExpiredEvents {
                deleted,
                resume_after: None,
            });
        }
        last_seen = Some(seq);
        let done: bool = finished.query_row(
            params![
                seq,
                EventStatus::Routed.as_str(),
                EventStatus::Unrouted.as_str(),
                EventStatus::Dropped.as_str()
            ],
            |r| r.get(0),
        )?;
        if done {
            for delete in [
                "DELETE FROM deliveries WHERE event_seq = ?1",
                "DELETE FROM route_runs WHERE event_seq = ?1",
                "DELETE FROM routings WHERE seq = ?1",
                "DELETE FROM subject_keys WHERE seq = ?1",
                "DELETE FROM events WHERE seq = ?1",
            ] {
                tx.prepare_cached(delete)?.execute([seq])?;
            }
            deleted += 1;
        }
    }
    let full = rows.len() >= usize::try_from(scan.limit).unwrap_or(usize::MAX);
    Ok(ExpiredEvents {
        deleted,
        resume_after: last_seen.filter(|_| full),
    })
}

/// Deletes the quarantined bodies of one scan step that were last seen before the cutoff.
/// Rows are in arrival order, so the first one that arrived inside the retention ends the pass
/// (every later row arrived later still); an older row whose body came again since is kept.
fn expire_quarantine(tx: &Transaction<'_>, scan: ExpireScan) -> rusqlite::Result<ExpiredEvents> {
    let rows: Vec<(i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, received_at, coalesce(last_seen_at, received_at) FROM quarantine \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![scan.after_seq, scan.limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut deleted = 0;
    let mut last_seen = None;
    for &(id, received_at, seen_at) in &rows {
        if received_at >= scan.cutoff_ms {
            return Ok(ExpiredEvents {
                deleted,
                resume_after: None,
            });
        }
        last_seen = Some(id);
        if seen_at < scan.cutoff_ms {
            tx.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?
                .execute([id])?;
            deleted += 1;
        }
    }
    let full = rows.len() >= usize::try_from(scan.limit).unwrap_or(usize::MAX);
    Ok(ExpiredEvents {
        deleted,
        resume_after: last_seen.filter(|_| full),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::event;
    use super::*;

    /// The command's own error came back: its table is gone (`no such table`).
    fn failed_alone<T: std::fmt::Debug>(answer: oneshot::Receiver<Result<T, StoreError>>) {
        let got = answer.blocking_recv().expect("answered");
        assert!(
            matches!(&got, Err(StoreError::Write(m)) if m.contains("no such")),
            "{got:?}"
        );
    }

    #[test]
    fn a_failing_admin_or_retention_command_fails_alone_and_the_ingests_beside_it_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("g.db")).expect("opens");
        conn.execute_batch(schema::PRAGMAS).expect("pragmas");
        schema::apply(&conn).expect("schema");
        // Tables only replay, redrive and retention touch: those fail, ingest does not.
        conn.execute_batch("DROP VIEW event_states; DROP TABLE routings; DROP TABLE deliveries;")
            .expect("breaks the routing tables");
        let (keys, _) = DedupIndex::load(&mut conn, 0).expect("index");
        let mut index = Seen {
            keys,
            states: ObjectStates::default(),
        };
        // ... and the saved dedup entries, which only pruning deletes from.
        conn.execute_batch("DROP TABLE dedup_keys;")
            .expect("breaks the saved dedup entries");

        let (a, a_answer) = oneshot::channel();
        let (replay, replay_answer) = oneshot::channel();
        let (redrive, redrive_answer) = oneshot::channel();
        let (expire, expire_answer) = oneshot::channel();
        let (prune, prune_answer) = oneshot::channel();
        let (b, b_answer) = oneshot::channel();
        let scan = ExpireScan {
            cutoff_ms: unix_ms(),
            after_seq: 0,
            limit: 10,
        };
        let batch = vec![
            Command::Ingest(event("a"), EventKeys::of(&event("a")), a),
            Command::Replay(EventFilter::default(), 10, replay),
            Command::RedriveStep(Bulk::DeadDeliveries, 0, redrive),
            Command::Expire(scan, expire),
            Command::Prune(unix_ms(), prune),
            Command::Ingest(event("b"), EventKeys::of(&event("b")), b),
        ];
        let applied = apply(&mut conn, &mut index, &batch);
        assert!(applied.is_ok(), "the batch commits: {:?}", applied.err());
        reply_all(batch.into_iter(), applied);

        let stored = |answer: oneshot::Receiver<Result<IngestOutcome, StoreError>>| {
            answer.blocking_recv().expect("answered")
        };
        assert!(matches!(
            stored(a_answer),
            Ok(IngestOutcome::Stored { seq: 1 })
        ));
        assert!(matches!(
            stored(b_answer),
            Ok(IngestOutcome::Stored { seq: 2 })
        ));
        failed_alone(replay_answer);
        failed_alone(redrive_answer);
        failed_alone(expire_answer);
        failed_alone(prune_answer);
        let events: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .expect("counts");
        assert_eq!(events, 2, "both ingests committed");
        assert!(
            index.keys.contains(&index_key("ledger", "a")),
            "the index learned the commit"
        );
    }
}
