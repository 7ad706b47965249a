//! Query strings of the admin API: percent-decoding, the event filter and `limit`. A parameter
//! the endpoint does not take is an error (`Query::only`), so a typo never silently widens a
//! replay.

use crate::store::{EventFilter, EventStatus};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct QueryError(pub(super) String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Default)]
pub(super) struct Query(HashMap<String, String>);

impl Query {
    pub(super) fn parse(text: Option<&str>) -> Result<Self, QueryError> {
        let mut map = HashMap::new();
        for pair in text.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k)?, decode(v)?);
            if map.insert(k.clone(), v).is_some() {
                return Err(QueryError(format!("parameter `{k}` given twice")));
            }
        }
        Ok(Self(map))
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(super) fn limit(&self, default: u32, max: u32) -> Result<u32, QueryError> {
        match self.get("limit") {
            None => Ok(default),
            Some(t) => t
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| QueryError(format!("`limit` must be a number from 1 to {max}"))),
        }
    }

    pub(super) fn filter(&self) -> Result<EventFilter, QueryError> {
        let status = match self.get("status") {
            None => None,
            Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
                let all: Vec<&str> = EventStatus::ALL.iter().map(|s| s.as_str()).collect();
                QueryError(format!("`status` must be one of {}", all.join(", ")))
            })?),
        };
        let before_seq = self.before("an event seq")?;
        // No stored event has an empty subject (an empty one is none).
        if self.get("subject") == Some("") {
            return Err(QueryError("`subject` must not be empty".into()));
        }
        Ok(EventFilter {
            seq: None,
            source: self.get("source").map(str::to_owned),
            event_type: self.get("type").map(str::to_owned),
            id: self.get("id").map(str::to_owned),
            subject: self.get("subject").map(str::to_owned),
            status,
            since_ms: self.time("since")?,
            until_ms: self.time("until")?,
            before_seq,
        })
    }

    /// A `true`/`false` parameter; absent is false. Anything else is refused rather than
    /// read as either.
    pub(super) fn flag(&self, key: &str) -> Result<bool, QueryError> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(QueryError(format!("`{key}` must be true or false"))),
        }
    }

    /// `before`: a page starts below this id (`what` names the kind of id in the error).
    pub(super) fn before(&self, what: &str) -> Result<Option<i64>, QueryError> {
        self.get("before")
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| QueryError(format!("`before` must be {what}")))
            })
            .transpose()
    }

    /// Refuses the given parameters that `endpoint` does not take (rather than ignore them).
    /// Every endpoint calls it: a parameter nobody takes is a typo, one another endpoint takes
    /// is a mistake (`all` on a single replay, `status` on the dead letters).
    pub(super) fn only(&self, allowed: &[&str], endpoint: &str) -> Result<(), QueryError> {
        let mut extra: Vec<&str> = self
            .0
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        extra.sort_unstable();
        let takes = match allowed {
            [] => "no parameters".to_owned(),
            _ => allowed.join(", "),
        };
        match extra.first() {
            None => Ok(()),
            Some(k) => Err(QueryError(format!(
                "`{k}` does not apply to {endpoint} (it takes: {takes})"
            ))),
        }
    }

    /// RFC 3339 (`2026-11-23T10:00:00Z`) or unix milliseconds.
    pub(super) fn time(&self, key: &str) -> Result<Option<i64>, QueryError> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        if let Ok(ms) = text.parse::<i64>() {
            return Ok(Some(ms));
        }
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .map(Some)
            .ok_or_else(|| {
                QueryError(format!(
                    "`{key}` must be RFC 3339 (2026-01-31T12:00:00Z) or unix milliseconds"
                ))
            })
    }
}

/// Percent-decoding (`+` is a space, as in forms).
fn decode(text: &str) -> Result<String, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| QueryError("bad percent-encoding in the query".into()))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError("the query is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_typos_are_refused() {
        let q = Query::parse(Some("source=ledger&type=ledger.transaction.completed&status=routed&since=2026-01-01T00:00:00Z&limit=5"))
            .expect("parses");
        let f = q.filter().expect("filter");
        assert_eq!(f.source.as_deref(), Some("ledger"));
        assert_eq!(f.status, Some(EventStatus::Routed));
        assert_eq!(f.since_ms, Some(1_767_225_600_000));
        assert_eq!(q.limit(100, 1000), Ok(5));
        let typo = Query::parse(Some("sourse=ledger")).expect("parses");
        assert_eq!(
            typo.only(&["source", "limit"], "/admin/events"),
            Err(QueryError(
                "`sourse` does not apply to /admin/events (it takes: source, limit)".into()
            ))
        );
        assert_eq!(
            Query::parse(Some("all=true"))
                .expect("parses")
                .only(&[], "/admin/plugins"),
            Err(QueryError(
                "`all` does not apply to /admin/plugins (it takes: no parameters)".into()
            ))
        );
        assert_eq!(
            Query::parse(Some("subject=&limit=5"))
                .expect("parses")
                .filter()
                .err(),
            Some(QueryError("`subject` must not be empty".into()))
        );
        assert!(
            Query::parse(Some("status=bogus"))
                .expect("parses")
                .filter()
                .is_err()
        );
        assert!(
            Query::parse(Some("limit=0"))
                .expect("parses")
                .limit(1, 10)
                .is_err()
        );
        assert_eq!(
            Query::parse(Some("type=a%2Eb+c"))
                .expect("parses")
                .get("type"),
            Some("a.b c")
        );
    }
}
