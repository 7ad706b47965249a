//! `/metrics`: request outcomes, stored events by catalogued type (unknown types as "other"),
//! and ack latency, in the Prometheus text format.

use crate::harness::*;

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

#[test]
fn outcomes_types_and_latency_are_exported() {
    let gw = Gateway::start();
    gw.post_ledger(&fixture("ledger/transaction.completed.json"))
        .assert_accepted();
    gw.post_ledger(&fixture("ledger/transaction.completed.json"))
        .assert_duplicate();
    gw.post_ledger(&fixture("ledger/unknown_type.json"))
        .assert_accepted();
    gw.post("/webhooks/ledger", &[], b"{}").assert_error(401);
    gw.post_ledig(&fixture("ledig/crypto_received.json"))
        .assert_accepted();
    let m = gw.metrics();
    assert_eq!(
        value(
            &m,
            "gateway_requests_total{outcome=\"accepted\",source=\"ledger\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "gateway_requests_total{outcome=\"duplicate\",source=\"ledger\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "gateway_requests_total{outcome=\"unauthorized\",source=\"ledger\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "gateway_events_total{source=\"ledger\",type=\"ledger.transaction.completed\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "gateway_events_total{source=\"ledger\",type=\"other\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "gateway_events_total{source=\"ledig\",type=\"ledig.crypto_received\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "gateway_ack_duration_seconds_count{source=\"ledger\"}"),
        4.0
    );
    // Label values never come from request data.
    assert!(!m.contains("balance.recalculated"), "{m}");
}
