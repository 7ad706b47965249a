//! The admin API's event filter as SQL over the `event_states` view with bound parameters
//! (never formatted values), shared by listing, counting and replay on every backend.
//!
//! Every filter that can match few or only old events of a large store is answered through an
//! index or a rowid range, never by reading every event from the newest down:
//! - source and type through `events_source` / `events_type` (`(column, seq)`, so the newest
//!   matches come first); a type glob is expanded into the stored types it matches
//!   ([`Lookups`]) and, for several, the newest matches of each are merged ([`newest_seqs`]);
//! - a time range through a seq range found by a binary search over the rowid ([`seq_bound`]);
//! - the provider's event id through the rows of dedup-key hashes `event_ids` on PostgreSQL,
//!   and on SQLite through the narrow `dedup_keys` table (no index on a random key on either:
//!   it would dirty a random page per ack, see dedup_index.rs and migration 9);
//! - the subject through the rows of subject hashes `event_subjects` on PostgreSQL, and on
//!   SQLite through the narrow `subject_keys` table of subject hashes;
//! - each candidate a hash finds confirmed by its dedup key or envelope.
//!
//! The backends differ in how a parameter is written, in how they find the events not routed
//! yet cheaply, and in what they look up first ([`Dialect`], [`Lookups`]). This module never
//! runs a query.

use super::work::{EventFilter, EventStatus};
use sha2::{Digest as _, Sha256};

/// The search's hash of a subject (SQLite's `subject_keys`, PostgreSQL's `event_subjects`) or
/// of a dedup key (PostgreSQL's `event_ids`): the first 8 bytes of its SHA-256, big-endian
/// (stable across versions and processes, unlike the standard library's hasher). A search
/// confirms every candidate against its event, so a collision costs a read, never a wrong
/// answer.
pub(super) fn search_key(text: &str) -> i64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A filter's parameter, bound by the backend in the clause's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FilterArg {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Which backend the clause is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// `?` placeholders; pending events lie above the intake watermark.
    Sqlite,
    /// `$n` placeholders; pending events have a row in the small `event_work` table.
    Postgres,
}

/// Which of two indexed terms SQLite should drive the search with. It keeps no statistics
/// of which values are rare, so given `source` and `type` it may walk a common type's index
/// to find the few events of a rare source (0.6 s on 1 M events); the backend counts both
/// (capped, [`PROBE_CAP`]) and the other term's index is turned off (`+column`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Driver {
    /// Let the planner choose (one term, or PostgreSQL, which keeps statistics).
    #[default]
    Planner,
    Source,
    EventType,
    /// The id or subject search's candidates; neither index.
    Candidates,
}

/// Index entries a probe for [`Driver`] counts at most per term (~1 ms each).
pub(super) const PROBE_CAP: i64 = 5_000;

/// What a backend looked up for a filter before its SQL can be written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Lookups {
    /// The stored types a type glob (`payment.*`) matches; `None` when the type is exact.
    pub(super) glob_types: Option<Vec<String>>,
    /// SQLite's dedup index keys (`dedup_index::index_key`) the searched id has under each
    /// stored source (or the filter's source).
    pub(super) id_keys: Vec<Vec<u8>>,
    pub(super) driver: Driver,
}

/// Globs matching more types than this are one `IN` list (read from the newest down) rather
/// than a merge of each type's newest matches.
const MAX_MERGED_TYPES: usize = 32;

/// How far an event's `received_at` may lie before that of an event with a smaller seq (the
/// time a request waited for its commit; replicas' clocks): the seq bound of a time range is
/// widened by this much, and is exact as long as no event is later than this.
pub(super) const ARRIVAL_DISORDER_MS: i64 = 60 * 60 * 1000;

/// Every stored type, by a loose scan of `events_type` (one index step per type).
pub(super) const DISTINCT_TYPES_SQL: &str = "WITH RECURSIVE t(x) AS ( \
    SELECT min(event_type) FROM events \
    UNION ALL SELECT (SELECT min(event_type) FROM events WHERE event_type > t.x) FROM t \
    WHERE t.x IS NOT NULL) SELECT x FROM t WHERE x IS NOT NULL";

/// Every stored source, by a loose scan of `events_source`.
pub(super) const DISTINCT_SOURCES_SQL: &str = "WITH RECURSIVE t(x) AS ( \
    SELECT min(source) FROM events \
    UNION ALL SELECT (SELECT min(source) FROM events WHERE source > t.x) FROM t \
    WHERE t.x IS NOT NULL) SELECT x FROM t WHERE x IS NOT NULL";

