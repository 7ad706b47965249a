//! Ordered delivery on PostgreSQL: claiming the next delivery of each subject of a destination
//! with `ordering = "subject"` so that, across every replica, at most one delivery per
//! (destination, subject) is in flight and none is handed out while an earlier one of its
//! subject is waiting, failing or dead and holding the subject; plus the admin API's list of
//! blocked subjects and its skip.
//!
//! Why a lock and a second statement: a claim decides from what it reads, and under READ
//! COMMITTED a statement reads the snapshot taken when it began. Two replicas claiming at once
//! could each read the other's claim as not there yet (the newer event of a subject in
//! flight, an older one that arrived late taken as well). So a claim runs in one transaction:
//! the first statement finds the candidates and takes a transaction-level advisory lock per
//! (destination, subject), skipping subjects another replica is deciding about right now; the
//! second statement, whose snapshot is taken after the locks are held, and so after every
//! earlier claim of those subjects committed (their locks are released only by the commit),
//! checks each candidate again and claims it. The in-flight mark itself is the row's lease
//! (`lease_owner`, `next_attempt_at` in the future), so a replica's death releases it when
//! the lease runs out, and a hold (a dead letter) is a column: neither lives in a process.
//!
//! An event of the subject that is stored but not routed yet holds too ([`UNROUTED`]): its
//! work row carries its ordering key from ingest until routing deletes it, in the transaction
//! that records its deliveries; a routing waiting for a plugin retry holds through its route
//! run. Nobody knows before routing whether the event goes to this destination, so it holds
//! every ordered destination's deliveries of its subject; a filtered or dropped event releases
//! them when its routing commits, a dead route run when it dies.
//!
//! This module never decides what routing does, and never writes a result.

use super::super::work::{BlockedSubject, DueDelivery};
use super::PooledClient;

/// `b` is an ordered delivery of `d`'s subject to `d`'s destination that comes before `d`.
/// (Written with [`HOLDS`] in the shape of the partial index `deliveries_holding`, so the test
/// reads only the subject's held deliveries, not its delivered history.)
const EARLIER: &str = "b.destination = d.destination AND b.subject = d.subject \
     AND b.subject IS NOT NULL \
     AND (b.order_at, b.order_next, b.event_seq, b.id) < (d.order_at, d.order_next, d.event_seq, d.id)";

/// `b` keeps what comes after it waiting: not delivered yet, or dead and holding its subject.
const HOLDS: &str = "(b.status = 'pending' OR (b.status = 'dead' AND b.holds_subject))";

/// Another delivery of `d`'s subject is in flight: claimed under a lease still running.
const IN_FLIGHT: &str = "EXISTS (SELECT 1 FROM deliveries f \
     WHERE f.destination = d.destination AND f.subject = d.subject AND f.subject IS NOT NULL \
       AND f.status = 'pending' AND f.lease_owner IS NOT NULL AND f.next_attempt_at > $1 \
       AND f.id <> d.id)";

/// An event of `d`'s subject that comes before `d` is not routed yet: stored and not routed
/// (its work row), or waiting for a plugin retry (its route run). Keys compare as the
/// deliveries' do, without the delivery id (an event's own deliveries have the same key).
const UNROUTED: &str = "(EXISTS (SELECT 1 FROM event_work u \
       WHERE u.subject = d.subject AND u.subject IS NOT NULL \
         AND (u.order_at, u.order_next, u.seq) < (d.order_at, d.order_next, d.event_seq)) \
     OR EXISTS (SELECT 1 FROM route_runs r \
       WHERE r.status = 'retry' AND r.subject = d.subject AND r.subject IS NOT NULL \
         AND (r.order_at, r.order_next, r.event_seq) < (d.order_at, d.order_next, d.event_seq)))";

/// Whether any ordered delivery is due: one indexed read (`deliveries_due_ordered`, empty
/// when no destination is ordered) that spares the claim's transaction, three round trips,
/// on every poll of a gateway with nothing ordered to send.
const ANY_ORDERED_DUE: &str = "SELECT EXISTS (SELECT 1 FROM deliveries \
     WHERE status = 'pending' AND subject IS NOT NULL AND next_attempt_at <= $1)";

/// The lock key of (destination, subject): a hash (a collision only makes two subjects wait
/// for each other's claim decision, never lets two in).
const SUBJECT_LOCK: &str = "hashtextextended(d.destination || chr(10) || d.subject, 24)";

