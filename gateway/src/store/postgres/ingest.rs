//! Group commit on PostgreSQL: concurrent ingests on a replica share one transaction and one
//! multi-row statement (arrays through `unnest`), because every transaction costs a WAL flush
//! and a flush is what limits a durable write path (../shared/scaleout.md: 447 events/s for one
//! event per transaction against 13.3k/s for 64 in one statement, one client).
//!
//! Dedup is the database's: `INSERT ... ON CONFLICT DO NOTHING` on the unique (source, dedup
//! key) decides, so replicas racing on one key store it once (a conflicting insert waits for
//! the other transaction and then skips). Rows are written in key order, so two batches that
//! share keys lock them in the same order and cannot deadlock on each other. Every request in
//! a batch is answered only after its commit, with the same error if it failed.
//!
//! This module never decides what a key is (the provider stage did) and never reads events.

use super::super::envelope_cut::stored_envelope;
use super::super::event_filter::search_key;
use super::super::work::{ClaimedEvent, StoredEvent};
use super::super::{IngestOutcome, NewEvent, StoreError};
use super::PgPool;
use super::claims::Claims;
use super::membership::AckWriters;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// Most events one transaction carries: past this a batch is long enough that its requests
/// wait for its size more than for the flush.
pub(super) const MAX_BATCH: usize = 128;

/// One ingest waiting for its batch's commit.
#[derive(Debug)]
pub(super) struct IngestRequest {
    pub(super) event: NewEvent,
    pub(super) reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

/// The object-state upsert: a row comes back (and the event is new) unless the stored latest
/// state is this one and arrived within this delivery's retry window.
const CLAIM_STATES: &str = "\
INSERT INTO object_states (source, object, state, seen, expires) \
SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int8[], $5::int8[]) \
ON CONFLICT (source, object) DO UPDATE \
   SET state = excluded.state, seen = excluded.seen, expires = excluded.expires \
 WHERE object_states.state <> excluded.state \
    OR excluded.seen - object_states.seen >= excluded.expires - excluded.seen \
RETURNING source, object";

/// The part both ingest statements share, between their `input` and their `work`: the dedup
/// insert, then the events of the keys it found absent, in arrival order, and the batch's one
/// row of subject hashes and one of dedup-key hashes for the admin search (migrations 8 and 9:
/// one row per batch, not an index entry per event), both from one join of the stored events
/// back to their input (`hashed`).
macro_rules! dedup_then_store {
    () => {
        "), fresh AS ( \
             INSERT INTO dedup_keys (source, dedup_key, seen) \
             SELECT source, dedup_key, received_at FROM input ORDER BY ord \
             ON CONFLICT DO NOTHING \
             RETURNING source, dedup_key \
         ), stored AS ( \
             INSERT INTO events (source, dedup_key, event_type, envelope, raw_body, headers, \
                                 received_at, data_at, data_from, data_len) \
             SELECT i.source, i.dedup_key, i.event_type, i.envelope, i.raw_body, i.headers, \
                    i.received_at, i.data_at, i.data_from, i.data_len \
               FROM input i JOIN fresh f USING (source, dedup_key) \
              ORDER BY i.received_at, i.ord \
             RETURNING seq, source, dedup_key \
         ), hashed AS ( \
             SELECT s.seq, i.subject_hash, i.key_hash \
               FROM stored s JOIN input i USING (source, dedup_key) \
         ), subjects AS ( \
             INSERT INTO event_subjects (first_seq, last_seq, seqs, hashes) \
             SELECT min(seq), max(seq), array_agg(seq ORDER BY seq), \
                    array_agg(subject_hash ORDER BY seq) \
               FROM hashed WHERE subject_hash IS NOT NULL \
             HAVING count(*) > 0 \
         ), ids AS ( \
             INSERT INTO event_ids (first_seq, last_seq, seqs, hashes) \
             SELECT min(seq), max(seq), array_agg(seq ORDER BY seq), \
                    array_agg(key_hash ORDER BY seq) \
               FROM hashed \
             HAVING count(*) > 0 \
         ), "
    };
}

/// Dedup and store in one statement: the keys that were absent come back from the first
/// insert, only their events are written, and each stored event gets its work row (what the
/// replicas claim it through) in the same statement: claimed by this replica ($11 its id, $12
/// the lease's end) when it hands the events to its own intake, unclaimed (NULL, 0) otherwise.
/// $13: the hashes of the events' subjects (`event_filter::search_key`; NULL: none); $14: of
/// their dedup keys.
///
/// A batch where some event has an ordering key runs [`STORE_EVENTS_WITH_SUBJECTS`] instead:
/// the same statement, whose work rows carry each event's ordering key too (it holds its
/// subject's later deliveries until it is routed: docs/ordering.md). Batches without one run
/// this text, whose work rows need no join back to the input.
const STORE_EVENTS: &str = concat!(
    "WITH input AS ( \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
                              $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], \
                              $13::int8[], $14::int8[]) \
             WITH ORDINALITY AS i(source, dedup_key, event_type, envelope, raw_body, headers, \
                                  received_at, data_at, data_from, data_len, subject_hash, \
                                  key_hash, ord) ",
    dedup_then_store!(),
    "work AS ( \
         INSERT INTO event_work (seq, lease_owner, available_at) SELECT seq, $11, $12 FROM stored \
     ) \
     SELECT seq, source, dedup_key FROM stored"
);

