//! Dead letters as the person on call looks at them: dead deliveries grouped by destination
//! and reason with the money stuck in each group (exact decimal sums per currency of the
//! amounts each kept when it died, see stuck_amount.rs), and dead deliveries or dead plugin
//! stages selected by a filter for a redrive that pages through all of them in id order up to
//! a bound fixed by its dry run (so it redrives exactly what was counted, not what died since).
//! The SQL is the same on both backends but for placeholders and the type glob's operator;
//! this module never runs a query.

use super::event_filter::{Dialect, FilterArg};
use super::stuck_amount::Decimal;
#[cfg(test)]
use super::stuck_amount::{StuckAmount, stuck_columns};
use serde::Serialize;
use std::collections::BTreeMap;

/// Which dead letters a filtered redrive selects: dead deliveries, or with `plugin_stages`
/// the dead plugin stages (route runs: dead letters that died in a plugin, before any
/// destination); no other field set selects every one of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    pub plugin_stages: bool,
    /// A plugin stage has none: with `plugin_stages`, a destination selects nothing.
    pub destination: Option<String>,
    pub route: Option<String>,
    /// The dead letter's reason (a delivery's `last_error`, a stage's `reason`), exactly as
    /// listed.
    pub reason: Option<String>,
    pub source: Option<String>,
    /// The event's type, or a glob of types (`payment.*`: `*` stands for any run of
    /// characters, as in the events list).
    pub event_type: Option<String>,
    /// Died (last changed) at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Died before (unix ms).
    pub until_ms: Option<i64>,
}

impl DeadFilter {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The dead deliveries to one destination that died for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterGroup {
    pub destination: String,
    pub reason: Option<String>,
    pub count: u64,
    /// When the oldest of them died (unix ms).
    pub oldest_at: i64,
    /// The sum of the amounts per currency (upper case; `""` when the payload names none),
    /// exact decimal text.
    pub amounts: Vec<CurrencySum>,
    /// Dead letters with an amount that is not a plain decimal (not summed).
    pub unsummed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencySum {
    pub currency: String,
    pub sum: String,
}

/// The dead deliveries aggregated by destination, reason, currency and scale, from their own
/// columns (never their envelopes): an index-only walk of `deliveries_dead_groups` on SQLite,
/// the dead rows through `deliveries_dead` on PostgreSQL. The units are summed in two parts
/// (quotient and remainder of 10^9) so no sum overflows an i64 on SQLite, however many rows;
/// the sums come back as text (PostgreSQL's are `numeric`).
pub(super) const GROUP_ROWS_SQL: &str = "SELECT destination, last_error, currency, amount_scale, \
     count(*), min(updated_at), CAST(sum(amount_units / 1000000000) AS TEXT), \
     CAST(sum(amount_units % 1000000000) AS TEXT), count(amount) - count(amount_units) \
     FROM deliveries WHERE status = 'dead' \
     GROUP BY destination, last_error, currency, amount_scale";

/// The few dead deliveries with an amount the aggregate does not sum (not a plain decimal,
/// or beyond an i64 of units): read one by one and summed exactly here, or counted unsummed.
pub(super) const LOOSE_AMOUNTS_SQL: &str = "SELECT destination, last_error, currency, amount \
     FROM deliveries WHERE status = 'dead' AND amount IS NOT NULL AND amount_units IS NULL";

/// One row of [`GROUP_ROWS_SQL`].
#[derive(Debug, Clone, Default)]
pub(super) struct GroupRow {
    pub(super) destination: String,
    pub(super) reason: Option<String>,
    pub(super) currency: Option<String>,
    pub(super) scale: Option<i64>,
    pub(super) count: i64,
    pub(super) oldest_at: i64,
    pub(super) units_high: Option<String>,
    pub(super) units_low: Option<String>,
    /// Rows with an amount left out of the sums (read by [`LOOSE_AMOUNTS_SQL`]).
    pub(super) loose: i64,
}

impl GroupRow {
    pub(super) fn read<E>(r: &impl super::views::ViewRow<Error = E>) -> Result<Self, E> {
        Ok(Self {
            destination: r.text(0)?,
            reason: r.opt_text(1)?,
            currency: r.opt_text(2)?,
            scale: r.opt_int(3)?,
            count: r.int(4)?,
            oldest_at: r.int(5)?,
            units_high: r.opt_text(6)?,
            units_low: r.opt_text(7)?,
            loose: r.int(8)?,
        })
    }

