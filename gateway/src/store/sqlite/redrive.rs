//! Redrives: dead letters (and plugin stages waiting for a retry) sent back to work by the
//! writer. A redrive of listed rows is one command; a redrive of every matching row is walked
//! in id order, [`BULK_STEP`] candidates per writer command, so the ingests sharing each commit
//! are never held up for long. Only the writer calls these, inside its batch transaction.

use rusqlite::{Transaction, params};

/// What one step of a bulk redrive did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BulkStep {
    /// Rows changed.
    pub(super) count: u64,
    /// Where the next step starts; `None` once no candidates are left.
    pub(super) resume_after: Option<i64>,
}

/// A redrive of listed dead letters, in one step (the list is bounded by the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Listed {
    Deliveries(Vec<i64>),
    RouteRuns(Vec<i64>),
    /// The delivery an ordered subject waits behind, skipped by an operator (the other way
    /// out of a hold than a redrive): a dead one stops holding its subject, a waiting one is
    /// dropped. Its subject's next delivery goes on.
    SkipBlocking(i64),
}

/// The rows a redrive of every matching row walks, [`BULK_STEP`] ids per writer command: one
/// UPDATE over all of them held the writer, so every ack, ~0.9 s per 200k dead deliveries
/// here (what an hour-long outage at ~55 events/s leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bulk {
    DeadDeliveries,
    DeadRouteRuns,
    /// Route runs waiting for a retry, made due now.
    WaitingRouteRuns,
}

/// Rows one bulk redrive step looks at (~5 ms).
const BULK_STEP: u32 = 1_000;

// A redriven delivery or route run starts a fresh set of attempts; its history keeps the old
// ones.
const REDRIVE_DELIVERY: &str = "UPDATE deliveries SET status = 'pending', attempts = 0, \
     next_attempt_at = ?1, updated_at = ?1 WHERE status = 'dead'";
const REDRIVE_RUN: &str = "UPDATE route_runs SET status = 'retry', attempts = 0, \
     next_attempt_at = ?1, updated_at = ?1 WHERE status = 'dead'";

/// Skips delivery ?2: a dead one holding its subject lets go, a waiting ordered one is dropped.
const SKIP_HELD: &str = "UPDATE deliveries SET holds_subject = 0, updated_at = ?1, \
     last_error = 'skipped by an operator; ' || coalesce(last_error, '') \
     WHERE id = ?2 AND status = 'dead' AND holds_subject = 1";
const SKIP_WAITING: &str = "UPDATE deliveries SET status = 'dropped', next_attempt_at = NULL, \
     updated_at = ?1, last_error = 'skipped by an operator; ' || coalesce(last_error, '') \
     WHERE id = ?2 AND status = 'pending' AND subject IS NOT NULL";

