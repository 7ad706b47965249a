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
    AttemptDone, ClaimedEvent, DueDelivery, DueRouteRun, Processed, StoredEvent,
};
use super::attempts::AttemptBatches;
use super::combine::Combiner;
use super::handoff::Handoff;
use super::ordering::claim_heads;
use super::results::write_results;
use super::{PgPool, PooledClient, StoreError, with_retries};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Events this replica's ingest stored already claimed, for its own intake.
    pub(super) handoff: Handoff,
    attempts: AttemptBatches,
    /// Results that are all first routings, written in shared batches (see
    /// [`FIRST_ROUTINGS_SPACING`]); the answer is how many of a caller's results lost their
    /// claim, or `None` when a routing was already recorded and the caller must take the
    /// general path.
    first_routings: Combiner<Arc<Vec<Processed>>, Option<usize>>,
}

/// Least time between the starts of two batches of first routings. Routing completes chunks of
/// a few dozen events each, and writing each in its own commit made completions more than half
/// of the commits under load (docs/performance.md, "Routing results in shared commits"); spaced,
/// a batch carries what arrived in the meantime. Nobody waits for these to be answered (the
/// events were acked, and their first delivery attempts made, before), so a few milliseconds
/// cost nothing but routing slots held that much longer.
const FIRST_ROUTINGS_SPACING: Duration = Duration::from_millis(4);

/// Most routing chunks in one batch of first routings (each holds up to 32 results).
const FIRST_ROUTINGS_BATCH: usize = 16;

/// Most replicas the spacing of first routings grows with (32 ms at 8).
const MOST_SPACED_REPLICAS: u32 = 8;

/// The spacing of a replica's batches of first routings when `replicas` share the database:
/// [`FIRST_ROUTINGS_SPACING`] for each. Each replica routes its share of the traffic, so the
/// cluster then commits about as many of these batches as one replica would, each about as
/// full, whatever the count: the reasoning of the ack writers' budget (membership.rs). Spaced
/// the same as one replica, two replicas made twice the completion commits, each half as full.
pub(super) fn first_routings_spacing(replicas: usize) -> Duration {
    let counted = u32::try_from(replicas).unwrap_or(u32::MAX);
    FIRST_ROUTINGS_SPACING * counted.clamp(1, MOST_SPACED_REPLICAS)
}

/// How many events' results start a batch of first routings without waiting for the
/// spacing: half of the replica's routing slots. Each routed event holds its slot until its
/// result is written, so results waiting for the spacing starve the intake of slots: one
/// replica spaced as one of 8 (32 ms) with the default 256 slots routed about 9,000 events a
/// second while it acked 29,000, at most its slots per spacing and commit. With half of them
/// waiting, a batch is as full as waiting could make it before the intake runs dry.
pub(super) fn first_routings_fill(routing_slots: usize) -> usize {
    (routing_slots / 2).max(1)
}

const CLAIM_EVENTS: &str = "\
WITH picked AS ( \
    SELECT seq FROM event_work \
     WHERE available_at <= $1 \
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
     WHERE status = 'pending' AND subject IS NULL AND next_attempt_at <= $1 \
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
     WHERE status = 'retry' AND next_attempt_at <= $1 \
     ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED \
), claimed AS ( \
    UPDATE route_runs r SET lease_owner = $3, next_attempt_at = $4 \
      FROM picked WHERE r.id = picked.id \
    RETURNING r.id, r.route, r.attempts, r.event_seq \
) \
SELECT c.id, c.route, c.attempts, e.seq, e.dedup_key, e.source, e.event_type, e.envelope \
  FROM claimed c JOIN stored_events e ON e.seq = c.event_seq ORDER BY c.id";

/// Ends the claims on routed events: only the rows still this replica's come back, with the
/// ordering key their event holds its subject by (a route run left waiting for a plugin retry
/// takes it over).
const FINISH_EVENTS: &str = "DELETE FROM event_work WHERE seq = ANY($1) AND lease_owner = $2 \
     RETURNING seq, subject, order_at, order_next";
const HOLDS_ROUTE_RUNS: &str = "SELECT id FROM route_runs \
     WHERE id = ANY($1) AND lease_owner = $2 AND status = 'retry' FOR UPDATE";

