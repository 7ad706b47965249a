//! The Grafana dashboard in `contrib/grafana/gateway-dashboard.json`: an importable dashboard
//! of the current schema whose queries use the `${DS_PROMETHEUS}` input, and whose every
//! PromQL expression (panel targets and template variables) names only series a running
//! gateway exports, so renaming a metric breaks this test rather than a night's dashboard.

use crate::prometheus::{
    exported_names, gateway_metrics_in, monitored_gateway, repo_root, send_traffic,
};
use serde_json::Value;
use std::collections::HashSet;

fn dashboard() -> Value {
    let path = repo_root().join("contrib/grafana/gateway-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut todo: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(p) = todo.pop() {
        todo.extend(p["panels"].as_array().into_iter().flatten());
        out.push(p);
    }
    out
}

/// Each PromQL expression with where it is: panel targets and query variables.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((format!("panel {:?}", p["title"]), expr.to_owned()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            let where_ = format!("variable {:?}", v["name"]);
            out.push((where_, q.unwrap_or_default().to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_is_current_schema_and_queries_through_the_datasource_input() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
        "{}",
        d["schemaVersion"]
    );
    assert!(d["uid"].is_string() && d["title"].is_string());
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let mut ids = HashSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64()),
            "duplicate panel id {}",
            p["id"]
        );
        assert!(
            p["gridPos"]["w"].as_u64().is_some(),
            "no gridPos: {}",
            p["title"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", v["name"]);
    }
    // What on-call opens first is there.
    let used: HashSet<String> = expressions(&d)
        .iter()
        .flat_map(|(_, e)| gateway_metrics_in(e))
        .collect();
    for wanted in [
        "gateway_requests_total",
        "gateway_ack_duration_seconds_bucket",
        "gateway_queue_depth",
        "gateway_queue_oldest_age_seconds",
        "gateway_deliveries_total",
        "gateway_delivery_duration_seconds_bucket",
        "gateway_dead_letters",
        "gateway_plugin_unhealthy",
        "gateway_config_reloads_total",
        "gateway_config_generation",
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}");
    }
}

#[test]
fn every_dashboard_query_uses_only_metrics_the_gateway_exports() {
    let m = monitored_gateway();
    send_traffic(&m, "dash");
    let exported = exported_names(&m.gw.metrics());
    let exprs = expressions(&dashboard());
    assert!(exprs.len() > 15, "{exprs:?}");
    for (where_, expr) in exprs {
        let used = gateway_metrics_in(&expr);
        assert!(!used.is_empty(), "{where_}: no gateway metric in {expr:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{where_} uses {unknown:?}, which the gateway does not export; it exports:\n{exported:#?}"
        );
    }
}
