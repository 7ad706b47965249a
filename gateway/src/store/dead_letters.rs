//! Dead deliveries as the person on call looks at them: grouped by destination and reason
//! with the money stuck in each group (exact decimal sums per currency, from the amounts the
//! event listing shows), and selected by a filter for a redrive that pages through all of them
//! in id order up to a bound fixed by its dry run (so it redrives exactly what was counted,
//! not what died since). The SQL is the same on both backends but for placeholders; this
//! module never runs a query.

use super::event_filter::{Dialect, FilterArg};
use serde::Serialize;
use std::collections::BTreeMap;

/// Which dead deliveries a filtered redrive selects; no field set selects every one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    pub destination: Option<String>,
    /// The dead letter's reason (`last_error`), exactly as listed.
    pub reason: Option<String>,
    pub source: Option<String>,
    /// The event's type, exactly.
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

/// Every dead delivery with what grouping needs: destination, reason, when it died and the
/// envelope it would send (the amount's source). One walk of `deliveries_dead`.
pub(super) const GROUP_ROWS_SQL: &str = "SELECT d.destination, d.last_error, d.updated_at, \
     coalesce(d.envelope, e.envelope) \
     FROM deliveries d JOIN stored_events e ON e.seq = d.event_seq \
     WHERE d.status = 'dead'";

/// One dead delivery as [`GROUP_ROWS_SQL`] reads it.
pub(super) struct DeadRow {
    pub(super) destination: String,
    pub(super) reason: Option<String>,
    pub(super) died_at: i64,
    pub(super) envelope: String,
}

/// A decimal as an integer and its count of fraction digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    units: i128,
    scale: u32,
}

impl Decimal {
    /// `-12.34`, `5`, `+0.5`; no exponents, no separators (those are left unsummed).
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole
                .chars()
                .chain(fraction.chars())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let scale = u32::try_from(fraction.len()).ok()?;
        let mut units: i128 = 0;
        for c in whole.chars().chain(fraction.chars()) {
            units = units
                .checked_mul(10)?
                .checked_add(i128::from(c.to_digit(10)?))?;
        }
        Some(Self {
            units: if negative { -units } else { units },
            scale,
        })
    }

    fn rescaled(self, scale: u32) -> Option<Self> {
        let factor = 10_i128.checked_pow(scale.checked_sub(self.scale)?)?;
        Some(Self {
            units: self.units.checked_mul(factor)?,
            scale,
        })
    }

    fn checked_add(self, other: Self) -> Option<Self> {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.rescaled(scale)?, other.rescaled(scale)?);
        Some(Self {
            units: a.units.checked_add(b.units)?,
            scale,
        })
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let digits = self.units.unsigned_abs().to_string();
        let scale = usize::try_from(self.scale).unwrap_or(usize::MAX);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

/// Groups dead deliveries by (destination, reason), biggest group first.
pub(super) fn group(rows: Vec<DeadRow>) -> Vec<DeadLetterGroup> {
    #[derive(Default)]
    struct Acc {
        count: u64,
        oldest_at: Option<i64>,
        sums: BTreeMap<String, Option<Decimal>>,
        unsummed: u64,
    }
    let mut groups: BTreeMap<(String, Option<String>), Acc> = BTreeMap::new();
    for row in rows {
        let acc = groups.entry((row.destination, row.reason)).or_default();
        acc.count += 1;
        acc.oldest_at = Some(acc.oldest_at.map_or(row.died_at, |t| t.min(row.died_at)));
        let envelope = serde_json::from_str::<serde_json::Value>(&row.envelope).unwrap_or_default();
        let (amount, currency) = super::views::money(&envelope);
        let Some(amount) = amount else { continue };
        match Decimal::parse(&amount) {
            Some(value) => {
                let sum = acc
                    .sums
                    .entry(currency.unwrap_or_default())
                    .or_insert(Some(Decimal { units: 0, scale: 0 }));
                // An overflow (beyond 38 digits) leaves that currency's sum unknown.
                *sum = sum.and_then(|s| s.checked_add(value));
            }
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

/// The `WHERE` of dead deliveries `d` (joined to their event `e`) matching `filter`, with
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
        term("d.destination = {}", text(v));
    }
    if let Some(v) = &filter.reason {
        term("d.last_error = {}", text(v));
    }
    if let Some(v) = &filter.source {
        term("e.source = {}", text(v));
    }
    if let Some(v) = &filter.event_type {
        term("e.event_type = {}", text(v));
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

/// The matching dead deliveries' count and highest id (the bound a redrive pages up to).
pub(super) fn count_sql(filter: &DeadFilter, dialect: Dialect) -> (String, Vec<FilterArg>) {
    let (clause, args) = matching(filter, 0, i64::MAX, dialect);
    (
        format!(
            "SELECT count(*), max(d.id) FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE {clause}"
        ),
        args,
    )
}

/// The ids of the next `limit` matching dead deliveries after `after`, up to `through`.
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
            "SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE {clause} ORDER BY d.id LIMIT {limit}"
        ),
        args,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(destination: &str, reason: &str, at: i64, data: &str) -> DeadRow {
        DeadRow {
            destination: destination.into(),
            reason: Some(reason.into()),
            died_at: at,
            envelope: format!(r#"{{"data":{data}}}"#),
        }
    }

    #[test]
    fn amounts_are_summed_exactly_per_currency_in_each_group() {
        let groups = group(vec![
            row(
                "ledger",
                "HTTP 503",
                5,
                r#"{"amount":"0.10","currency":"eur"}"#,
            ),
            row(
                "ledger",
                "HTTP 503",
                3,
                r#"{"amount":"0.2","currency":"EUR"}"#,
            ),
            row("ledger", "HTTP 503", 4, r#"{"amount":12,"currency":"USD"}"#),
            row(
                "ledger",
                "HTTP 503",
                6,
                r#"{"amount":"1e3","currency":"USD"}"#,
            ),
            row("ledger", "HTTP 503", 6, r#"{"note":"no amount"}"#),
            row(
                "ledger",
                "timeout",
                1,
                r#"{"Amount":"-99999999999999999999.99","coin":"btc"}"#,
            ),
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
        assert_eq!(groups[1].amounts[0].sum, "-99999999999999999999.99");
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
