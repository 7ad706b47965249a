//! The admin API's event filter as a SQL `WHERE` clause with bound parameters (never
//! formatted values), shared by listing and replay.

use super::super::work::{EventFilter, EventStatus};
use rusqlite::types::Value;

/// `WHERE ...` (or empty) and its parameters, in order, for `?` placeholders.
pub(super) fn where_clause(filter: &EventFilter) -> (String, Vec<Value>) {
    let mut terms = Vec::new();
    let mut args = Vec::new();
    let mut term = |sql: &str, value: Value| {
        terms.push(sql.to_owned());
        args.push(value);
    };
    if let Some(seq) = filter.seq {
        term("seq = ?", Value::Integer(seq));
    }
    if let Some(source) = &filter.source {
        term("source = ?", Value::Text(source.clone()));
    }
    if let Some(event_type) = &filter.event_type {
        term("event_type = ?", Value::Text(event_type.clone()));
    }
    match filter.status {
        None => {}
        // Every event at or below the intake watermark has been routed (the watermark is
        // saved only behind the last recorded routing), so pending ones lie above it: a
        // rowid range, not a scan of the whole table.
        Some(EventStatus::Pending) => term(
            "status = ? AND seq > (SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta \
             WHERE key = 'intake_watermark')",
            Value::Text(EventStatus::Pending.as_str().to_owned()),
        ),
        // Most events end `routed`: scanning from the newest finds them at once.
        Some(EventStatus::Routed) => {
            term(
                "status = ?",
                Value::Text(EventStatus::Routed.as_str().to_owned()),
            );
        }
        // The rare states are found through the partial index `routings_status` (the
        // `<> 'routed'` term is what lets SQLite use it), however old the matches are.
        Some(status) => term(
            "seq IN (SELECT seq FROM routings WHERE status = ? AND status <> 'routed')",
            Value::Text(status.as_str().to_owned()),
        ),
    }
    if let Some(since) = filter.since_ms {
        term("received_at >= ?", Value::Integer(since));
    }
    if let Some(until) = filter.until_ms {
        term("received_at < ?", Value::Integer(until));
    }
    if let Some(before) = filter.before_seq {
        term("seq < ?", Value::Integer(before));
    }
    if terms.is_empty() {
        (String::new(), args)
    } else {
        (format!("WHERE {}", terms.join(" AND ")), args)
    }
}