/// Whether a type filter is a glob: `*` stands for any run of characters.
pub(super) fn is_glob(event_type: &str) -> bool {
    event_type.contains('*')
}

/// Whether `text` matches `glob` (`*`: any run of characters, including none and dots;
/// everything else stands for itself).
pub(super) fn glob_matches(glob: &str, text: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, inner)) = middle.split_last() else {
        return rest.is_empty();
    };
    for part in inner {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The stored types `glob` matches, when the filter's type is a glob.
pub(super) fn expand_glob(filter: &EventFilter, stored: &[String]) -> Option<Vec<String>> {
    let glob = filter.event_type.as_deref().filter(|t| is_glob(t))?;
    Some(
        stored
            .iter()
            .filter(|t| glob_matches(glob, t))
            .cloned()
            .collect(),
    )
}

/// The placeholders and terms of one `WHERE`, numbering PostgreSQL's `$n` after `args`.
struct Clause<'a> {
    dialect: Dialect,
    args: &'a mut Vec<FilterArg>,
    terms: Vec<String>,
}

impl Clause<'_> {
    fn mark(&mut self, value: FilterArg) -> String {
        self.args.push(value);
        match self.dialect {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${}", self.args.len()),
        }
    }

    /// A term whose `{}` is its one parameter's placeholder.
    fn term(&mut self, sql: &str, value: FilterArg) {
        let mark = self.mark(value);
        self.terms.push(sql.replace("{}", &mark));
    }

    /// `column` (or `+column` on SQLite, when another term drives the search).
    fn column(&self, name: &str, off: bool) -> String {
        if off && self.dialect == Dialect::Sqlite {
            format!("+{name}")
        } else {
            name.to_owned()
        }
    }

    fn finish(self) -> String {
        if self.terms.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.terms.join(" AND "))
        }
    }
}

