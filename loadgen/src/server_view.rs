//! The gateway's own account of a phase, from its `/metrics` before and after: how many
//! commits, how big the batches, how long a commit took, and the server-side ack latency
//! quantiles (bucket upper bounds). Set next to the client's figures it says where the time
//! went: in the store, in the server, or on the way.

use anyhow::Context as _;
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
    format!(
        "{commits:.0} commits, {:.1} items/commit, commit {:.2} ms mean ({:.0}% of the phase busy committing); server-side ack p50 {} p99 {} p99.9 {}",
        items / commits,
        seconds / commits * 1e3,
        seconds / phase.as_secs_f64() * 100.0,
        quantile(0.5),
        quantile(0.99),
        quantile(0.999),
    )
}