    /// The group's summed amount, exactly.
    fn sum(&self) -> Option<Option<Decimal>> {
        let (high, low, scale) = (
            self.units_high.as_ref()?,
            self.units_low.as_ref()?,
            self.scale?,
        );
        let units = high
            .parse::<i128>()
            .ok()
            .and_then(|h| h.checked_mul(1_000_000_000))
            .zip(low.parse::<i128>().ok())
            .and_then(|(h, l)| h.checked_add(l));
        Some(
            units
                .zip(u32::try_from(scale).ok())
                .map(|(units, scale)| Decimal { units, scale }),
        )
    }
}

/// One row of [`LOOSE_AMOUNTS_SQL`].
#[derive(Debug, Clone)]
pub(super) struct LooseAmount {
    pub(super) destination: String,
    pub(super) reason: Option<String>,
    pub(super) currency: Option<String>,
    pub(super) amount: String,
}

impl LooseAmount {
    pub(super) fn read<E>(r: &impl super::views::ViewRow<Error = E>) -> Result<Self, E> {
        Ok(Self {
            destination: r.text(0)?,
            reason: r.opt_text(1)?,
            currency: r.opt_text(2)?,
            amount: r.text(3)?,
        })
    }
}

/// Groups the aggregate's rows by (destination, reason), biggest group first, adding the
/// loose amounts (`loose` is empty when no row counted any).
pub(super) fn group(rows: Vec<GroupRow>, loose: Vec<LooseAmount>) -> Vec<DeadLetterGroup> {
    #[derive(Default)]
    struct Acc {
        count: u64,
        oldest_at: Option<i64>,
        sums: BTreeMap<String, Option<Decimal>>,
        unsummed: u64,
    }
    fn add(acc: &mut Acc, currency: Option<String>, value: Option<Decimal>) {
        let sum = acc
            .sums
            .entry(currency.unwrap_or_default())
            .or_insert(Some(Decimal { units: 0, scale: 0 }));
        // An overflow (beyond 38 digits) leaves that currency's sum unknown.
        *sum = sum.zip(value).and_then(|(s, v)| s.checked_add(v));
    }
    let mut groups: BTreeMap<(String, Option<String>), Acc> = BTreeMap::new();
    for row in rows {
        let sum = row.sum();
        let acc = groups.entry((row.destination, row.reason)).or_default();
        acc.count += u64::try_from(row.count).unwrap_or_default();
        acc.oldest_at = Some(
            acc.oldest_at
                .map_or(row.oldest_at, |t| t.min(row.oldest_at)),
        );
        if let Some(value) = sum {
            add(acc, row.currency, value);
        }
    }
    for row in loose {
        let acc = groups.entry((row.destination, row.reason)).or_default();
        match Decimal::parse(&row.amount) {
            Some(value) => add(acc, row.currency, Some(value)),
            None => acc.unsummed += 1,
        }
    }
    let mut out: Vec<DeadLetterGroup> = groups
        .into_iter()
        .map(|((destination, reason), acc)| DeadLetterGroup {
            destination,
            reason,
            count: acc.count,
            oldest_at: acc.oldest_at.unwrap_or_default(),
            amounts: acc
                .sums
                .into_iter()
                .map(|(currency, sum)| CurrencySum {
                    currency,
                    sum: sum.map_or_else(|| "overflow".to_owned(), |s| s.to_string()),
                })
                .collect(),
            unsummed: acc.unsummed,
        })
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.count));
    out
}

/// The table of the dead letters `filter` selects (always aliased `d`, joined to its event
/// `e`), through its partial index of dead rows (`deliveries_dead`, `route_runs_dead`).
fn table(filter: &DeadFilter) -> &'static str {
    if filter.plugin_stages {
        "route_runs"
    } else {
        "deliveries"
    }
}

