//! The admin API's event filter as a SQL `WHERE` clause over the `event_states` view with
//! bound parameters (never formatted values), shared by listing and replay on every backend.
//! The backends differ only in how a parameter is written and in how they find the events not
//! routed yet cheaply ([`Dialect`]). This module never runs a query.

use super::work::{EventFilter, EventStatus};

/// A filter's parameter, bound by the backend in the clause's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FilterArg {
    Int(i64),
    Text(String),
}

/// Which backend the clause is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// `?` placeholders; pending events lie above the intake watermark.
    Sqlite,
    /// `$n` placeholders; pending events have a row in the small `event_work` table.
    Postgres,
}

/// `WHERE ...` (or empty) and its parameters, in order. PostgreSQL's placeholders are
/// `$1`..`$n` (n = the parameters' count), so a caller binding more uses `$n+1` on.
pub(super) fn where_clause(filter: &EventFilter, dialect: Dialect) -> (String, Vec<FilterArg>) {
    let mut terms = Vec::new();
    let mut args = Vec::new();
    // `{}` in a term is its parameter's placeholder.
    let mut term = |sql: &str, value: FilterArg| {
        args.push(value);
        let mark = match dialect {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${}", args.len()),
        };
        terms.push(sql.replace("{}", &mark));
    };
    let status_is = |status: EventStatus| FilterArg::Text(status.as_str().to_owned());
    if let Some(seq) = filter.seq {
        term("seq = {}", FilterArg::Int(seq));
    }
    if let Some(source) = &filter.source {
        term("source = {}", FilterArg::Text(source.clone()));
    }
    if let Some(event_type) = &filter.event_type {
        term("event_type = {}", FilterArg::Text(event_type.clone()));
    }
    match (filter.status, dialect) {
        (None, _) => {}
        // Every event at or below the intake watermark has been routed (the watermark is
        // saved only behind the last recorded routing), so pending ones lie above it: a
        // rowid range, not a scan of the whole table.
        (Some(EventStatus::Pending), Dialect::Sqlite) => term(
            "status = {} AND seq > (SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta \
             WHERE key = 'intake_watermark')",
            status_is(EventStatus::Pending),
        ),
        // A pending event has its work row until its routing commits (inserted with the
        // event); the table holds only unfinished work, so this is a short list of seqs.
        (Some(EventStatus::Pending), Dialect::Postgres) => term(
            "status = {} AND seq IN (SELECT seq FROM event_work)",
            status_is(EventStatus::Pending),
        ),
        // Most events end `routed`: scanning from the newest finds them at once.
        (Some(EventStatus::Routed), _) => term("status = {}", status_is(EventStatus::Routed)),
        // The rare states are found through the partial index `routings_status` (the
        // `<> 'routed'` term is what lets the planner use it for a bound status), however
        // old the matches are.
        (Some(status), _) => term(
            "seq IN (SELECT seq FROM routings WHERE status = {} AND status <> 'routed')",
            status_is(status),
        ),
    }
    if let Some(since) = filter.since_ms {
        term("received_at >= {}", FilterArg::Int(since));
    }
    if let Some(until) = filter.until_ms {
        term("received_at < {}", FilterArg::Int(until));
    }
    if let Some(before) = filter.before_seq {
        term("seq < {}", FilterArg::Int(before));
    }
    if terms.is_empty() {
        (String::new(), args)
    } else {
        (format!("WHERE {}", terms.join(" AND ")), args)
    }
}

/// [`where_clause`] for a replay request: the filter's events except those not routed yet or
/// marked already, which are on their way through the routes.
pub(super) fn replay_clause(filter: &EventFilter, dialect: Dialect) -> (String, Vec<FilterArg>) {
    let (clause, args) = where_clause(filter, dialect);
    let and = if clause.is_empty() { "WHERE" } else { " AND" };
    (
        format!("{clause}{and} status NOT IN ('pending', 'replay')"),
        args,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect_and_values_are_never_in_the_text() {
        let filter = EventFilter {
            source: Some("x' OR 1=1 --".into()),
            status: Some(EventStatus::Failed),
            before_seq: Some(9),
            ..EventFilter::default()
        };
        let (pg, args) = where_clause(&filter, Dialect::Postgres);
        assert_eq!(
            pg,
            "WHERE source = $1 AND seq IN (SELECT seq FROM routings WHERE status = $2 \
             AND status <> 'routed') AND seq < $3"
        );
        assert_eq!(
            args,
            [
                FilterArg::Text("x' OR 1=1 --".into()),
                FilterArg::Text("failed".into()),
                FilterArg::Int(9)
            ]
        );
        let (lite, _) = where_clause(&filter, Dialect::Sqlite);
        assert_eq!(lite.matches('?').count(), 3, "{lite}");
        assert_eq!(
            where_clause(&EventFilter::default(), Dialect::Postgres).0,
            ""
        );
    }
}