/// Statement 1: the due heads of subjects ($1 now, $2 limit, $3 ids this replica holds),
/// those whose subject lock this transaction got. The walk passes every due delivery, most of
/// them waiting behind an earlier one of their subject; the `CASE` makes that test (one probe
/// of `deliveries_holding`) decide first, so only a subject's head pays for the in-flight and
/// unrouted probes (the planner, left to order the three tests, ran the unrouted ones for
/// every delivery walked: the end-to-end ordered rate fell by a third to a half).
fn candidates_sql() -> String {
    format!(
        "WITH heads AS MATERIALIZED ( \
             SELECT d.id, d.destination, d.subject FROM deliveries d \
              WHERE d.status = 'pending' AND d.subject IS NOT NULL AND d.next_attempt_at <= $1 \
                AND NOT (d.id = ANY($3)) \
                AND CASE WHEN EXISTS (SELECT 1 FROM deliveries b WHERE {EARLIER} AND {HOLDS}) \
                         THEN false \
                         WHEN {IN_FLIGHT} THEN false \
                         ELSE NOT {UNROUTED} END \
              ORDER BY d.next_attempt_at LIMIT $2 \
         ) \
         SELECT d.id FROM heads d WHERE pg_try_advisory_xact_lock({SUBJECT_LOCK})"
    )
}

/// Statement 2, on a fresh snapshot: the same test again for the locked candidates ($2), and
/// the claim ($3 owner, $4 lease end).
fn claim_sql() -> String {
    format!(
        "WITH picked AS ( \
             SELECT d.id FROM deliveries d \
              WHERE d.id = ANY($2) AND d.status = 'pending' AND d.next_attempt_at <= $1 \
                AND NOT EXISTS (SELECT 1 FROM deliveries b WHERE {EARLIER} AND {HOLDS}) \
                AND NOT {IN_FLIGHT} \
                AND NOT {UNROUTED} \
              FOR UPDATE OF d SKIP LOCKED \
         ), claimed AS ( \
             UPDATE deliveries d SET lease_owner = $3, next_attempt_at = $4 \
               FROM picked WHERE d.id = picked.id \
             RETURNING d.id, d.event_seq, d.route, d.destination, d.webhook_id, d.envelope, \
                       d.attempts, d.subject, d.order_at, d.order_next \
         ) \
         SELECT d.id, d.event_seq, d.route, d.destination, d.webhook_id, \
                coalesce(d.envelope, e.envelope), d.attempts, \
                EXISTS (SELECT 1 FROM deliveries s WHERE s.destination = d.destination \
                          AND s.subject = d.subject AND s.status = 'delivered' \
                          AND (s.order_at, s.order_next, s.event_seq, s.id) \
                              > (d.order_at, d.order_next, d.event_seq, d.id)) \
           FROM claimed d JOIN stored_events e ON e.seq = d.event_seq ORDER BY d.id"
    )
}

/// Claims the next delivery of up to `limit` subjects, in one transaction (see the module
/// docs); `held`: deliveries this replica works on already.
pub(super) async fn claim_heads(
    c: &mut PooledClient,
    (now_ms, limit): (i64, i64),
    (owner, until): (&String, i64),
    held: &Vec<i64>,
) -> Result<Vec<DueDelivery>, tokio_postgres::Error> {
    let any_due: bool = c
        .query_one(&c.prepare_cached(ANY_ORDERED_DUE).await?, &[&now_ms])
        .await?
        .get(0);
    if !any_due {
        return Ok(Vec::new());
    }
    let tx = c.transaction().await?;
    let due = claim_in(&tx, (now_ms, limit), (owner, until), held).await?;
    tx.commit().await?;
    Ok(due)
}

/// The claim's two statements in the caller's transaction; the subject locks are held until
/// it ends, and the claim counts for the other replicas once it commits.
pub(super) async fn claim_in(
    tx: &deadpool_postgres::Transaction<'_>,
    (now_ms, limit): (i64, i64),
    (owner, until): (&String, i64),
    held: &Vec<i64>,
) -> Result<Vec<DueDelivery>, tokio_postgres::Error> {
    let candidates = tx.prepare_cached(&candidates_sql()).await?;
    let locked: Vec<i64> = tx
        .query(&candidates, &[&now_ms, &limit, held])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    let claim = tx.prepare_cached(&claim_sql()).await?;
    let rows = tx.query(&claim, &[&now_ms, &locked, owner, &until]).await?;
    Ok(rows
        .iter()
        .map(|r| DueDelivery {
            id: r.get(0),
            event_seq: r.get(1),
            route: r.get(2),
            destination: r.get(3),
            webhook_id: r.get(4),
            envelope: r.get(5),
            attempts: u32::try_from(r.get::<_, i32>(6)).unwrap_or(0),
            stale: r.get(7),
        })
        .collect())
}

