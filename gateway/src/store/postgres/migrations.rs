//! The PostgreSQL schema's versions and how a database moves to the newest one. Migrations are
//! numbered SQL files, applied in order, each in its own transaction with the version it
//! brings; `gateway_schema_migrations` records which ones a database has.
//!
//! Several replicas may start at once: each takes a session advisory lock first, so one
//! migrates and the others wait, then find nothing left to do. A database whose schema is newer
//! than this binary knows (a newer gateway migrated it) is refused, never written: its tables
//! may mean things this version would break. This module never changes event data; the one
//! data step it runs (version 7) writes a derived column of dead deliveries, computed in Rust
//! by the same extraction the gateway uses when a delivery dies.

use tokio_postgres::Client;

/// One schema version.
#[derive(Debug)]
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "intake tables",
        sql: include_str!("migrations/0001_intake.sql"),
    },
    Migration {
        version: 2,
        name: "work tables",
        sql: include_str!("migrations/0002_work.sql"),
    },
    Migration {
        version: 3,
        name: "admin audit",
        sql: include_str!("migrations/0003_admin_audit.sql"),
    },
    Migration {
        version: 4,
        name: "ordered delivery",
        sql: include_str!("migrations/0004_ordering.sql"),
    },
    Migration {
        version: 5,
        name: "event search indexes",
        sql: include_str!("migrations/0005_event_search.sql"),
    },
    Migration {
        version: 6,
        name: "unrouted events hold their subject",
        sql: include_str!("migrations/0006_unrouted_holds.sql"),
    },
    Migration {
        version: 7,
        name: "dead letter amounts",
        sql: include_str!("migrations/0007_dead_letter_amounts.sql"),
    },
    Migration {
        version: 8,
        name: "event subjects",
        sql: include_str!("migrations/0008_event_subjects.sql"),
    },
    Migration {
        version: 9,
        name: "event ids",
        sql: include_str!("migrations/0009_event_ids.sql"),
    },
    Migration {
        version: 10,
        name: "work table never truncated",
        sql: include_str!("migrations/0010_work_never_truncated.sql"),
    },
];

/// The migration after whose SQL [`backfill_stuck_amounts`] runs, in its transaction.
const DEAD_LETTER_AMOUNTS: i32 = 7;

/// Dead deliveries read per step of the backfill.
const BACKFILL_PAGE: i64 = 1000;

/// Writes the amount of every dead delivery already stored (read from the envelope each
/// would send, as when one dies now), so the groups' sums include them. Pages by id.
async fn backfill_stuck_amounts(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<(), tokio_postgres::Error> {
    use super::super::stuck_amount::{StuckAmount, stuck_columns};
    let mut after = 0_i64;
    loop {
        let rows = tx
            .query(
                "SELECT d.id, coalesce(d.envelope, e.envelope) FROM deliveries d \
                 JOIN stored_events e ON e.seq = d.event_seq \
                 WHERE d.status = 'dead' AND d.id > $1 ORDER BY d.id LIMIT $2",
                &[&after, &BACKFILL_PAGE],
            )
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get(0)?;
        let mut ids = Vec::new();
        let mut stuck = Vec::new();
        for row in &rows {
            let envelope: String = row.try_get(1)?;
            if let Some(s) = StuckAmount::of_envelope(&envelope) {
                ids.push(row.try_get::<_, i64>(0)?);
                stuck.push(s);
            }
        }
        let columns: Vec<_> = stuck.iter().map(|s| stuck_columns(Some(s))).collect();
        let amount: Vec<Option<&str>> = columns.iter().map(|c| c.0).collect();
        let currency: Vec<Option<&str>> = columns.iter().map(|c| c.1).collect();
        let units: Vec<Option<i64>> = columns.iter().map(|c| c.2).collect();
        let scale: Vec<Option<i64>> = columns.iter().map(|c| c.3).collect();
        tx.execute(
            "UPDATE deliveries d SET amount = i.amount, currency = i.currency, \
             amount_units = i.units, amount_scale = i.scale \
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int8[]) \
               AS i(id, amount, currency, units, scale) WHERE d.id = i.id",
            &[&ids, &amount, &currency, &units, &scale],
        )
        .await?;
    }
}

/// The advisory lock every replica takes around migrating (any fixed number: it only has to
/// be the same in every gateway and unused by other applications on the database).
const MIGRATION_LOCK: i64 = 0x7765_6268_6f6f_6b31;

/// How long a replica waits for another one's migration before giving up.
const LOCK_WAIT: &str = "120s";

/// Every schema version this binary knows, oldest first (numbers may skip one that another
/// branch took; see the tests).
#[cfg(test)]
pub(crate) fn versions() -> Vec<i32> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

/// The newest schema version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrationError {
    #[error(
        "the database's schema is at version {found}, newer than this gateway knows \
         ({known}): run the newer gateway, or restore a backup taken before it migrated"
    )]
    Ahead { found: i32, known: i32 },
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("reading the schema version: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// Where a database's schema stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// 0: no gateway schema at all.
    pub current: i32,
    /// The newest version this binary knows.
    pub latest: i32,
}

impl SchemaStatus {
    pub fn is_current(self) -> bool {
        self.current == self.latest
    }
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS gateway_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)";

/// Reads the schema version without changing anything (for `gateway check`).
pub(crate) async fn status(client: &Client) -> Result<SchemaStatus, MigrationError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('gateway_schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let current = if exists {
        current_version(client).await?
    } else {
        0
    };
    Ok(SchemaStatus {
        current,
        latest: latest(),
    })
}

async fn current_version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM gateway_schema_migrations",
            &[],
        )
        .await?
        .get(0))
}

/// Brings the schema to the newest version, one migration per transaction, under the
/// migration lock. Returns the versions it applied (empty when the schema was current).
pub(crate) async fn migrate(client: &mut Client) -> Result<Vec<i32>, MigrationError> {
    // A migration may rewrite a large table, and waiting for another replica's is waiting on
    // the lock: neither is the stuck query `store.statement_timeout` is there to stop.
    client
        .batch_execute(&format!(
            "SET lock_timeout = '{LOCK_WAIT}'; SET statement_timeout = 0"
        ))
        .await?;
    client
        .query_one("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    // Closing the session would release the lock too; a pooled session must not keep it.
    let unlocked = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let reset = client
        .batch_execute("RESET lock_timeout; RESET statement_timeout")
        .await;
    let applied = result?;
    unlocked?;
    reset?;
    Ok(applied)
}

async fn migrate_locked(client: &mut Client) -> Result<Vec<i32>, MigrationError> {
    client.batch_execute(CREATE_LEDGER).await?;
    let current = current_version(client).await?;
    if current > latest() {
        return Err(MigrationError::Ahead {
            found: current,
            known: latest(),
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| MigrationError::Failed {
            version: migration.version,
            name: migration.name,
            source,
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        if migration.version == DEAD_LETTER_AMOUNTS {
            backfill_stuck_amounts(&tx).await.map_err(failed)?;
        }
        tx.execute(
            "INSERT INTO gateway_schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        applied.push(migration.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions taken by another branch not merged yet (the merge renumbers and empties this).
    const RESERVED: &[i32] = &[];

    #[test]
    fn versions_are_numbered_from_one_without_gaps() {
        let mut expected = 1;
        for m in MIGRATIONS {
            while RESERVED.contains(&expected) {
                expected += 1;
            }
            assert_eq!(m.version, expected, "{}", m.name);
            expected += 1;
        }
    }
}