impl Claims {
    /// `handoff`: how many stored events ingest may hand to intake directly (0: none; every
    /// event is then claimed through the table). `routing_slots`: how many events this
    /// replica routes at once ([`first_routings_fill`]).
    pub(super) fn new(lease_ms: i64, handoff: usize, routing_slots: usize) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let random: u32 = rand::random();
        Self {
            owner: format!("{host}:{}:{random:08x}", std::process::id()),
            lease_ms,
            held: Mutex::default(),
            handoff: Handoff::new(handoff),
            attempts: AttemptBatches::default(),
            first_routings: Combiner::new(FIRST_ROUTINGS_BATCH, FIRST_ROUTINGS_SPACING)
                .with_fill(first_routings_fill(routing_slots), |chunk| chunk.len()),
        }
    }

    /// Spaces this replica's batches of first routings for `replicas` sharing the database
    /// ([`first_routings_spacing`]); returns the spacing.
    pub(super) fn set_replicas(&self, replicas: usize) -> Duration {
        let spacing = first_routings_spacing(replicas);
        self.first_routings.set_spacing(spacing);
        spacing
    }

    /// The spacing of this replica's batches of first routings now.
    #[cfg(test)]
    pub(super) fn results_spacing(&self) -> Duration {
        self.first_routings.spacing()
    }

    /// What the results queued for a batch of first routings weigh before it starts at once.
    #[cfg(test)]
    pub(super) fn results_fill(&self) -> usize {
        self.first_routings.fill()
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

    /// Claims rows with `sql` (parameters: now, limit, owner, lease end), turns each into `T`
    /// and keeps their ids (in `kind`'s set) for renewal.
    ///
    /// A row this replica holds is due again only if its renewal was late; the claim then
    /// takes it again (it stays this replica's, one lease later) and it is not handed out a
    /// second time here, while its work runs. The held rows are left out here rather than in
    /// the statement: a `NOT (id = ANY(held))` filter was compared against every row the
    /// claim's scan passed, and made each claim cost about a millisecond under load.
    async fn claim<T>(
        &self,
        pool: &PgPool,
        sql: &'static str,
        (now_ms, limit): (i64, u32),
        kind: fn(&mut Held) -> &mut HashSet<i64>,
        row: fn(&tokio_postgres::Row) -> (i64, T),
    ) -> Result<Vec<T>, StoreError> {
        let until = now_ms.saturating_add(self.lease_ms);
        let (owner, until) = (&self.owner, &until);
        let limit = i64::from(limit);
        let rows = with_retries(pool, |c| {
            Box::pin(async move {
                let r = match c.prepare_cached(sql).await {
                    Ok(statement) => c.query(&statement, &[&now_ms, &limit, owner, until]).await,
                    Err(e) => Err(e),
                };
                (c, r)
            })
        })
        .await?;
        Ok(self.held(|h| {
            let held = kind(h);
            rows.iter()
                .map(row)
                .filter_map(|(id, claimed)| held.insert(id).then_some(claimed))
                .collect()
        }))
    }

    /// Events to route, at most `limit`: first the ones this replica's ingest handed off,
    /// then, when a scan is due (see `handoff.rs`), claimable rows from the table.
    pub(super) async fn claim_events(
        &self,
        pool: &PgPool,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let mut claimed = self
            .handoff
            .take(usize::try_from(limit).unwrap_or(usize::MAX));
        let room = u32::try_from(claimed.len()).map_or(0, |n| limit.saturating_sub(n));
        if room == 0 || !self.handoff.scan_due(now_ms) {
            return Ok(claimed);
        }
        let row = |r: &tokio_postgres::Row| {
            let event = StoredEvent {
                seq: r.get(0),
                id: r.get(2),
                source: r.get(3),
                event_type: r.get(4),
                envelope: r.get(5),
            };
            (
                event.seq,
                ClaimedEvent {
                    event,
                    replay: r.get(1),
                },
            )
        };
        match self
            .claim(pool, CLAIM_EVENTS, (now_ms, room), |h| &mut h.events, row)
            .await
        {
            Ok(found) => {
                if found.len() >= usize::try_from(room).unwrap_or(usize::MAX) {
                    // The claim was full: more may be waiting.
                    self.handoff.want_scan();
                }
                claimed.extend(found);
                Ok(claimed)
            }
            Err(e) if claimed.is_empty() => Err(e),
            // The handed-off events are this replica's already: route them, scan next time.
            Err(_) => {
                self.handoff.want_scan();
                Ok(claimed)
            }
        }
    }

    /// Events ingest stored already claimed by this replica (`reserved` places were promised
    /// to their batch): held, so renewals keep them, and queued for intake.
    pub(super) fn hand_off(&self, reserved: usize, events: Vec<ClaimedEvent>) {
        self.held(|h| h.events.extend(events.iter().map(|e| e.event.seq)));
        self.handoff.fill(reserved, events);
    }

    pub(super) async fn claim_due_deliveries(
        &self,
        pool: &PgPool,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let row = |r: &tokio_postgres::Row| {
            let due = DueDelivery {
                id: r.get(0),
                event_seq: r.get(1),
                route: r.get(2),
                destination: r.get(3),
                webhook_id: r.get(4),
                envelope: r.get(5),
                attempts: u32::try_from(r.get::<_, i32>(6)).unwrap_or(0),
                stale: false,
            };
            (due.id, due)
        };
        let mut due = self
            .claim(
                pool,
                CLAIM_DELIVERIES,
                (now_ms, limit),
                |h| &mut h.deliveries,
                row,
            )
            .await?;
        due.extend(self.claim_ordered(pool, now_ms, limit).await?);
        Ok(due)
    }

    /// The next delivery of each subject of ordered destinations that is due (ordering.rs).
    async fn claim_ordered(
        &self,
        pool: &PgPool,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let held = self.held_ids(|h| &h.deliveries);
        let until = now_ms.saturating_add(self.lease_ms);
        let (owner, held) = (&self.owner, &held);
        let limit = i64::from(limit);
        let due = with_retries(pool, |mut c| {
            Box::pin(async move {
                let r = claim_heads(&mut c, (now_ms, limit), (owner, until), held).await;
                (c, r)
            })
        })
        .await?;
        self.held(|h| h.deliveries.extend(due.iter().map(|d| d.id)));
        Ok(due)
    }

    pub(super) async fn claim_due_route_runs(
        &self,
        pool: &PgPool,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRouteRun>, StoreError> {
        let row = |r: &tokio_postgres::Row| {
            let due = DueRouteRun {
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
            };
            (due.id, due)
        };
        self.claim(
            pool,
            CLAIM_ROUTE_RUNS,
            (now_ms, limit),
            |h| &mut h.route_runs,
            row,
        )
        .await
    }

    /// Records routing results for the claims still held, in one transaction; returns how
    /// many results were not written because their claim was lost. First routings share their
    /// transaction with other chunks' ([`Self::first_routings`]).
    pub(super) async fn complete(
        &self,
        pool: &PgPool,
        processed: &Arc<Vec<Processed>>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let owner = &self.owner;
        let first = if processed
            .iter()
            .all(|p| !p.append && p.route_runs.is_empty())
        {
            self.first_routings
                .submit(Arc::clone(processed), |batch| {
                    write_first_routings(pool, owner, batch, now_ms)
                })
                .await
                .map_err(StoreError::Write)?
        } else {
            None
        };
        let lost = match first {
            Some(lost) => lost,
            None => {
                with_retries(pool, |mut c| {
                    Box::pin(async move {
                        let r = complete_tx(&mut c, processed, owner, now_ms).await;
                        (c, r)
                    })
                })
                .await?
            }
        };
        self.held(|h| {
            for p in processed.iter() {
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

    /// Records one retried attempt (in a batch with others: attempts.rs); false when the claim
    /// was lost (nothing written).
    pub(super) async fn record_attempt(
        &self,
        pool: &PgPool,
        done: &AttemptDone,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let id = done.delivery_id;
        let written = self
            .attempts
            .record(pool, &self.owner, done.clone(), now_ms)
            .await?;
        self.held(|h| h.deliveries.remove(&id));
        Ok(written)
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
        self.handoff.clear();
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
pub(super) fn retried_runs(p: &Processed) -> Option<Vec<i64>> {
    let ids: Vec<i64> = p.route_runs.iter().filter_map(|r| r.id).collect();
    (p.append && !ids.is_empty()).then_some(ids)
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

/// One batch of first routings from several chunks, as one statement: for each chunk, how many
/// of its results lost their claim, or `None` for every chunk when a routing was already
/// recorded (nothing was written; each chunk then takes the general path, which overwrites).
async fn write_first_routings(
    pool: &PgPool,
    owner: &str,
    batch: Vec<Arc<Vec<Processed>>>,
    now_ms: i64,
) -> Vec<Result<Option<usize>, String>> {
    let all: Vec<&Processed> = batch.iter().flat_map(|chunk| chunk.iter()).collect();
    let all = &all;
    let written = with_retries(pool, |c| {
        Box::pin(async move {
            let r = match super::results::complete_first_routings(&c, all, owner, now_ms).await {
                Ok(done) => Ok(Some(done)),
                // An event routed before without a replay mark (nothing writes one; a store
                // copied or repaired by hand might hold one).
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    tracing::warn!(
                        events = all.len(),
                        "a first routing found a routing already recorded; overwriting it"
                    );
                    Ok(None)
                }
                Err(e) => Err(e),
            };
            (c, r)
        })
    })
    .await;
    batch
        .iter()
        .map(|chunk| match &written {
            Ok(Some(done)) => Ok(Some(
                chunk.iter().filter(|p| !done.contains(&p.seq)).count(),
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        })
        .collect()
}

/// The routing results whose claims are still held, written in one transaction (replays,
/// plugin retries, and first routings that found a routing recorded). Returns how many were
/// dropped because their claim was lost.
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
    let mut holds = super::results::SubjectHolds::new();
    if !event_seqs.is_empty() {
        let finish = tx.prepare_cached(FINISH_EVENTS).await?;
        for row in tx.query(&finish, &[&event_seqs, owner]).await? {
            let seq: i64 = row.get(0);
            still_held.insert(seq);
            if let Some(subject) = row.get::<_, Option<String>>(1) {
                holds.insert(seq, (subject, row.get(2), row.get(3)));
            }
        }
    }
    let mut runs_held: HashSet<i64> = HashSet::new();
    if !run_ids.is_empty() {
        let holds = tx.prepare_cached(HOLDS_ROUTE_RUNS).await?;
        for row in tx.query(&holds, &[&run_ids, owner]).await? {
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
    write_results(&tx, &kept, now_ms, &holds).await?;
    tx.commit().await?;
    Ok(processed.len() - kept.len())
}
