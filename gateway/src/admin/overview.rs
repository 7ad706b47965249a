//! `GET /admin/overview` and `GET /admin/routes`: what the console's first pages show, built
//! from the metrics registry (requests and deliveries with their rates and p99s, routing
//! results, the config generation), the store's backlog, the plugins' health and the running
//! config. Reads only; label values come from config names and fixed sets, as in the metrics.

use super::state::{AdminState, HistoryPoint};
use crate::config::{DestinationKind, GatewayConfig, ProviderSettings};
use crate::metrics::Metrics;
use crate::store::Backlog;
use prometheus::proto::{MetricFamily, MetricType};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// The overview's JSON.
pub(super) fn overview(
    metrics: &Metrics,
    state: &AdminState,
    backlog: Option<&Backlog>,
    plugins: Value,
    now_ms: i64,
) -> Value {
    let families = metrics.gather();
    let mut counters = HashMap::new();
    let mut sources: BTreeMap<String, Value> = BTreeMap::new();
    let mut destinations: BTreeMap<String, Value> = BTreeMap::new();
    let mut routed = serde_json::Map::new();
    let mut plugin_stats: BTreeMap<String, Value> = BTreeMap::new();
    let mut generation = 0.0;
    let mut reloads = serde_json::Map::new();
    for f in &families {
        match f.name() {
            crate::metrics::REQUESTS_TOTAL => {
                for (labels, v) in counter_series(f) {
                    counters.insert(format!("req|{}|{}", labels[0], labels[1]), v);
                }
            }
            crate::metrics::ACK_DURATION => {
                for (source, p99) in histogram_p99s(f) {
                    entry(&mut sources, &source, "source")["ack_p99_seconds"] = json!(p99);
                }
            }
            crate::metrics::DELIVERIES_TOTAL => {
                for (labels, v) in counter_series(f) {
                    counters.insert(format!("dlv|{}|{}", labels[0], labels[1]), v);
                }
            }
            crate::metrics::DELIVERY_DURATION => {
                for (dest, p99) in histogram_p99s(f) {
                    entry(&mut destinations, &dest, "destination")["p99_seconds"] = json!(p99);
                }
            }
            crate::metrics::PLUGIN_CALLS_TOTAL => {
                for (labels, v) in counter_series(f) {
                    let e = entry(&mut plugin_stats, &labels[0], "plugin");
                    if !e["calls"].is_object() {
                        e["calls"] = json!({});
                    }
                    e["calls"][&labels[1]] = json!(v);
                }
            }
            crate::metrics::PLUGIN_DURATION => {
                for (plugin, p99) in histogram_p99s(f) {
                    entry(&mut plugin_stats, &plugin, "plugin")["p99_seconds"] = json!(p99);
                }
            }
            crate::metrics::ROUTED_EVENTS_TOTAL => {
                for (labels, v) in counter_series(f) {
                    routed.insert(labels[0].clone(), json!(v));
                }
            }
            crate::metrics::CONFIG_GENERATION => {
                generation = f
                    .get_metric()
                    .first()
                    .map_or(0.0, |m| m.get_gauge().get_value());
            }
            crate::metrics::CONFIG_RELOADS_TOTAL => {
                for (labels, v) in counter_series(f) {
                    reloads.insert(labels[0].clone(), json!(v));
                }
            }
            _ => {}
        }
    }
    let (rates, span) = state.rates(counters.clone());
    // The kept points, then one for now: the charts end at the present.
    let mut history = state.history();
    history.push(history_point(metrics, now_ms));
    for (key, total) in &counters {
        let mut parts = key.splitn(3, '|');
        let (Some(kind), Some(name), Some(label)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (map, what, field) = match kind {
            "req" => (&mut sources, "source", "outcomes"),
            _ => (&mut destinations, "destination", "results"),
        };
        let e = entry(map, name, what);
        if !e[field].is_object() {
            e[field] = json!({});
        }
        e[field][label] = json!({ "total": total, "per_second": rates.get(key) });
    }
    let queue = backlog.map(|b| {
        let age = b
            .first_due_at_ms
            .map(|due| ((now_ms - due).max(0) as f64) / 1000.0);
        json!({
            "depth": b.queue_depth,
            "oldest_age_seconds": age,
            "dead_letters": b.dead_letters,
        })
    });
    json!({
        "generated_at": now_ms,
        "rate_window_seconds": span,
        "sources": sources.into_values().collect::<Vec<_>>(),
        "destinations": destinations.into_values().collect::<Vec<_>>(),
        "routed": routed,
        "queue": queue,
        "plugins": plugins,
        "plugin_calls": plugin_stats.into_values().collect::<Vec<_>>(),
        "history": history,
        "config": {
            "generation": generation,
            "reloads": reloads,
            "last_reload": state.last_reload(),
        },
    })
}

/// A point of the overview's charts, read from the metrics registry now.
pub(super) fn history_point(metrics: &Metrics, now_ms: i64) -> HistoryPoint {
    let mut p = HistoryPoint {
        at: now_ms,
        ..HistoryPoint::default()
    };
    let gauge = |f: &MetricFamily| {
        f.get_metric()
            .first()
            .map_or(0.0, |m| m.get_gauge().get_value())
    };
    for f in &metrics.gather() {
        match f.name() {
            crate::metrics::REQUESTS_TOTAL => {
                for (labels, v) in counter_series(f) {
                    match labels[1].as_str() {
                        "accepted" | "duplicate" => p.accepted += v,
                        _ => p.refused += v,
                    }
                }
            }
            crate::metrics::DELIVERIES_TOTAL => {
                for (labels, v) in counter_series(f) {
                    match labels[1].as_str() {
                        "ok" => p.delivered += v,
                        "dead" => p.dead += v,
                        _ => {}
                    }
                }
            }
            crate::metrics::QUEUE_DEPTH => p.queue_depth = gauge(f),
            crate::metrics::DEAD_LETTERS => p.dead_letters = gauge(f),
            _ => {}
        }
    }
    p
}

fn entry<'m>(map: &'m mut BTreeMap<String, Value>, name: &str, what: &str) -> &'m mut Value {
    map.entry(name.to_owned())
        .or_insert_with(|| json!({ what: name }))
}