/// The `WHERE` of dead letters `d` (joined to their event `e`) matching `filter`, with
/// `id` above `after` and at most `through`; its parameters in order.
fn matching(
    filter: &DeadFilter,
    after: i64,
    through: i64,
    dialect: Dialect,
) -> (String, Vec<FilterArg>) {
    let mut args = vec![FilterArg::Int(after), FilterArg::Int(through)];
    let mut terms = vec![
        "d.status = 'dead'".to_owned(),
        "d.id > {}".to_owned(),
        "d.id <= {}".to_owned(),
    ];
    let mut term = |sql: &str, value: FilterArg| {
        args.push(value);
        terms.push(sql.to_owned());
    };
    let text = |v: &String| FilterArg::Text(v.clone());
    if let Some(v) = &filter.destination {
        if filter.plugin_stages {
            // A plugin stage has no destination, so none is to this one (ids start at 1).
            term("d.id < {}", FilterArg::Int(0));
        } else {
            term("d.destination = {}", text(v));
        }
    }
    if let Some(v) = &filter.route {
        term("d.route = {}", text(v));
    }
    if let Some(v) = &filter.reason {
        if filter.plugin_stages {
            term("d.reason = {}", text(v));
        } else {
            term("d.last_error = {}", text(v));
        }
    }
    if let Some(v) = &filter.source {
        term("e.source = {}", text(v));
    }
    if let Some(v) = &filter.event_type {
        match type_glob(v, dialect) {
            Some((sql, pattern)) => term(sql, FilterArg::Text(pattern)),
            None => term("e.event_type = {}", text(v)),
        }
    }
    if let Some(v) = filter.since_ms {
        term("d.updated_at >= {}", FilterArg::Int(v));
    }
    if let Some(v) = filter.until_ms {
        term("d.updated_at < {}", FilterArg::Int(v));
    }
    let mut n = 0;
    let terms: Vec<String> = terms
        .into_iter()
        .map(|t| {
            if !t.contains("{}") {
                return t;
            }
            n += 1;
            let mark = match dialect {
                Dialect::Sqlite => "?".to_owned(),
                Dialect::Postgres => format!("${n}"),
            };
            t.replace("{}", &mark)
        })
        .collect();
    (terms.join(" AND "), args)
}

/// A type glob (`*`: any run of characters, everything else itself, as
/// [`super::event_filter::glob_matches`]) as a pattern term: SQLite's `GLOB` (case-sensitive;
/// its own `?` and `[` escaped), PostgreSQL's `LIKE` (`%` and `_` escaped). `None`: no `*`.
fn type_glob(glob: &str, dialect: Dialect) -> Option<(&'static str, String)> {
    if !super::event_filter::is_glob(glob) {
        return None;
    }
    let mut pattern = String::with_capacity(glob.len() + 8);
    for c in glob.chars() {
        match (dialect, c) {
            (Dialect::Sqlite, '*') => pattern.push('*'),
            (Dialect::Postgres, '*') => pattern.push('%'),
            (Dialect::Sqlite, '?' | '[') => {
                pattern.push('[');
                pattern.push(c);
                pattern.push(']');
            }
            (Dialect::Postgres, '%' | '_' | '\\') => {
                pattern.push('\\');
                pattern.push(c);
            }
            _ => pattern.push(c),
        }
    }
    let sql = match dialect {
        Dialect::Sqlite => "e.event_type GLOB {}",
        Dialect::Postgres => "e.event_type LIKE {} ESCAPE '\\'",
    };
    Some((sql, pattern))
}

/// The matching dead letters' count and highest id (the bound a redrive pages up to).
pub(super) fn count_sql(filter: &DeadFilter, dialect: Dialect) -> (String, Vec<FilterArg>) {
    let (clause, args) = matching(filter, 0, i64::MAX, dialect);
    (
        format!(
            "SELECT count(*), max(d.id) FROM {} d JOIN events e ON e.seq = d.event_seq \
             WHERE {clause}",
            table(filter)
        ),
        args,
    )
}