/// How the type is filtered in one `WHERE`.
#[derive(Debug, Clone, Copy)]
enum TypeTerm<'a> {
    Any,
    Is(&'a str),
    OneOf(&'a [String]),
}

/// A scalar subquery: the lowest seq whose event (or the first stored after it) arrived at or
/// after `{}`, or the newest seq + 1. A binary search over the rowid (about 2 log2(n) index
/// steps). `received_at` rises with seq up to [`ARRIVAL_DISORDER_MS`], so with the margin
/// applied by the caller every event on the far side of the result is outside the range.
fn seq_bound(mark: &str) -> String {
    format!(
        "(WITH RECURSIVE b(lo, hi, t) AS ( \
           SELECT (SELECT coalesce(min(seq), 1) FROM events) - 1, \
                  (SELECT coalesce(max(seq), 0) FROM events) + 1, CAST({mark} AS bigint) \
           UNION ALL \
           SELECT CASE WHEN (SELECT received_at FROM events WHERE seq >= (b.lo + b.hi) / 2 \
                             ORDER BY seq LIMIT 1) < b.t THEN (b.lo + b.hi) / 2 ELSE b.lo END, \
                  CASE WHEN (SELECT received_at FROM events WHERE seq >= (b.lo + b.hi) / 2 \
                             ORDER BY seq LIMIT 1) < b.t THEN b.hi ELSE (b.lo + b.hi) / 2 END, \
                  b.t \
           FROM b WHERE b.hi - b.lo > 1) \
         SELECT min(hi) FROM b)"
    )
}

fn where_into(
    filter: &EventFilter,
    lookups: &Lookups,
    types: TypeTerm<'_>,
    dialect: Dialect,
    args: &mut Vec<FilterArg>,
) -> String {
    let mut c = Clause {
        dialect,
        args,
        terms: Vec::new(),
    };
    let status_is = |status: EventStatus| FilterArg::Text(status.as_str().to_owned());
    let driver = lookups.driver;
    if let Some(seq) = filter.seq {
        c.term("seq = {}", FilterArg::Int(seq));
    }
    if let Some(source) = &filter.source {
        let col = c.column(
            "source",
            matches!(driver, Driver::EventType | Driver::Candidates),
        );
        c.term(&format!("{col} = {{}}"), FilterArg::Text(source.clone()));
    }
    let type_col = c.column(
        "event_type",
        matches!(driver, Driver::Source | Driver::Candidates),
    );
    match types {
        TypeTerm::Any => {}
        TypeTerm::Is(t) => c.term(&format!("{type_col} = {{}}"), FilterArg::Text(t.to_owned())),
        // A glob matching no stored type: an empty rowid range (seqs start at 1), so that
        // the plan reads nothing, whatever the other terms.
        TypeTerm::OneOf([]) => c.terms.push("seq < 0".to_owned()),
        TypeTerm::OneOf(list) => {
            let marks: Vec<String> = list
                .iter()
                .map(|t| c.mark(FilterArg::Text(t.clone())))
                .collect();
            c.terms
                .push(format!("{type_col} IN ({})", marks.join(", ")));
        }
    }
    if let Some(id) = &filter.id {
        let mark = c.mark(FilterArg::Text(id.clone()));
        match dialect {
            // The seqs under the id's hash: every event since migration 9, which wrote the rows
            // of the events stored before it.
            Dialect::Postgres => {
                let hash = c.mark(FilterArg::Int(search_key(id)));
                c.terms.push(format!(
                    "dedup_key = {mark} AND seq = ANY (ARRAY({}))",
                    hashed_seqs("event_ids", &hash)
                ));
            }
            // The candidates: the seqs saved under the id's keys, and the events the saved
            // keys do not cover (not saved yet, or older than the dedup window).
            Dialect::Sqlite => {
                let keys: Vec<String> = lookups
                    .id_keys
                    .iter()
                    .map(|k| c.mark(FilterArg::Bytes(k.clone())))
                    .collect();
                let saved = if keys.is_empty() {
                    String::new()
                } else {
                    format!(
                        "SELECT seq FROM dedup_keys WHERE key IN ({}) UNION ALL ",
                        keys.join(", ")
                    )
                };
                c.terms.push(format!(
                    "dedup_key = {mark} AND seq IN ({saved}\
                     SELECT seq FROM events WHERE seq > \
                       (SELECT coalesce(max(seq), 0) FROM dedup_keys) \
                     UNION ALL SELECT seq FROM events WHERE seq < \
                       (SELECT coalesce(min(seq), 0) FROM dedup_keys))"
                ));
            }
        }
    }
    if let Some(subject) = &filter.subject {
        subject_term(&mut c, subject);
    }
    match (filter.status, dialect) {
        (None, _) => {}
        // Every event at or below the intake watermark has been routed (the watermark is
        // saved only behind the last recorded routing), so pending ones lie above it: a
        // rowid range, not a scan of the whole table.
        (Some(EventStatus::Pending), Dialect::Sqlite) => c.term(
            "status = {} AND seq > (SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta \
             WHERE key = 'intake_watermark')",
            status_is(EventStatus::Pending),
        ),
        // A pending event has its work row until its routing commits (inserted with the
        // event); the table holds only unfinished work, so this is a short list of seqs.
        (Some(EventStatus::Pending), Dialect::Postgres) => c.term(
            "status = {} AND seq IN (SELECT seq FROM event_work)",
            status_is(EventStatus::Pending),
        ),
        // Most events end `routed`: scanning from the newest finds them at once.
        (Some(EventStatus::Routed), _) => c.term("status = {}", status_is(EventStatus::Routed)),
        // The rare states are found through the partial index `routings_status` (the
        // `<> 'routed'` term is what lets the planner use it for a bound status), however
        // old the matches are.
        (Some(status), _) => c.term(
            "seq IN (SELECT seq FROM routings WHERE status = {} AND status <> 'routed')",
            status_is(status),
        ),
    }
    if let Some(since) = filter.since_ms {
        c.term("received_at >= {}", FilterArg::Int(since));
        let mark = c.mark(FilterArg::Int(since.saturating_sub(ARRIVAL_DISORDER_MS)));
        c.terms.push(format!("seq >= {}", seq_bound(&mark)));
    }
    if let Some(until) = filter.until_ms {
        c.term("received_at < {}", FilterArg::Int(until));
        let mark = c.mark(FilterArg::Int(until.saturating_add(ARRIVAL_DISORDER_MS)));
        c.terms.push(format!("seq < {}", seq_bound(&mark)));
    }
    if let Some(before) = filter.before_seq {
        c.term("seq < {}", FilterArg::Int(before));
    }
    c.finish()
}

/// The seqs PostgreSQL's rows of hashes (`event_subjects`, `event_ids`: one row per ingest
/// batch) hold under the hash `hash` (a placeholder), for `seq = ANY (ARRAY(..))`.
fn hashed_seqs(table: &str, hash: &str) -> String {
    format!(
        "SELECT u.seq FROM {table} s, unnest(s.seqs, s.hashes) AS u(seq, hash) \
          WHERE s.hashes @> ARRAY[{hash}::bigint] AND u.hash = {hash}"
    )
}

/// Events whose envelope's subject is `subject`: the seqs kept under the subject's hash, and
/// the events the hashes do not cover, each confirmed by its envelope. PostgreSQL keeps one row
/// of hashes per ingest batch (`event_subjects`) and covers everything stored since migration
/// 8; SQLite one row per event (`subject_keys`) and covers what its dedup index saved, since
/// the table exists.
fn subject_term(c: &mut Clause<'_>, subject: &str) {
    if subject.is_empty() {
        // No event is kept under an empty subject (ingest counts one as none).
        c.terms.push("seq < 0".to_owned());
        return;
    }
    let mark = c.mark(FilterArg::Text(subject.to_owned()));
    let hash = c.mark(FilterArg::Int(search_key(subject)));
    match c.dialect {
        Dialect::Postgres => {
            // The candidates as one array (`= ANY (ARRAY(..))`), looked up by primary key:
            // as `IN (subquery)`, the planner, misjudging how many the rows hold, walked the
            // events from the newest down for a small LIMIT (3.5-5 s at 1 M events).
            c.terms.push(format!(
                "envelope::json ->> 'subject' = {mark} AND seq = ANY (ARRAY({} \
                   UNION ALL SELECT seq FROM events WHERE seq < \
                     (SELECT coalesce(max(value::bigint), 1) FROM meta \
                      WHERE key = 'subjects_from')))",
                hashed_seqs("event_subjects", &hash)
            ));
        }
        Dialect::Sqlite => {
            c.terms.push(format!(
                "json_extract(envelope, '$.subject') = {mark} AND seq IN ( \
                 SELECT seq FROM subject_keys WHERE hash = {hash} \
                 UNION ALL SELECT seq FROM events WHERE seq > max( \
                   (SELECT coalesce(max(seq), 0) FROM dedup_keys), \
                   (SELECT coalesce(max(seq), 0) FROM subject_keys)) \
                 UNION ALL SELECT seq FROM events WHERE seq < \
                   (SELECT coalesce(max(CAST(value AS INTEGER)), 1) FROM meta \
                    WHERE key = 'subject_keys_from'))"
            ));
        }
    }
}

/// How the filter's type is written, and whether the newest matches of several types must
/// be merged.
fn type_term<'a>(filter: &'a EventFilter, lookups: &'a Lookups) -> TypeTerm<'a> {
    match (&lookups.glob_types, &filter.event_type) {
        (Some(types), _) if types.len() == 1 => TypeTerm::Is(&types[0]),
        (Some(types), _) => TypeTerm::OneOf(types),
        (None, Some(t)) => TypeTerm::Is(t),
        (None, None) => TypeTerm::Any,
    }
}

fn merged_types<'a>(filter: &'a EventFilter, lookups: &'a Lookups) -> Option<&'a [String]> {
    match type_term(filter, lookups) {
        TypeTerm::OneOf(list) if list.len() > 1 && list.len() <= MAX_MERGED_TYPES => Some(list),
        _ => None,
    }
}

/// `WHERE ...` (or empty) and its parameters, in order, for a filter whose type glob (if
/// any) needs no merge. PostgreSQL's placeholders are `$1`..`$n` (n = the parameters'
/// count), so a caller binding more uses `$n+1` on.
pub(super) fn where_clause(
    filter: &EventFilter,
    lookups: &Lookups,
    dialect: Dialect,
) -> (String, Vec<FilterArg>) {
    let mut args = Vec::new();
    let types = match merged_types(filter, lookups) {
        Some(list) => TypeTerm::OneOf(list),
        None => type_term(filter, lookups),
    };
    let clause = where_into(filter, lookups, types, dialect, &mut args);
    (clause, args)
}

/// The replay's extra term: events not routed yet or marked already are on their way
/// through the routes.
const NOT_UNDER_WAY: &str = "status NOT IN ('pending', 'replay')";

fn with_term(clause: String, term: &str) -> String {
    if clause.is_empty() {
        format!("WHERE {term}")
    } else {
        format!("{clause} AND {term}")
    }
}

/// `SELECT seq ... ORDER BY seq DESC LIMIT n`: the newest `limit` events the filter selects
/// (`replay`: the ones a replay would mark). With a glob of several types, the newest `limit`
/// of each type (each an index walk from the newest) merged: the newest of the union are
/// among them.
pub(super) fn newest_seqs(
    filter: &EventFilter,
    lookups: &Lookups,
    dialect: Dialect,
    replay: bool,
    limit: u32,
) -> (String, Vec<FilterArg>) {
    let mut args = Vec::new();
    let one = |types: TypeTerm<'_>, args: &mut Vec<FilterArg>| {
        let clause = where_into(filter, lookups, types, dialect, args);
        let clause = if replay {
            with_term(clause, NOT_UNDER_WAY)
        } else {
            clause
        };
        args.push(FilterArg::Int(i64::from(limit)));
        let mark = match dialect {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${}", args.len()),
        };
        format!("SELECT seq FROM event_states {clause} ORDER BY seq DESC LIMIT {mark}")
    };
    let sql = match merged_types(filter, lookups) {
        None => one(type_term(filter, lookups), &mut args),
        Some(list) => {
            let arms: Vec<String> = list
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let arm = one(TypeTerm::Is(t), &mut args);
                    format!("SELECT seq FROM ({arm}) AS t{i}")
                })
                .collect();
            args.push(FilterArg::Int(i64::from(limit)));
            let mark = match dialect {
                Dialect::Sqlite => "?".to_owned(),
                Dialect::Postgres => format!("${}", args.len()),
            };
            format!(
                "SELECT seq FROM ({}) AS merged ORDER BY seq DESC LIMIT {mark}",
                arms.join(" UNION ALL ")
            )
        }
    };
    (sql, args)
}

