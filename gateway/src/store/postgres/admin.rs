//! PostgreSQL: the admin API's reads (event listings and details, the stored span, quarantined
//! bodies, dead letters) and the backlog gauges. Envelopes are read through the
//! `stored_events`/`event_states` views, which put a cut payload back; the rows become the
//! API's values in `store::views`, as on SQLite. Every query is one index walk or a handful of
//! index lookups, whatever the size of `events`.
//!
//! This module never writes.

use super::super::dead_letters::{self, DeadFilter, DeadLetterGroup, GroupRow, LooseAmount};
use super::super::event_filter::{
    DISTINCT_TYPES_SQL, Dialect, FilterArg, Lookups, is_glob, list_query, newest_seqs,
};
use super::super::views::{
    self, DELIVERY_COLUMNS, DETAIL_COLUMNS, QUARANTINE_COLUMNS, ROUTE_RUN_COLUMNS, SUMMARY_COLUMNS,
    ViewRow,
};
use super::super::work::{
    AuditRecord, Backlog, DeliveryView, EventDetail, EventFilter, EventSummary, QuarantineEntry,
    RouteRunView, StoredSpan,
};
use super::{PgStore, PooledClient, StoreError};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::{ToSql, Type};

impl ViewRow for tokio_postgres::Row {
    type Error = tokio_postgres::Error;
    /// `bigint` and `integer` columns alike (attempt counts and repeats are `integer`).
    fn int(&self, idx: usize) -> Result<i64, Self::Error> {
        match self.columns().get(idx).map(|c| c.type_()) {
            Some(&Type::INT4) => self.try_get::<_, i32>(idx).map(i64::from),
            _ => self.try_get(idx),
        }
    }
    fn opt_int(&self, idx: usize) -> Result<Option<i64>, Self::Error> {
        self.try_get(idx)
    }
    fn text(&self, idx: usize) -> Result<String, Self::Error> {
        self.try_get(idx)
    }
    fn opt_text(&self, idx: usize) -> Result<Option<String>, Self::Error> {
        self.try_get(idx)
    }
    fn bytes(&self, idx: usize) -> Result<Vec<u8>, Self::Error> {
        self.try_get(idx)
    }
}

/// A filter's parameters as the driver binds them.
pub(super) fn bound(args: &[FilterArg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            FilterArg::Int(v) => v as &(dyn ToSql + Sync),
            FilterArg::Text(t) => t as &(dyn ToSql + Sync),
            FilterArg::Bytes(b) => b as &(dyn ToSql + Sync),
        })
        .collect()
}

/// The listing's SQL and parameters (tests read its query plan).
pub(super) fn list_events_query(
    filter: &EventFilter,
    lookups: &Lookups,
    limit: u32,
) -> (String, Vec<FilterArg>) {
    list_query(filter, lookups, Dialect::Postgres, SUMMARY_COLUMNS, limit)
}

/// The gauges in one statement (tests read its plan). Every part is a count of a small table
/// or of a partial index, or the first entry of an index: the oldest waiting event is the
/// first fresh (not replayed) work row by seq, not the least `received_at` of all of them,
/// which would join every waiting event to `events` (and a join, even with `LIMIT 1`, was
/// planned as a merge join walking `events` from its first row: 200 ms a reading under load). Seqs are handed out in insert order, so
/// the first seq's arrival is the oldest one within the few milliseconds by which a replica's
/// batch can commit after another's younger one; a gauge of how late work is does not see that.
/// Replays are counted but have no due time: nothing records when they were asked for.
pub(super) const BACKLOG_SQL: &str = "SELECT \
    (SELECT count(*) FROM event_work), \
    (SELECT count(*) FROM deliveries WHERE status = 'pending'), \
    (SELECT count(*) FROM route_runs WHERE status = 'retry'), \
    (SELECT count(*) FROM deliveries WHERE status = 'dead'), \
    (SELECT count(*) FROM route_runs WHERE status = 'dead'), \
    (SELECT received_at FROM events WHERE seq = \
       (SELECT seq FROM event_work WHERE NOT replay ORDER BY seq LIMIT 1)), \
    (SELECT next_attempt_at FROM deliveries WHERE status = 'pending' \
       AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1), \
    (SELECT next_attempt_at FROM route_runs WHERE status = 'retry' \
       AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1)";

/// The first and the last event by seq: two primary-key lookups; no row when none is stored.
const STORED_SPAN: &str = "SELECT o.seq, o.received_at, n.seq, n.received_at FROM \
    (SELECT seq, received_at FROM events ORDER BY seq LIMIT 1) o, \
    (SELECT seq, received_at FROM events ORDER BY seq DESC LIMIT 1) n";