/// The ids of the next `limit` matching dead letters after `after`, up to `through`.
pub(super) fn page_sql(
    filter: &DeadFilter,
    after: i64,
    through: i64,
    limit: u32,
    dialect: Dialect,
) -> (String, Vec<FilterArg>) {
    let (clause, args) = matching(filter, after, through, dialect);
    (
        format!(
            "SELECT d.id FROM {} d JOIN events e ON e.seq = d.event_seq \
             WHERE {clause} ORDER BY d.id LIMIT {limit}",
            table(filter)
        ),
        args,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dead deliveries' stored amounts aggregated as [`GROUP_ROWS_SQL`] and
    /// [`LOOSE_AMOUNTS_SQL`] do (one row each here), then grouped.
    fn group_of(dead: &[(&str, &str, i64, &str)]) -> Vec<DeadLetterGroup> {
        let mut rows = Vec::new();
        let mut loose = Vec::new();
        for (destination, reason, at, data) in dead {
            let stuck = StuckAmount::of_envelope(&format!(r#"{{"data":{data}}}"#));
            let (amount, currency, units, scale) = stuck_columns(stuck.as_ref());
            let split = |f: fn(i64) -> i64| units.map(|u| f(u).to_string());
            rows.push(GroupRow {
                destination: (*destination).into(),
                reason: Some((*reason).into()),
                currency: currency.map(str::to_owned),
                scale,
                count: 1,
                oldest_at: *at,
                units_high: split(|u| u / 1_000_000_000),
                units_low: split(|u| u % 1_000_000_000),
                loose: i64::from(amount.is_some() && units.is_none()),
            });
            if let (Some(amount), None) = (amount, units) {
                loose.push(LooseAmount {
                    destination: (*destination).into(),
                    reason: Some((*reason).into()),
                    currency: currency.map(str::to_owned),
                    amount: amount.to_owned(),
                });
            }
        }
        group(rows, loose)
    }

    #[test]
    fn amounts_are_summed_exactly_per_currency_in_each_group() {
        let groups = group_of(&[
            (
                "ledger",
                "HTTP 503",
                5,
                r#"{"amount":"0.10","currency":"eur"}"#,
            ),
            (
                "ledger",
                "HTTP 503",
                3,
                r#"{"amount":"0.2","currency":"EUR"}"#,
            ),
            ("ledger", "HTTP 503", 4, r#"{"amount":12,"currency":"USD"}"#),
            (
                "ledger",
                "HTTP 503",
                6,
                r#"{"amount":"1e3","currency":"USD"}"#,
            ),
            ("ledger", "HTTP 503", 6, r#"{"note":"no amount"}"#),
            (
                "ledger",
                "timeout",
                1,
                r#"{"Amount":"-99999999999999999999.99","coin":"btc"}"#,
            ),
            (
                "ledger",
                "timeout",
                2,
                r#"{"Amount":"-9223372036854775807.99","coin":"btc"}"#,
            ),
            ("ledger", "timeout", 2, r#"{"amount":"0.01","coin":"btc"}"#),
        ]);
        assert_eq!(groups.len(), 2);
        let first = &groups[0];
        assert_eq!(
            (first.reason.as_deref(), first.count, first.oldest_at),
            (Some("HTTP 503"), 5, 3)
        );
        assert_eq!(
            first.amounts,
            [
                CurrencySum {
                    currency: "EUR".into(),
                    sum: "0.30".into()
                },
                CurrencySum {
                    currency: "USD".into(),
                    sum: "12".into()
                },
            ]
        );
        assert_eq!(first.unsummed, 1);
        // Beyond an i64 of units: summed apart from the aggregate, still exactly.
        assert_eq!(groups[1].amounts[0].sum, "-109223372036854775807.97");
        // Units split around 10^9 add back exactly, negative ones too.
        let stuck = StuckAmount::of_envelope(r#"{"data":{"amount":"-12345678901.5"}}"#);
        assert_eq!(
            stuck.map(|s| (s.units, s.scale, s.currency)),
            Some((Some(-123_456_789_015), Some(1), None))
        );
        // 0.1 + 0.2 in binary floating point is 0.30000000000000004.
        let a = Decimal::parse("0.1").and_then(|a| a.checked_add(Decimal::parse("0.2")?));
        assert_eq!(a.map(|d| d.to_string()).as_deref(), Some("0.3"));
        assert_eq!(
            Decimal::parse("-0.05").map(|d| d.to_string()).as_deref(),
            Some("-0.05")
        );
        for bad in ["", ".", "1,000", "1e3", "--1", "1.2.3", "NaN"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn type_globs_escape_what_each_backend_would_read_as_a_wildcard() {
        assert_eq!(type_glob("payment.failed", Dialect::Sqlite), None);
        assert_eq!(
            type_glob("a_b%c\\*?[x]", Dialect::Postgres),
            Some((
                "e.event_type LIKE {} ESCAPE '\\'",
                "a\\_b\\%c\\\\%?[x]".to_owned()
            ))
        );
        assert_eq!(
            type_glob("a_b%*?[x]", Dialect::Sqlite),
            Some(("e.event_type GLOB {}", "a_b%*[?][[]x]".to_owned()))
        );
    }

    #[test]
    fn filters_bind_every_value_and_number_postgres_placeholders() {
        let filter = DeadFilter {
            destination: Some("x' --".into()),
            reason: Some("HTTP 503".into()),
            since_ms: Some(5),
            ..DeadFilter::default()
        };
        let (sql, args) = page_sql(&filter, 10, 99, 1000, Dialect::Postgres);
        assert!(
            sql.contains("d.id > $1 AND d.id <= $2 AND d.destination = $3"),
            "{sql}"
        );
        assert!(sql.contains("d.updated_at >= $5"), "{sql}");
        assert!(!sql.contains("x'"), "{sql}");
        assert_eq!(args.len(), 5);
        let (lite, _) = count_sql(&filter, Dialect::Sqlite);
        assert_eq!(lite.matches('?').count(), 5, "{lite}");
    }
}