/// The label names of the counter families the overview reads, in the order it wants their
/// values (the registry hands labels sorted by name, not in declaration order).
fn label_names(family: &str) -> &'static [&'static str] {
    match family {
        crate::metrics::REQUESTS_TOTAL => &["source", "outcome"],
        crate::metrics::DELIVERIES_TOTAL => &["destination", "result"],
        crate::metrics::PLUGIN_CALLS_TOTAL => &["plugin", "result"],
        _ => &["result"],
    }
}

/// (label values in [`label_names`]' order, value) of each series of a counter family.
fn counter_series(f: &MetricFamily) -> Vec<(Vec<String>, f64)> {
    if f.get_field_type() != MetricType::COUNTER {
        return Vec::new();
    }
    let names = label_names(f.name());
    f.get_metric()
        .iter()
        .map(|m| {
            let value_of = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map_or_else(String::new, |l| l.value().to_owned())
            };
            let labels = names.iter().map(|n| value_of(n)).collect();
            (labels, m.get_counter().get_value())
        })
        .collect()
}

/// (first label value, p99 in seconds) of each series of a histogram family that has
/// observations: the upper bound of the bucket holding the 99th percentile, since the start.
fn histogram_p99s(f: &MetricFamily) -> Vec<(String, Option<f64>)> {
    if f.get_field_type() != MetricType::HISTOGRAM {
        return Vec::new();
    }
    f.get_metric()
        .iter()
        .filter_map(|m| {
            let label = m.get_label().first()?.value().to_owned();
            let h = m.get_histogram();
            let count = h.get_sample_count();
            if count == 0 {
                return Some((label, None));
            }
            let rank = (count as f64 * 0.99).ceil() as u64;
            let p99 = h
                .get_bucket()
                .iter()
                .find(|b| b.cumulative_count() >= rank)
                .map(|b| b.upper_bound());
            Some((label, p99))
        })
        .collect()
}