impl PgStore {
    pub(super) async fn dead_letter_groups(&self) -> Result<Vec<DeadLetterGroup>, StoreError> {
        let read = |sql: &'static str| {
            self.read(move |c| {
                Box::pin(async move {
                    let r = c.query(sql, &[]).await;
                    (c, r)
                })
            })
        };
        let rows = read(dead_letters::GROUP_ROWS_SQL)
            .await?
            .iter()
            .map(GroupRow::read)
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(read_err)?;
        let loose = if rows.iter().any(|r| r.loose > 0) {
            read(dead_letters::LOOSE_AMOUNTS_SQL)
                .await?
                .iter()
                .map(LooseAmount::read)
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map_err(read_err)?
        } else {
            Vec::new()
        };
        Ok(dead_letters::group(rows, loose))
    }

    pub(super) async fn count_dead(
        &self,
        filter: DeadFilter,
    ) -> Result<(u64, Option<i64>), StoreError> {
        let (sql, args) = &dead_letters::count_sql(&filter, Dialect::Postgres);
        let row = self
            .read(|c| {
                Box::pin(async move {
                    let r = c.query_one(sql.as_str(), &bound(args)).await;
                    (c, r)
                })
            })
            .await?;
        let n: i64 = row.try_get(0).map_err(read_err)?;
        let max: Option<i64> = row.try_get(1).map_err(read_err)?;
        Ok((u64::try_from(n).unwrap_or(0), max))
    }

    pub(super) async fn dead_page(
        &self,
        filter: DeadFilter,
        after: i64,
        through: i64,
        limit: u32,
    ) -> Result<Vec<i64>, StoreError> {
        let (sql, args) =
            &dead_letters::page_sql(&filter, after, through, limit, Dialect::Postgres);
        let rows = self
            .read(|c| {
                Box::pin(async move {
                    let r = c.query(sql.as_str(), &bound(args)).await;
                    (c, r)
                })
            })
            .await?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(read_err)
    }

    /// What the filter's SQL needs looked up first: the stored types a type glob matches
    /// (a loose scan of `events_type`). PostgreSQL plans the rest from its statistics.
    pub(super) async fn lookups(&self, filter: &EventFilter) -> Result<Lookups, StoreError> {
        let glob_types = match filter.event_type.as_deref() {
            Some(t) if is_glob(t) => {
                let rows = self
                    .read(|c| {
                        Box::pin(async move {
                            let r = c.query(DISTINCT_TYPES_SQL, &[]).await;
                            (c, r)
                        })
                    })
                    .await?;
                let stored = rows
                    .iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(read_err)?;
                super::super::event_filter::expand_glob(filter, &stored)
            }
            _ => None,
        };
        Ok(Lookups {
            glob_types,
            ..Lookups::default()
        })
    }

    pub(super) async fn backlog(&self) -> Result<Backlog, StoreError> {
        let row = self
            .read(|c| {
                Box::pin(async move {
                    let r = c.query_one(BACKLOG_SQL, &[]).await;
                    (c, r)
                })
            })
            .await?;
        let n = |idx: usize| -> Result<u64, StoreError> {
            let v: i64 = row.try_get(idx).map_err(read_err)?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        let mut due: Vec<i64> = Vec::new();
        for idx in 5..8 {
            due.extend(row.try_get::<_, Option<i64>>(idx).map_err(read_err)?);
        }
        Ok(Backlog {
            queue_depth: n(0)? + n(1)? + n(2)?,
            dead_letters: n(3)? + n(4)?,
            first_due_at_ms: due.into_iter().min(),
        })
    }

    /// Newest first, at most `limit`.
    pub(super) async fn list_events(
        &self,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let lookups = self.lookups(&filter).await?;
        let (sql, args) = &list_events_query(&filter, &lookups, limit);
        self.read(|c| {
            Box::pin(async move {
                let r = async {
                    let rows = c.query(sql.as_str(), &bound(args)).await?;
                    rows.iter().map(views::summary).collect()
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    /// How many events a replay with `filter` and `limit` would mark: the replay's own
    /// selection (`actions::request_replay`), counted.
    pub(super) async fn count_replay(
        &self,
        filter: EventFilter,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let lookups = self.lookups(&filter).await?;
        let (seqs, args) = newest_seqs(&filter, &lookups, Dialect::Postgres, true, limit);
        let sql = &format!("SELECT count(*) FROM ({seqs}) AS selected");
        let args = &args;
        self.read(|c| {
            Box::pin(async move {
                let r = async {
                    let n: i64 = c.query_one(sql.as_str(), &bound(args)).await?.get(0);
                    Ok(u64::try_from(n).unwrap_or(0))
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    pub(super) async fn record_audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        let record = &record;
        let count = i64::try_from(record.count).unwrap_or(i64::MAX);
        self.write(|c| {
            Box::pin(async move {
                let r = c
                    .execute(
                        "INSERT INTO admin_audit (at, actor, action, selection, count) \
                         VALUES ($1, $2, $3, $4, $5)",
                        &[
                            &record.at,
                            &record.actor,
                            &record.action,
                            &record.selection,
                            &count,
                        ],
                    )
                    .await
                    .map(drop);
                (c, r)
            })
        })
        .await
    }

    pub(super) async fn list_audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::from(limit);
        self.read(|c| {
            Box::pin(async move {
                let r = async {
                    let rows = c
                        .query(
                            "SELECT id, at, actor, action, selection, count FROM admin_audit \
                             WHERE ($1::int8 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
                            &[&before, &limit],
                        )
                        .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(AuditRecord {
                                id: row.try_get(0)?,
                                at: row.try_get(1)?,
                                actor: row.try_get(2)?,
                                action: row.try_get(3)?,
                                selection: row.try_get(4)?,
                                count: u64::try_from(row.try_get::<_, i64>(5)?).unwrap_or(0),
                            })
                        })
                        .collect()
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    pub(super) async fn event(&self, seq: i64) -> Result<Option<EventDetail>, StoreError> {
        self.read(|mut c| {
            Box::pin(async move {
                let r = event_detail(&mut c, seq).await;
                (c, r)
            })
        })
        .await
    }

    /// The oldest and the newest stored event; `None` when there is none.
    pub(super) async fn stored_span(&self) -> Result<Option<StoredSpan>, StoreError> {
        self.read(|c| {
            Box::pin(async move {
                let r = async {
                    let Some(row) = c.query_opt(STORED_SPAN, &[]).await? else {
                        return Ok(None);
                    };
                    Ok(Some(StoredSpan {
                        oldest_seq: row.try_get(0)?,
                        oldest_received_at: row.try_get(1)?,
                        newest_seq: row.try_get(2)?,
                        newest_received_at: row.try_get(3)?,
                    }))
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    /// Quarantined bodies, newest first: of `source` if given, with an id below `before` if
    /// given, at most `limit`.
    pub(super) async fn list_quarantine(
        &self,
        source: Option<String>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        let sql = &format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantine \
             WHERE ($1::text IS NULL OR source = $1) AND ($2::int8 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let (source, limit) = (&source, i64::from(limit));
        self.read(|c| {
            Box::pin(async move {
                let r = async {
                    let rows = c.query(sql.as_str(), &[source, &before, &limit]).await?;
                    rows.iter().map(views::quarantine_entry).collect()
                }
                .await;
                (c, r)
            })
        })
        .await
    }

    /// Dead deliveries and dead route runs, newest first, at most `limit` of each (each a walk
    /// of its partial index `*_dead`).
    pub(super) async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<(Vec<DeliveryView>, Vec<RouteRunView>), StoreError> {
        let deliveries = &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = 'dead' \
             ORDER BY id DESC LIMIT $1"
        );
        let runs = &format!(
            "SELECT {ROUTE_RUN_COLUMNS} FROM route_runs WHERE status = 'dead' \
             ORDER BY id DESC LIMIT $1"
        );
        let limit = i64::from(limit);
        self.read(|c| {
            Box::pin(async move {
                let r = async {
                    let d = c.query(deliveries.as_str(), &[&limit]).await?;
                    let r = c.query(runs.as_str(), &[&limit]).await?;
                    let d = d
                        .iter()
                        .map(views::delivery_view)
                        .collect::<Result<_, _>>()?;
                    let r = r
                        .iter()
                        .map(views::route_run_view)
                        .collect::<Result<_, _>>()?;
                    Ok((d, r))
                }
                .await;
                (c, r)
            })
        })
        .await
    }
}

fn read_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Read(super::describe(&e))
}

/// An event with its deliveries and route runs, read from one snapshot so they agree.
async fn event_detail(
    c: &mut PooledClient,
    seq: i64,
) -> Result<Option<EventDetail>, tokio_postgres::Error> {
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let event = format!("SELECT {DETAIL_COLUMNS} FROM event_states WHERE seq = $1");
    let Some(row) = tx.query_opt(&event, &[&seq]).await? else {
        return Ok(None);
    };
    let deliveries =
        format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_seq = $1 ORDER BY id");
    let deliveries = tx.query(&deliveries, &[&seq]).await?;
    let runs =
        format!("SELECT {ROUTE_RUN_COLUMNS} FROM route_runs WHERE event_seq = $1 ORDER BY id");
    let runs = tx.query(&runs, &[&seq]).await?;
    tx.commit().await?;
    let deliveries = deliveries
        .iter()
        .map(views::delivery_view)
        .collect::<Result<_, _>>()?;
    let runs = runs
        .iter()
        .map(views::route_run_view)
        .collect::<Result<_, _>>()?;
    views::event_detail(&row, deliveries, runs).map(Some)
}
