//! Ordered delivery on SQLite: the reads behind the delivery claim of destinations with
//! `ordering = "subject"` and the admin API's list of blocked subjects. One process owns the
//! file, so "in flight" is the claims' mark in memory (`claims.rs`); what the database
//! decides is which delivery of each subject is next: the first in ordering key order among
//! those still waiting or dead and holding the subject, and only when it is due.
//!
//! An event of the subject whose routing is not finished holds too ([`UNROUTED`]): it may
//! yet go to this destination.
//!
//! This module only reads; the writer records attempts and skips.

use crate::store::{BlockedSubject, DueDelivery};
use rusqlite::{Connection, params};

/// `b` is an ordered delivery of `d`'s subject to `d`'s destination that comes before `d`.
/// (Written with [`HOLDS`] in the shape of the partial index `deliveries_holding`, so the test
/// reads only the subject's held deliveries, not its delivered history.)
const EARLIER: &str = "b.destination = d.destination AND b.subject = d.subject \
     AND b.subject IS NOT NULL \
     AND (b.order_at, b.order_next, b.event_seq, b.id) < (d.order_at, d.order_next, d.event_seq, d.id)";

/// `b` keeps what comes after it waiting: not delivered yet, or dead and holding its subject.
const HOLDS: &str = "(b.status = 'pending' OR (b.status = 'dead' AND b.holds_subject = 1))";

/// The due ordered deliveries that are their subject's next, with whether each is stale (a
/// later one of its subject was delivered already), most overdue first.
pub(super) fn due_heads(
    conn: &Connection,
    now_ms: i64,
    limit: u32,
) -> rusqlite::Result<Vec<(DueDelivery, String)>> {
    conn.prepare_cached(&due_heads_sql(limit))?
        .query_map(params![now_ms], |r| {
            Ok((
                DueDelivery {
                    id: r.get(0)?,
                    event_seq: r.get(1)?,
                    route: r.get(2)?,
                    destination: r.get(3)?,
                    webhook_id: r.get(4)?,
                    envelope: r.get(5)?,
                    attempts: r.get(6)?,
                    stale: r.get(8)?,
                },
                r.get(7)?,
            ))
        })?
        .collect()
}

/// An event of `d`'s subject that comes before `d` is not routed yet, or waits for a plugin
/// retry (`unrouted_subjects`). Keys compare as the deliveries' do, without the delivery id.
const UNROUTED: &str = "EXISTS (SELECT 1 FROM unrouted_subjects u WHERE u.subject = d.subject \
     AND (u.order_at, u.order_next, u.seq) < (d.order_at, d.order_next, d.event_seq))";

fn due_heads_sql(limit: u32) -> String {
    format!(
        "SELECT d.id, d.event_seq, d.route, d.destination, d.webhook_id, \
                coalesce(d.envelope, e.envelope), d.attempts, d.subject, \
                EXISTS (SELECT 1 FROM deliveries b WHERE b.destination = d.destination \
                          AND b.subject = d.subject AND b.status = 'delivered' \
                          AND (b.order_at, b.order_next, b.event_seq, b.id) \
                              > (d.order_at, d.order_next, d.event_seq, d.id)) \
         FROM deliveries d JOIN stored_events e ON e.seq = d.event_seq \
         WHERE d.status = 'pending' AND d.subject IS NOT NULL AND d.next_attempt_at <= ?1 \
           AND NOT EXISTS (SELECT 1 FROM deliveries b WHERE {EARLIER} AND {HOLDS}) \
           AND NOT {UNROUTED} \
         ORDER BY d.next_attempt_at LIMIT {limit}"
    )
}

/// The subjects whose next delivery waits behind an earlier event not routed yet: for the
/// first pending delivery of each subject never attempted (one that was is listed as failing),
/// the earliest such event, `plugin_retry` when a route run of it waits for a retry.
fn held_by_unrouted_sql() -> String {
    format!(
        "SELECT d.destination, d.subject, NULL, u.seq, \
                CASE WHEN r.reason IS NULL THEN 'unrouted' ELSE 'plugin_retry' END, 0, r.reason, \
                (SELECT count(*) FROM deliveries w WHERE w.destination = d.destination \
                   AND w.subject = d.subject AND w.status = 'pending'), \
                (SELECT min(w.created_at) FROM deliveries w \
                  WHERE w.destination = d.destination AND w.subject = d.subject \
                    AND w.status = 'pending') \
         FROM deliveries d \
         JOIN unrouted_subjects u ON u.seq = (SELECT x.seq FROM unrouted_subjects x \
                WHERE x.subject = d.subject \
                  AND (x.order_at, x.order_next, x.seq) < (d.order_at, d.order_next, d.event_seq) \
                ORDER BY x.order_at, x.order_next, x.seq LIMIT 1) \
         LEFT JOIN route_runs r ON r.id = (SELECT y.id FROM route_runs y \
                WHERE y.event_seq = u.seq AND y.status = 'retry' LIMIT 1) \
         WHERE d.status = 'pending' AND d.subject IS NOT NULL AND d.attempts = 0 \
           AND NOT EXISTS (SELECT 1 FROM deliveries b WHERE {EARLIER} AND {HOLDS})"
    )
}

/// The subjects whose next delivery failed (dead and holding, or waiting for its next
/// attempt) or waits behind an unrouted event, with how many wait behind it; ordered by the
/// blocking event's seq, at most `limit`.
pub(super) fn blocked_subjects(
    conn: &Connection,
    limit: u32,
) -> rusqlite::Result<Vec<BlockedSubject>> {
    // Two scans, each over a partial index (dead letters; waiting ordered deliveries), rather
    // than one OR that would read the whole table.
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
        "SELECT * FROM ({} UNION ALL {} UNION ALL {}) ORDER BY 4, 3 LIMIT {limit}",
        head("d.status = 'dead' AND d.holds_subject = 1 AND d.subject IS NOT NULL"),
        head("d.status = 'pending' AND d.subject IS NOT NULL AND d.attempts > 0"),
        held_by_unrouted_sql(),
    );
    conn.prepare_cached(&sql)?
        .query_map([], |r| {
            Ok(BlockedSubject {
                destination: r.get(0)?,
                subject: r.get(1)?,
                delivery_id: r.get(2)?,
                event_seq: r.get(3)?,
                status: r.get(4)?,
                attempts: r.get(5)?,
                last_error: r.get(6)?,
                waiting: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                oldest_waiting_since: r.get(8)?,
            })
        })?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::due_heads_sql;

    /// The claim reads due ordered deliveries by due time and, for each, only the held
    /// deliveries of its subject: never the unordered ones, never a subject's delivered history.
    #[test]
    fn the_claim_reads_the_due_ordered_and_the_held_deliveries_through_their_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        let (store, writer) = super::super::tests::open(&path);
        let conn = rusqlite::Connection::open(&path).expect("opens");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", due_heads_sql(256)))
            .expect("explains")
            .query_map([0], |r| r.get::<_, String>(3))
            .expect("plan")
            .map(|r| r.expect("a plan row"))
            .collect();
        let uses = |index: &str| plan.iter().any(|p| p.contains(&format!("INDEX {index} ")));
        assert!(uses("deliveries_due_ordered"), "{plan:#?}");
        assert!(uses("deliveries_holding"), "{plan:#?}");
        assert!(uses("unrouted_subjects_key"), "{plan:#?}");
        assert!(!plan.iter().any(|p| p.starts_with("SCAN")), "{plan:#?}");
        drop(store);
        writer.join();
    }
}