/// The running config's sources, routes and destinations, without a secret: an http
/// destination shows its scheme, host and port only (its path or query may carry a token).
pub(super) fn routes_view(config: &GatewayConfig) -> Value {
    let sources: Vec<Value> = config
        .sources
        .iter()
        .map(|s| {
            let provider = match s.provider {
                ProviderSettings::Ledger(_) => "ledger",
                ProviderSettings::Ledig(_) => "ledig",
            };
            json!({ "name": s.name, "provider": provider, "path": s.path })
        })
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let globs = |g: &[crate::config::Glob]| -> Vec<String> {
                g.iter().map(|g| g.pattern.clone()).collect()
            };
            json!({
                "name": r.name,
                "sources": globs(&r.sources),
                "types": globs(&r.types),
                "plugins": r.plugins,
                "destinations": r.to,
            })
        })
        .collect();
    let destinations: Vec<Value> = config
        .destinations
        .iter()
        .map(|d| {
            let (kind, target) = match &d.kind {
                DestinationKind::Http(h) => {
                    let scheme = h.url.scheme_str().unwrap_or("http");
                    let host = h.url.authority().map_or("", |a| a.as_str());
                    // An authority may hold `user:password@`: keep what follows the `@`.
                    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                    ("http", format!("{scheme}://{host}"))
                }
                DestinationKind::File(f) => ("file", f.path.display().to_string()),
            };
            json!({
                "name": d.name,
                "kind": kind,
                "target": target,
                "max_attempts": d.max_attempts,
            })
        })
        .collect();
    json!({ "sources": sources, "routes": routes, "destinations": destinations })
}

/// What a plugin changed in an event it passed on: every field of the envelope, and every
/// field of its `data`, whose value differs (`before`/`after` null when absent).
/// `prefix` names the event in the field names (`events[1].` for an emitted one).
pub(super) fn changes(prefix: &str, before: &Value, after: &Value, out: &mut Vec<Value>) {
    diff_objects(prefix, before, after, out);
    if let (Some(b), Some(a)) = (before.get("data"), after.get("data"))
        && (b.is_object() || a.is_object())
    {
        diff_objects(&format!("{prefix}data."), b, a, out);
    }
}

fn diff_objects(prefix: &str, before: &Value, after: &Value, out: &mut Vec<Value>) {
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (old, new) = (b.get(key), a.get(key));
        // `data` as a whole is compared field by field below.
        if prefix.is_empty()
            && key == "data"
            && (old.is_some_and(Value::is_object) || new.is_some_and(Value::is_object))
        {
            continue;
        }
        if old != new {
            out.push(json!({ "field": format!("{prefix}{key}"), "before": old, "after": new }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Outcome;

    /// Labels are read by name: the registry sorts them (`outcome` before `source`), and the
    /// overview once showed outcomes as sources.
    #[test]
    fn requests_are_counted_per_source_and_outcome() {
        let metrics = Metrics::new().expect("metrics");
        let ledger = metrics.for_source("ledger", &[]);
        for outcome in [Outcome::Accepted, Outcome::Unauthorized] {
            crate::metrics::events::RequestHandled {
                metrics: &ledger,
                outcome,
                elapsed: std::time::Duration::from_millis(2),
            }
            .emit();
        }
        let state = AdminState::default();
        let o = overview(&metrics, &state, None, json!([]), 0);
        let source = &o["sources"][0];
        assert_eq!(source["source"], "ledger", "{o}");
        assert_eq!(source["outcomes"]["accepted"]["total"], 1.0, "{o}");
        assert_eq!(source["outcomes"]["unauthorized"]["total"], 1.0, "{o}");
        // The upper bound of the bucket holding the 99th percentile (2 ms is on a bound).
        assert_eq!(source["ack_p99_seconds"], 0.002, "{o}");
        let point = history_point(&metrics, 0);
        assert_eq!((point.accepted, point.refused), (1.0, 1.0));
    }
}