/// The subjects whose next delivery waits behind an event not routed yet: the earliest such
/// event (stored, or waiting for a plugin retry) of the first pending delivery of each
/// subject that was never attempted (one that was is listed as failing).
fn held_by_unrouted_sql() -> String {
    format!(
        "SELECT d.destination, d.subject, NULL::int8, h.seq, h.status, 0, h.reason, \
                (SELECT count(*) FROM deliveries w WHERE w.destination = d.destination \
                   AND w.subject = d.subject AND w.status = 'pending'), \
                (SELECT min(w.created_at) FROM deliveries w \
                  WHERE w.destination = d.destination AND w.subject = d.subject \
                    AND w.status = 'pending') \
         FROM deliveries d CROSS JOIN LATERAL ( \
             SELECT u.seq, 'unrouted'::text AS status, NULL::text AS reason, \
                    u.order_at, u.order_next FROM event_work u \
              WHERE u.subject = d.subject AND u.subject IS NOT NULL \
                AND (u.order_at, u.order_next, u.seq) < (d.order_at, d.order_next, d.event_seq) \
             UNION ALL \
             SELECT r.event_seq, 'plugin_retry', r.reason, r.order_at, r.order_next \
               FROM route_runs r \
              WHERE r.status = 'retry' AND r.subject = d.subject AND r.subject IS NOT NULL \
                AND (r.order_at, r.order_next, r.event_seq) \
                    < (d.order_at, d.order_next, d.event_seq) \
             ORDER BY 4, 5, 1 LIMIT 1) h \
         WHERE d.status = 'pending' AND d.subject IS NOT NULL AND d.attempts = 0 \
           AND NOT EXISTS (SELECT 1 FROM deliveries b WHERE {EARLIER} AND {HOLDS})"
    )
}

/// The subjects whose next delivery failed or waits behind an unrouted event (see
/// `Store::blocked_subjects`).
pub(super) async fn blocked_subjects(
    c: &PooledClient,
    limit: u32,
) -> Result<Vec<BlockedSubject>, tokio_postgres::Error> {
    let head = |from: &str| {
        format!(
            "SELECT d.destination, d.subject, d.id, d.event_seq, d.status, d.attempts, \
                    d.last_error, \
                    (SELECT count(*) FROM deliveries w WHERE w.destination = d.destination \
                       AND w.subject = d.subject AND w.status = 'pending' AND w.id <> d.id), \
                    (SELECT min(w.created_at) FROM deliveries w \
                      WHERE w.destination = d.destination AND w.subject = d.subject \
                        AND w.status = 'pending' AND w.id <> d.id) \
             FROM deliveries d WHERE {from} \
               AND NOT EXISTS (SELECT 1 FROM deliveries b WHERE {EARLIER} AND {HOLDS})"
        )
    };
    let sql = format!(
        "SELECT * FROM ({} UNION ALL {} UNION ALL {}) h ORDER BY 4, 3 LIMIT $1",
        head("d.status = 'dead' AND d.holds_subject AND d.subject IS NOT NULL"),
        head("d.status = 'pending' AND d.subject IS NOT NULL AND d.attempts > 0"),
        held_by_unrouted_sql(),
    );
    let limit = i64::from(limit);
    Ok(c.query(&sql, &[&limit])
        .await?
        .iter()
        .map(|r| BlockedSubject {
            destination: r.get(0),
            subject: r.get(1),
            delivery_id: r.get(2),
            event_seq: r.get(3),
            status: r.get(4),
            attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
            last_error: r.get(6),
            waiting: u64::try_from(r.get::<_, i64>(7)).unwrap_or(0),
            oldest_waiting_since: r.get(8),
        })
        .collect())
}

/// Skips the delivery a subject waits behind: a dead one stops holding, a waiting one not in
/// flight is dropped. Returns how many rows changed (0 or 1).
pub(super) async fn skip_blocking(
    c: &PooledClient,
    delivery_id: i64,
    now_ms: i64,
) -> Result<u64, tokio_postgres::Error> {
    let held = c
        .execute(
            "UPDATE deliveries SET holds_subject = false, updated_at = $2, \
             last_error = 'skipped by an operator; ' || coalesce(last_error, '') \
             WHERE id = $1 AND status = 'dead' AND holds_subject",
            &[&delivery_id, &now_ms],
        )
        .await?;
    let waiting = c
        .execute(
            "UPDATE deliveries SET status = 'dropped', next_attempt_at = NULL, \
             updated_at = $2, lease_owner = NULL, \
             last_error = 'skipped by an operator; ' || coalesce(last_error, '') \
             WHERE id = $1 AND status = 'pending' AND subject IS NOT NULL \
               AND (lease_owner IS NULL OR next_attempt_at <= $2)",
            &[&delivery_id, &now_ms],
        )
        .await?;
    Ok(held + waiting)
}
