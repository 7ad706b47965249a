//! The gateway's own account of a phase, from its `/metrics` before and after: how many
//! commits, how big the batches, how long a commit took, and the server-side ack latency
//! quantiles (bucket upper bounds). Set next to the client's figures it says where the time
//! went: in the store, in the server, or on the way. For `loadgen e2e` also the stage after the
//! ack ([`describe_flow`]): events routed, plugin calls, delivery attempts, the backlog.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The store and ack series of one `/metrics` scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    commit_seconds: f64,
    commits: f64,
    batch_items: f64,
    /// `gateway_ack_duration_seconds` cumulative buckets: (upper bound, count), summed over sources.
    ack_buckets: Vec<(f64, f64)>,
    /// Counters by (metric, `result` label), summed over the other labels: deliveries, routed
    /// events, plugin calls.
    results: BTreeMap<(&'static str, String), f64>,
    /// Histogram (sum, count) pairs of the flow: plugin call and delivery attempt durations.
    plugin_seconds: (f64, f64),
    delivery_seconds: (f64, f64),
    /// Gauges (refreshed by the gateway about once a second).
    queue_depth: f64,
    dead_letters: f64,
}

const DELIVERIES: &str = "gateway_deliveries_total";
const ROUTED: &str = "gateway_routed_events_total";
const PLUGIN_CALLS: &str = "gateway_plugin_calls_total";
const BY_RESULT: [&str; 3] = [DELIVERIES, ROUTED, PLUGIN_CALLS];

/// The value of label `name` in a series like `metric{a="x",name="y"}`.
fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let (_, labels) = series.split_once('{')?;
    labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim_matches('"'))
}

pub(crate) async fn scrape(addr: SocketAddr) -> anyhow::Result<Snapshot> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: loadgen\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text
        .split_once("\r\n\r\n")
        .context("no HTTP body in the /metrics answer")?;
    let mut snap = Snapshot::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or(series);
        if let Some(m) = BY_RESULT.into_iter().find(|m| *m == metric) {
            let result = label(series, "result").unwrap_or("").to_owned();
            *snap.results.entry((m, result)).or_default() += value;
            continue;
        }
        match metric {
            "gateway_plugin_duration_seconds_sum" => snap.plugin_seconds.0 += value,
            "gateway_plugin_duration_seconds_count" => snap.plugin_seconds.1 += value,
            "gateway_delivery_duration_seconds_sum" => snap.delivery_seconds.0 += value,
            "gateway_delivery_duration_seconds_count" => snap.delivery_seconds.1 += value,
            "gateway_queue_depth" => snap.queue_depth = value,
            "gateway_dead_letters" => snap.dead_letters = value,
            _ => {}
        }
        if series.starts_with("gateway_store_commit_duration_seconds_sum") {
            snap.commit_seconds += value;
        } else if series.starts_with("gateway_store_commit_duration_seconds_count") {
            snap.commits += value;
        } else if series.starts_with("gateway_store_batch_size_sum") {
            snap.batch_items += value;
        } else if let Some(rest) = series.strip_prefix("gateway_ack_duration_seconds_bucket{") {
            let le = rest
                .split("le=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(|s| {
                    if s == "+Inf" {
                        f64::INFINITY
                    } else {
                        s.parse().unwrap_or(f64::NAN)
                    }
                });
            if let Some(le) = le.filter(|l| !l.is_nan()) {
                match snap.ack_buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, count)) => *count += value,
                    None => snap.ack_buckets.push((le, value)),
                }
            }
        }
    }
    snap.ack_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(snap)
}

/// What happened between two scrapes, as one line.
pub(crate) fn describe(before: &Snapshot, after: &Snapshot, phase: std::time::Duration) -> String {
    let commits = after.commits - before.commits;
    let items = after.batch_items - before.batch_items;
    let seconds = after.commit_seconds - before.commit_seconds;
    let deltas: Vec<(f64, f64)> = after
        .ack_buckets
        .iter()
        .map(|(le, n)| {
            let was = before
                .ack_buckets
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - was)
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, n)| *n);
    let quantile = |q: f64| {
        deltas
            .iter()
            .find(|(_, n)| *n >= q * total)
            .map_or("-".to_owned(), |(le, _)| format!("<={:.1}ms", le * 1e3))
    };
    if commits < 1.0 {
        return "no commits".to_owned();
    }
    // One SQLite writer commits one batch at a time; a PostgreSQL pool overlaps several, and
    // a share of the phase above 100% would read as nonsense.
    let busy = seconds / phase.as_secs_f64();
    let busy = if busy <= 1.0 {
        format!("{:.0}% of the phase busy committing", busy * 100.0)
    } else {
        format!("{busy:.1} commits in flight on average")
    };
    format!(
        "{commits:.0} commits, {:.1} items/commit, commit {:.2} ms mean ({busy}); server-side ack p50 {} p99 {} p99.9 {}",
        items / commits,
        seconds / commits * 1e3,
        quantile(0.5),
        quantile(0.99),
        quantile(0.999),
    )
}

impl Snapshot {
    /// `gateway_queue_depth` and `gateway_dead_letters` (refreshed about once a second).
    pub(crate) fn backlog(&self) -> (f64, f64) {
        (self.queue_depth, self.dead_letters)
    }
}

/// The stage after the ack between two scrapes, as one line: what routing made of the events,
/// plugin calls by result and mean duration, delivery attempts by result and mean duration,
/// and the backlog gauges at the second scrape.
pub(crate) fn describe_flow(before: &Snapshot, after: &Snapshot) -> String {
    let by_result = |metric: &str| {
        let parts: Vec<String> = after
            .results
            .iter()
            .filter(|((m, _), _)| *m == metric)
            .filter_map(|((m, result), n)| {
                let was = before.results.get(&(*m, result.clone())).unwrap_or(&0.0);
                let delta = n - was;
                (delta > 0.0).then(|| format!("{result} {delta:.0}"))
            })
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    };
    let mean_ms = |b: (f64, f64), a: (f64, f64)| {
        let n = a.1 - b.1;
        if n >= 1.0 {
            format!("{:.2} ms", (a.0 - b.0) / n * 1e3)
        } else {
            "-".to_owned()
        }
    };
    format!(
        "routed: {}; plugin calls: {} (mean {}); delivery attempts: {} (mean {}); queue depth {:.0}, dead letters {:.0}",
        by_result(ROUTED),
        by_result(PLUGIN_CALLS),
        mean_ms(before.plugin_seconds, after.plugin_seconds),
        by_result(DELIVERIES),
        mean_ms(before.delivery_seconds, after.delivery_seconds),
        after.queue_depth,
        after.dead_letters,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_found_by_name() {
        let s = r#"gateway_deliveries_total{destination="sink",result="ok"}"#;
        assert_eq!(label(s, "result"), Some("ok"));
        assert_eq!(label(s, "destination"), Some("sink"));
        assert_eq!(label(s, "nope"), None);
        assert_eq!(label("gateway_queue_depth", "result"), None);
    }
}