/// [`STORE_EVENTS`] with the ordering keys: $15 subjects (NULL: none), $16 provider times,
/// $17 their tie-breakers, in the input's order.
const STORE_EVENTS_WITH_SUBJECTS: &str = concat!(
    "WITH input AS ( \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
                              $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], \
                              $13::int8[], $14::int8[], $15::text[], $16::int8[], \
                              $17::int8[]) \
             WITH ORDINALITY AS i(source, dedup_key, event_type, envelope, raw_body, headers, \
                                  received_at, data_at, data_from, data_len, subject_hash, \
                                  key_hash, subject, order_at, order_next, ord) ",
    dedup_then_store!(),
    "work AS ( \
         INSERT INTO event_work (seq, lease_owner, available_at, subject, order_at, order_next) \
         SELECT s.seq, $11, $12, i.subject, i.order_at, i.order_next \
           FROM stored s JOIN input i USING (source, dedup_key) \
     ) \
     SELECT seq, source, dedup_key FROM stored"
);

/// Wakes the replicas' intake (each LISTENs; see `control.rs`). Delivered at commit.
const ANNOUNCE_WORK: &str = "SELECT pg_notify('gateway_work', '')";

/// At most one announcement per this many milliseconds per replica: a notifying commit takes
/// a lock every other notifying commit of the cluster waits for, and the replica that stored
/// the events wakes its own intake without the database anyway; the others only need to hear
/// that there is work now and then (and they poll too). Only batches written unclaimed (the
/// handoff was full) announce: the others cannot take claimed rows.
const ANNOUNCE_EVERY_MS: i64 = 50;

/// How a replica tells intake that it stored events.
#[derive(Debug)]
pub(super) struct Announcer {
    /// This replica's intake, woken after every commit that stored an event.
    pub(super) local: Arc<Notify>,
    /// When the other replicas were last told (unix ms).
    last_ms: AtomicI64,
}

impl Announcer {
    pub(super) fn new(local: Arc<Notify>) -> Self {
        Self {
            local,
            last_ms: AtomicI64::new(0),
        }
    }