/// The listing: `columns` of the newest `limit` matching events, newest first.
pub(super) fn list_query(
    filter: &EventFilter,
    lookups: &Lookups,
    dialect: Dialect,
    columns: &str,
    limit: u32,
) -> (String, Vec<FilterArg>) {
    if merged_types(filter, lookups).is_some() {
        let (seqs, args) = newest_seqs(filter, lookups, dialect, false, limit);
        let sql =
            format!("SELECT {columns} FROM event_states WHERE seq IN ({seqs}) ORDER BY seq DESC");
        return (sql, args);
    }
    let (clause, mut args) = where_clause(filter, lookups, dialect);
    args.push(FilterArg::Int(i64::from(limit)));
    let mark = match dialect {
        Dialect::Sqlite => "?".to_owned(),
        Dialect::Postgres => format!("${}", args.len()),
    };
    let sql = format!("SELECT {columns} FROM event_states {clause} ORDER BY seq DESC LIMIT {mark}");
    (sql, args)
}

/// Which term SQLite should drive a filter with, from capped counts of each term's index
/// entries (`None`: the term is absent).
pub(super) fn driver(
    filter: &EventFilter,
    source_count: Option<i64>,
    type_count: Option<i64>,
) -> Driver {
    if filter.id.is_some() || filter.subject.is_some() {
        return Driver::Candidates;
    }
    match (source_count, type_count) {
        (Some(s), Some(t)) if s < t => Driver::Source,
        (Some(_), Some(_)) => Driver::EventType,
        _ => Driver::Planner,
    }
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
        let none = Lookups::default();
        let (pg, args) = where_clause(&filter, &none, Dialect::Postgres);
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
        let (lite, _) = where_clause(&filter, &none, Dialect::Sqlite);
        assert_eq!(lite.matches('?').count(), 3, "{lite}");
        assert_eq!(
            where_clause(&EventFilter::default(), &none, Dialect::Postgres).0,
            ""
        );
    }

    #[test]
    fn globs_match_runs_of_any_characters() {
        for (glob, text, matches) in [
            ("payment.*", "payment.succeeded", true),
            ("payment.*", "payment.", true),
            ("payment.*", "payments.x", false),
            ("*.failed", "payment.failed", true),
            ("*.failed", "payment.failed.old", false),
            ("p*t.*d", "payment.failed", true),
            ("*", "anything", true),
            ("a*a", "a", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_matches(glob, text), matches, "{glob} {text}");
        }
    }

    #[test]
    fn several_globbed_types_merge_each_types_newest_with_numbered_placeholders() {
        let filter = EventFilter {
            event_type: Some("payment.*".into()),
            source: Some("ledger".into()),
            ..EventFilter::default()
        };
        let lookups = Lookups {
            glob_types: Some(vec!["payment.failed".into(), "payment.succeeded".into()]),
            ..Lookups::default()
        };
        let (sql, args) = newest_seqs(&filter, &lookups, Dialect::Postgres, true, 10);
        assert_eq!(sql.matches("UNION ALL").count(), 1, "{sql}");
        assert_eq!(sql.matches("status NOT IN").count(), 2, "{sql}");
        // source, type, limit per arm, then the merged limit.
        assert_eq!(args.len(), 7, "{args:?}");
        assert!(sql.contains("$7"), "{sql}");
        assert!(!sql.contains("$8"), "{sql}");
        // A glob matching nothing stored selects nothing, without reading events.
        let nothing = Lookups {
            glob_types: Some(Vec::new()),
            ..Lookups::default()
        };
        assert!(
            where_clause(&filter, &nothing, Dialect::Sqlite)
                .0
                .contains("seq < 0")
        );
    }
}
