//! Recording retried delivery attempts on PostgreSQL, in batches (combine.rs): each commit
//! waits for the WAL flush, and one commit per attempt held ordered delivery (whose every first
//! attempt comes through here) at 2,253 commits/s and 0.40 of unordered delivery's rate. One
//! `UPDATE ... FROM unnest` per batch, written only where the claim is still this replica's.
//!
//! This module never decides an attempt's outcome; it only records it.

use super::super::stuck_amount::stuck_columns;
use super::super::work::AttemptDone;
use super::combine::Combiner;
use super::{PgPool, StoreError, with_retries};
use std::time::Duration;

/// Most attempts in one statement.
const MAX_BATCH: usize = 512;

/// Retried attempts, each written only while the claim is this replica's ($2); returns the
/// ids written.
const RECORD_ATTEMPTS: &str = "\
UPDATE deliveries d SET status = i.status, attempts = d.attempts + 1, next_attempt_at = i.next, \
       last_error = coalesce(i.error, d.last_error), \
       history = (d.history::jsonb || i.attempt::jsonb)::text, \
       envelope = CASE WHEN i.status = 'delivered' THEN NULL ELSE d.envelope END, \
       updated_at = $7, lease_owner = NULL, \
       holds_subject = (i.status = 'dead' AND i.holds AND d.subject IS NOT NULL), \
       amount = i.amount, currency = i.currency, amount_units = i.units, \
       amount_scale = i.scale \
  FROM unnest($1::int8[], $3::text[], $4::int8[], $5::text[], $6::text[], $8::bool[], \
              $9::text[], $10::text[], $11::int8[], $12::int8[]) \
    AS i(id, status, next, error, attempt, holds, amount, currency, units, scale) \
 WHERE d.id = i.id AND d.lease_owner = $2 AND d.status = 'pending' \
RETURNING d.id";

/// This replica's attempts waiting to be recorded.
#[derive(Debug)]
pub(super) struct AttemptBatches {
    combiner: Combiner<AttemptDone, bool>,
}

impl Default for AttemptBatches {
    fn default() -> Self {
        Self {
            combiner: Combiner::new(MAX_BATCH, Duration::ZERO),
        }
    }
}

impl AttemptBatches {
    /// Records `done`; false when its claim was lost (nothing written).
    pub(super) async fn record(
        &self,
        pool: &PgPool,
        owner: &String,
        done: AttemptDone,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.combiner
            .submit(done, |batch| async move {
                match write(pool, owner, &batch, now_ms).await {
                    Ok(ids) => batch
                        .iter()
                        .map(|done| Ok(ids.contains(&done.delivery_id)))
                        .collect(),
                    Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
                }
            })
            .await
            .map_err(StoreError::Write)
    }
}

/// One batch in one statement; the ids written.
async fn write(
    pool: &PgPool,
    owner: &String,
    batch: &[AttemptDone],
    now_ms: i64,
) -> Result<Vec<i64>, String> {
    let mut c = Columns::default();
    for done in batch {
        let state = done.state.columns(Some(&done.attempt));
        let attempt = serde_json::to_string(&[&done.attempt])
            .map_err(|e| format!("cannot encode an attempt: {e}"))?;
        c.id.push(done.delivery_id);
        c.status.push(state.status);
        c.next.push(state.next_attempt_at);
        c.error.push(state.last_error);
        c.attempt.push(attempt);
        c.holds.push(done.holds_subject);
        let (amount, currency, units, scale) = stuck_columns(done.stuck.as_ref());
        c.amount.push(amount);
        c.currency.push(currency);
        c.units.push(units);
        c.scale.push(scale);
    }
    let c = &c;
    let rows = with_retries(pool, |client| {
        Box::pin(async move {
            let r = match client.prepare_cached(RECORD_ATTEMPTS).await {
                Ok(statement) => {
                    client
                        .query(
                            &statement,
                            &[
                                &c.id,
                                owner,
                                &c.status,
                                &c.next,
                                &c.error,
                                &c.attempt,
                                &now_ms,
                                &c.holds,
                                &c.amount,
                                &c.currency,
                                &c.units,
                                &c.scale,
                            ],
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            (client, r)
        })
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[derive(Default)]
struct Columns<'a> {
    id: Vec<i64>,
    status: Vec<&'static str>,
    next: Vec<Option<i64>>,
    error: Vec<Option<String>>,
    attempt: Vec<String>,
    holds: Vec<bool>,
    /// The amount of a delivery that died (dead_letters.rs, `StuckAmount`).
    amount: Vec<Option<&'a str>>,
    currency: Vec<Option<&'a str>>,
    units: Vec<Option<i64>>,
    scale: Vec<Option<i64>>,
}

#[cfg(test)]
mod tests {
    use super::super::claims::Claims;
    use crate::store::{AttemptDone, AttemptRecord, DeliveryState};

    /// Attempts recorded at once go in shared batches, and each caller gets its own answer: 60
    /// written, and the one whose claim another replica took reports it lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_attempts_are_written_together_and_answered_each() {
        let db = super::super::test_db::Db::new("attempt_batches").await;
        let pool = &db.store.pool;
        let mut ids = Vec::new();
        for n in 0..61 {
            let seq = db.event("ledger", &format!("a{n}"), 1).await;
            ids.push(db.delivery(seq, "pending", Some(0), None).await);
        }
        let (mine, other) = (Claims::new(1_000, 0, 256), Claims::new(1_000, 0, 256));
        let due = mine
            .claim_due_deliveries(pool, 10, 100)
            .await
            .expect("claims");
        assert_eq!(due.len(), 61);
        // The lease on the last one ran out and the other replica took it.
        db.exec(
            "UPDATE deliveries SET next_attempt_at = 0 WHERE id = $1",
            &[&ids[60]],
        )
        .await;
        let taken = other
            .claim_due_deliveries(pool, 20, 10)
            .await
            .expect("claims");
        assert_eq!(taken.len(), 1);
        let done = |id: i64| AttemptDone {
            delivery_id: id,
            attempt: AttemptRecord {
                at: 30,
                status: Some(200),
                error: None,
                duration_ms: 1,
            },
            state: DeliveryState::Delivered,
            holds_subject: false,
            stuck: None,
        };
        let mine = &mine;
        let written = futures::future::join_all(
            ids.iter()
                .map(|id| async move { mine.record_attempt(pool, &done(*id), 30).await }),
        )
        .await;
        let written: Vec<bool> = written.into_iter().map(|w| w.expect("records")).collect();
        assert!(written[..60].iter().all(|w| *w));
        assert!(!written[60], "the other replica's claim");
        assert_eq!(
            db.ints("SELECT count(*) FROM deliveries WHERE status = 'delivered' AND attempts = 4")
                .await,
            [60]
        );
    }
}