    /// Whether this commit should announce to the other replicas (and, if so, counts it done).
    fn due(&self) -> bool {
        let now = super::super::unix_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        now - last >= ANNOUNCE_EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Starts the batch tasks (the budget of `writers`) on the current runtime; each takes what
/// is queued (up to [`MAX_BATCH`]) whenever it is free and at least `spacing` after its
/// previous batch started, so batches grow with load and a request that finds its writer idle
/// waits for nobody. The spacing matters at moderate rates only: there a commit takes less
/// than it, and without it two writers split 10,000 events/s into commits of 5 or 6 events,
/// each paying the database a statement start and a WAL flush; under load a commit outlasts
/// the spacing. Only the writers `writers` lets commit take batches: the others
/// wait while more replicas share the database (see `membership.rs`).
pub(super) fn spawn_writers(
    pool: PgPool,
    metrics: Metrics,
    writers: Arc<AckWriters>,
    spacing: std::time::Duration,
    announcer: Arc<Announcer>,
    claims: Arc<Claims>,
) -> mpsc::Sender<IngestRequest> {
    let (tx, rx) = mpsc::channel::<IngestRequest>(16 * 1024);
    let rx = Arc::new(Mutex::new(rx));
    for index in 0..writers.budget() {
        let rx = Arc::clone(&rx);
        let pool = pool.clone();
        let metrics = metrics.clone();
        let announcer = Arc::clone(&announcer);
        let claims = Arc::clone(&claims);
        let writers = Arc::clone(&writers);
        let open = tx.downgrade();
        tokio::spawn(async move {
            let mut carried: Vec<IngestRequest> = Vec::new();
            loop {
                if carried.is_empty() && !wait_turn(&writers, index, &open).await {
                    return;
                }
                let Some(batch) = next_batch(&rx, std::mem::take(&mut carried)).await else {
                    return;
                };
                let started = std::time::Instant::now();
                let size = batch.len();
                let (now, later) = split_batch(batch);
                carried = later;
                let error = write_batch(&pool, now, &announcer, &claims).await;
                super::batch_done(&metrics, size, started.elapsed(), error.as_deref());
                // Spaced batches: see `PgOptions::ack_spacing`. What queues meanwhile waits
                // for this writer or takes another one that is free.
                if let Some(rest) = spacing.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        });
    }
    tx
}

/// Waits until writer `index` may take batches; false once the store is gone (every sender
/// dropped), so a writer parked for good still ends and lets the pool go.
async fn wait_turn(
    writers: &AckWriters,
    index: usize,
    open: &mpsc::WeakSender<IngestRequest>,
) -> bool {
    loop {
        if tokio::time::timeout(PARKED_CHECK, writers.turn(index))
            .await
            .is_ok()
        {
            return true;
        }
        if open.upgrade().is_none() {
            return false;
        }
    }
}

/// How often a writer waiting for its turn checks that the store still exists.
const PARKED_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What a writer does next: what it carried over first, then whatever is queued. `None` once
/// every sender is gone and nothing is left. A writer that carries requests never waits for
/// the queue: another writer may be holding it while it waits for a request, and the carried
/// ones must not wait behind that.
async fn next_batch(
    rx: &Mutex<mpsc::Receiver<IngestRequest>>,
    mut batch: Vec<IngestRequest>,
) -> Option<Vec<IngestRequest>> {
    let mut rx = if batch.is_empty() {
        let mut rx = rx.lock().await;
        batch.push(rx.recv().await?);
        rx
    } else {
        match rx.try_lock() {
            Ok(rx) => rx,
            Err(_) => return Some(batch),
        }
    };
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Takes out of a batch the deliveries of an object that an earlier request of the same batch
/// is about: whether one is a retry depends on what the earlier one stores, so it goes in the
/// writer's next batch, after this one's commit.
fn split_batch(batch: Vec<IngestRequest>) -> (Vec<IngestRequest>, Vec<IngestRequest>) {
    let mut objects = std::collections::HashSet::new();
    let (mut now, mut later) = (Vec::with_capacity(batch.len()), Vec::new());
    for request in batch {
        match &request.event.object_state {
            Some(claim) if !objects.insert((request.event.source.clone(), claim.object)) => {
                later.push(request);
            }
            _ => now.push(request),
        }
    }
    (now, later)
}

/// Writes one batch and answers every request in it; the error the batch failed with, if it
/// did.
async fn write_batch(
    pool: &PgPool,
    batch: Vec<IngestRequest>,
    announcer: &Announcer,
    claims: &Claims,
) -> Option<String> {
    if batch.is_empty() {
        return None;
    }
    // Equal keys in one batch: the first one is written, the others are its duplicates.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut firsts: Vec<&NewEvent> = Vec::with_capacity(batch.len());
    for (i, request) in batch.iter().enumerate() {
        let key = (
            request.event.source.as_str(),
            request.event.dedup_key.as_str(),
        );
        if let std::collections::hash_map::Entry::Vacant(slot) = first_of.entry(key) {
            slot.insert(i);
            firsts.push(&request.event);
        }
    }
    let firsts = &firsts;
    let handed_off = claims.handoff.reserve(firsts.len());
    let lease = handed_off.then(|| {
        let until = super::super::unix_ms().saturating_add(claims.lease_ms);
        (claims.owner.as_str(), until)
    });
    let result = super::with_retries(pool, |mut client| {
        Box::pin(async move {
            let r = store(&mut client, firsts, announcer, lease).await;
            (client, r)
        })
    })
    .await;
    match result {
        Ok(stored) => {
            if handed_off {
                claims.hand_off(firsts.len(), claimed_events(firsts, &stored));
            } else if !stored.is_empty() {
                claims.handoff.want_scan();
            }
            if !stored.is_empty() {
                announcer.local.notify_one();
            }
            // Each stored row goes to the request that carried its key; every other request
            // (a copy in this batch, or a key the database already had) is a duplicate.
            let mut seqs: Vec<Option<i64>> = vec![None; batch.len()];
            for (source, key, seq) in &stored {
                if let Some(&i) = first_of.get(&(source.as_str(), key.as_str())) {
                    seqs[i] = Some(*seq);
                }
            }
            for (request, seq) in batch.into_iter().zip(seqs) {
                let outcome = seq.map_or(IngestOutcome::Duplicate, |seq| IngestOutcome::Stored {
                    seq,
                });
                let _ = request.reply.send(Ok(outcome));
            }
            None
        }
        Err(e) => {
            if handed_off {
                claims.handoff.cancel(firsts.len());
            }
            let message = e.to_string();
            for request in batch {
                let _ = request.reply.send(Err(StoreError::Write(message.clone())));
            }
            Some(message)
        }
    }
}

/// The stored events' (source, dedup key, seq).
type StoredSeqs = Vec<(String, String, i64)>;

/// The stored events as intake gets them, in seq order (the order a claim hands them out).
fn claimed_events(events: &[&NewEvent], stored: &StoredSeqs) -> Vec<ClaimedEvent> {
    let by_key: HashMap<(&str, &str), &NewEvent> = events
        .iter()
        .map(|e| ((e.source.as_str(), e.dedup_key.as_str()), *e))
        .collect();
    let mut claimed: Vec<ClaimedEvent> = stored
        .iter()
        .filter_map(|(source, key, seq)| {
            let e = by_key.get(&(source.as_str(), key.as_str()))?;
            Some(ClaimedEvent {
                event: StoredEvent {
                    seq: *seq,
                    id: e.dedup_key.clone(),
                    source: e.source.clone(),
                    event_type: e.event_type.clone(),
                    envelope: e.envelope.clone(),
                },
                replay: false,
            })
        })
        .collect();
    claimed.sort_by_key(|c| c.event.seq);
    claimed
}

/// One transaction: the object states, then the events whose state was new and whose key was
/// absent, their work rows claimed by `lease` (owner, end) when it is given. Returns the stored
/// events' keys and sequence numbers.
///
/// A batch with no object state to claim and nothing to announce is one statement, and one
/// statement is its own transaction: it is sent alone, without BEGIN and COMMIT, which were
/// two of its three round trips (each a wake-up of this process and of the server's).
async fn store(
    client: &mut deadpool_postgres::Client,
    events: &[&NewEvent],
    announcer: &Announcer,
    lease: Option<(&str, i64)>,
) -> Result<StoredSeqs, tokio_postgres::Error> {
    // Rows this replica claimed are nobody else's business; unclaimed ones are announced.
    let announce = lease.is_none() && announcer.due();
    if !announce && events.iter().all(|e| e.object_state.is_none()) {
        let mut writing = events.to_vec();
        return insert_events(&*client, &mut writing, lease).await;
    }
    let tx = client.transaction().await?;
    let mut claimed: Vec<&NewEvent> = events
        .iter()
        .copied()
        .filter(|e| e.object_state.is_some())
        .collect();
    let mut new_objects = std::collections::HashSet::new();
    if !claimed.is_empty() {
        claimed.sort_by(|a, b| {
            (&a.source, a.object_state.map(|c| c.object))
                .cmp(&(&b.source, b.object_state.map(|c| c.object)))
        });
        let mut sources = Vec::with_capacity(claimed.len());
        let mut objects = Vec::with_capacity(claimed.len());
        let mut states = Vec::with_capacity(claimed.len());
        let mut seen = Vec::with_capacity(claimed.len());
        let mut expires = Vec::with_capacity(claimed.len());
        for e in &claimed {
            if let Some(claim) = e.object_state {
                sources.push(e.source.as_str());
                objects.push(claim.object.to_vec());
                states.push(claim.state.to_vec());
                seen.push(e.received_at_ms);
                expires.push(e.received_at_ms.saturating_add(claim.retry_window_ms));
            }
        }
        let statement = tx.prepare_cached(CLAIM_STATES).await?;
        for row in tx
            .query(&statement, &[&sources, &objects, &states, &seen, &expires])
            .await?
        {
            let source: String = row.get(0);
            let object: Vec<u8> = row.get(1);
            new_objects.insert((source, object));
        }
    }
    let mut writing: Vec<&NewEvent> = events
        .iter()
        .copied()
        .filter(|e| match e.object_state {
            None => true,
            Some(claim) => new_objects.contains(&(e.source.clone(), claim.object.to_vec())),
        })
        .collect();
    let stored = insert_events(&tx, &mut writing, lease).await?;
    if announce && !stored.is_empty() {
        tx.execute(&tx.prepare_cached(ANNOUNCE_WORK).await?, &[])
            .await?;
    }
    tx.commit().await?;
    Ok(stored)
}

/// The dedup insert and the events' rows ([`STORE_EVENTS`]), in key order.
async fn insert_events(
    client: &impl deadpool_postgres::GenericClient,
    writing: &mut [&NewEvent],
    lease: Option<(&str, i64)>,
) -> Result<StoredSeqs, tokio_postgres::Error> {
    let mut stored = StoredSeqs::new();
    if writing.is_empty() {
        return Ok(stored);
    }
    writing.sort_by(|a, b| (&a.source, &a.dedup_key).cmp(&(&b.source, &b.dedup_key)));
    let columns = Columns::of(writing);
    let envelopes: Vec<&str> = columns.envelope.iter().map(AsRef::as_ref).collect();
    let owner = lease.map(|(owner, _)| owner);
    let until = lease.map_or(0, |(_, until)| until);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &columns.source,
        &columns.dedup_key,
        &columns.event_type,
        &envelopes,
        &columns.raw_body,
        &columns.headers,
        &columns.received_at,
        &columns.data_at,
        &columns.data_from,
        &columns.data_len,
        &owner,
        &until,
        &columns.subject_hash,
        &columns.key_hash,
    ];
    let keys = OrderColumns::of(writing);
    let sql = match &keys {
        Some(keys) => {
            params.extend([
                &keys.subject as &(dyn tokio_postgres::types::ToSql + Sync),
                &keys.order_at,
                &keys.order_next,
            ]);
            STORE_EVENTS_WITH_SUBJECTS
        }
        None => STORE_EVENTS,
    };
    let statement = client.prepare_cached(sql).await?;
    let rows = client.query(&statement, &params).await?;
    for row in rows {
        stored.push((row.get(1), row.get(2), row.get(0)));
    }
    Ok(stored)
}

/// The batch's ordering keys as arrays (see [`STORE_EVENTS_WITH_SUBJECTS`]).
struct OrderColumns<'a> {
    subject: Vec<Option<&'a str>>,
    order_at: Vec<i64>,
    order_next: Vec<i64>,
}

impl<'a> OrderColumns<'a> {
    /// `None` when no event of the batch has a subject.
    fn of(events: &[&'a NewEvent]) -> Option<Self> {
        if events.iter().all(|e| e.order.is_none()) {
            return None;
        }
        let order = |e: &&'a NewEvent| e.order.as_ref();
        Some(Self {
            subject: events
                .iter()
                .map(|e| order(e).map(|o| o.subject.as_str()))
                .collect(),
            order_at: events
                .iter()
                .map(|e| order(e).map_or(0, |o| o.provider_ms))
                .collect(),
            order_next: events
                .iter()
                .map(|e| order(e).map_or(0, |o| o.provider_next_ms))
                .collect(),
        })
    }
}

/// A batch of events as one array per column, for `unnest`.
struct Columns<'a> {
    source: Vec<&'a str>,
    dedup_key: Vec<&'a str>,
    event_type: Vec<&'a str>,
    /// Envelopes as rows keep them (see `envelope_cut.rs`): without their `data` where it is a
    /// verbatim part of the raw body.
    envelope: Vec<std::borrow::Cow<'a, str>>,
    raw_body: Vec<&'a [u8]>,
    headers: Vec<&'a str>,
    received_at: Vec<i64>,
    data_at: Vec<Option<i64>>,
    data_from: Vec<Option<i64>>,
    data_len: Vec<Option<i64>>,
    /// `event_filter::search_key` of each event's subject; `None`: it has none.
    subject_hash: Vec<Option<i64>>,
    /// `event_filter::search_key` of each event's dedup key.
    key_hash: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(events: &[&'a NewEvent]) -> Self {
        let n = events.len();
        let mut c = Columns {
            source: Vec::with_capacity(n),
            dedup_key: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            envelope: Vec::with_capacity(n),
            raw_body: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            received_at: Vec::with_capacity(n),
            data_at: Vec::with_capacity(n),
            data_from: Vec::with_capacity(n),
            data_len: Vec::with_capacity(n),
            subject_hash: Vec::with_capacity(n),
            key_hash: Vec::with_capacity(n),
        };
        for e in events {
            let (envelope, span) = stored_envelope(e);
            c.source.push(&e.source);
            c.dedup_key.push(&e.dedup_key);
            c.event_type.push(&e.event_type);
            c.envelope.push(envelope);
            c.raw_body.push(&e.raw_body);
            c.headers.push(&e.headers);
            c.received_at.push(e.received_at_ms);
            c.data_at.push(span.map(|s| s.at));
            c.data_from.push(span.map(|s| s.from));
            c.data_len.push(span.map(|s| s.len));
            c.subject_hash.push(e.subject.as_deref().map(search_key));
            c.key_hash.push(search_key(&e.dedup_key));
        }
        c
    }
}