pub(super) fn redrive(tx: &Transaction<'_>, listed: &Listed, now: i64) -> rusqlite::Result<u64> {
    let (sql, ids) = match listed {
        Listed::Deliveries(ids) => (REDRIVE_DELIVERY, ids),
        Listed::RouteRuns(ids) => (REDRIVE_RUN, ids),
        Listed::SkipBlocking(id) => {
            let held = tx.prepare_cached(SKIP_HELD)?.execute(params![now, id])?;
            let waiting = tx.prepare_cached(SKIP_WAITING)?.execute(params![now, id])?;
            return Ok(u64::try_from(held + waiting).unwrap_or(u64::MAX));
        }
    };
    let mut stmt = tx.prepare_cached(&format!("{sql} AND id = ?2"))?;
    let mut n = 0;
    for id in ids {
        n += stmt.execute(params![now, id])?;
    }
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// One step of a bulk redrive: the matching rows among the next [`BULK_STEP`] candidates
/// with an id above `after`.
pub(super) fn redrive_step(
    tx: &Transaction<'_>,
    bulk: Bulk,
    after: i64,
    now: i64,
) -> rusqlite::Result<BulkStep> {
    let (candidates, update) = match bulk {
        Bulk::DeadDeliveries => (
            "SELECT max(id), count(*) FROM (SELECT id FROM deliveries WHERE status = 'dead' \
             AND id > ?1 ORDER BY id LIMIT ?2)",
            REDRIVE_DELIVERY,
        ),
        Bulk::DeadRouteRuns => (
            "SELECT max(id), count(*) FROM (SELECT id FROM route_runs WHERE status = 'dead' \
             AND id > ?1 ORDER BY id LIMIT ?2)",
            REDRIVE_RUN,
        ),
        Bulk::WaitingRouteRuns => (
            "SELECT max(id), count(*) FROM (SELECT id FROM route_runs WHERE status = 'retry' \
             AND id > ?1 ORDER BY id LIMIT ?2)",
            "UPDATE route_runs SET next_attempt_at = ?1, updated_at = ?1 \
             WHERE status = 'retry' AND next_attempt_at > ?1",
        ),
    };
    let (last, looked): (Option<i64>, u32) = tx
        .prepare_cached(candidates)?
        .query_row(params![after, BULK_STEP], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some(last) = last else {
        return Ok(BulkStep {
            count: 0,
            resume_after: None,
        });
    };
    let count = tx
        .prepare_cached(&format!("{update} AND id > ?2 AND id <= ?3"))?
        .execute(params![now, after, last])?;
    Ok(BulkStep {
        count: u64::try_from(count).unwrap_or(u64::MAX),
        resume_after: (looked >= BULK_STEP).then_some(last),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;
    use rusqlite::Connection;

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).expect("counts")
    }

    /// Runs one step in its own transaction, as the writer does.
    fn step(conn: &mut Connection, bulk: Bulk, after: i64, now: i64) -> BulkStep {
        let tx = conn.transaction().expect("begins");
        let step = redrive_step(&tx, bulk, after, now).expect("redrives");
        tx.commit().expect("commits");
        step
    }

    #[test]
    fn a_bulk_redrive_changes_at_most_a_step_of_rows_per_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("g.db")).expect("opens");
        schema::apply(&conn).expect("schema");
        // 2.5 steps of dead deliveries, with delivered ones between them; 3 dead route runs
        // and 2 waiting ones.
        let dead = i64::from(BULK_STEP) * 5 / 2;
        conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1) \
             INSERT INTO deliveries (event_seq, route, destination, webhook_id, status, \
               attempts, history, created_at, updated_at) \
             SELECT x, 'r', 'd', 'w' || x, CASE x % 2 WHEN 0 THEN 'dead' ELSE 'delivered' END, \
               5, '[]', 1, 1 FROM n",
            [dead * 2],
        )
        .expect("inserts deliveries");
        conn.execute_batch(
            "INSERT INTO route_runs (event_seq, route, status, attempts, next_attempt_at, \
               reason, created_at, updated_at) VALUES \
             (1, 'r', 'dead', 3, NULL, 'trap', 1, 1), (2, 'r', 'retry', 2, 9e15, 'retry', 1, 1), \
             (3, 'r', 'dead', 3, NULL, 'trap', 1, 1), (4, 'r', 'retry', 2, 9e15, 'retry', 1, 1), \
             (5, 'r', 'dead', 3, NULL, 'trap', 1, 1);",
        )
        .expect("inserts route runs");

        let now = 1_000;
        let mut counts = Vec::new();
        let mut after = 0;
        loop {
            let done = step(&mut conn, Bulk::DeadDeliveries, after, now);
            counts.push(done.count);
            match done.resume_after {
                Some(id) => after = id,
                None => break,
            }
        }
        let per_step = u64::from(BULK_STEP);
        assert_eq!(counts, [per_step, per_step, per_step / 2]);
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts = 0 \
                 AND next_attempt_at = 1000"
            ),
            dead
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM deliveries WHERE status = 'dead'"
            ),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM deliveries WHERE status = 'delivered' AND attempts = 5"
            ),
            dead
        );

        let runs = step(&mut conn, Bulk::DeadRouteRuns, 0, now);
        assert_eq!(
            runs,
            BulkStep {
                count: 3,
                resume_after: None
            }
        );
        // The three just redriven are due now already; the two waiting ones become due.
        let waiting = step(&mut conn, Bulk::WaitingRouteRuns, 0, now);
        assert_eq!(
            waiting,
            BulkStep {
                count: 2,
                resume_after: None
            }
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM route_runs WHERE status = 'retry' AND attempts = 2 \
                 AND next_attempt_at = 1000"
            ),
            2
        );
    }
}
