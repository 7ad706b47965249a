//! `/metrics`: Prometheus text with request outcomes per source, stored events per catalogued
//! type (a type outside the provider's catalogue is counted as "other", so request data never
//! becomes a label value) and the ack latency histogram.

use crate::harness::*;

#[test]
fn outcomes_types_and_latency_are_exported() {
    let gw = Gateway::start();
    gw.post_ledger(&fixture("ledger/transaction.completed.json"))
        .assert_accepted();
    gw.post_ledger(&fixture("ledger/transaction.completed.json"))
        .assert_duplicate();
    gw.post_ledger(&fixture("ledger/customer.created.json"))
        .assert_accepted();
    gw.post_ledger(&fixture("ledger/unknown_type.json"))
        .assert_accepted();
    gw.post("/webhooks/ledger", &[], b"{}").assert_error(401);
    gw.post_ledger(b"not json").assert_error(400);
    gw.post_ledig(&fixture("ledig/crypto_received.json"))
        .assert_accepted();
    gw.post_ledig(br#"{"event":"brand_new_event","data":{"id":"n1"}}"#)
        .assert_accepted();

    let r = gw.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    let m = r.body;
    for (series, want) in [
        (
            r#"gateway_requests_total{outcome="accepted",source="ledger"}"#,
            3.0,
        ),
        (
            r#"gateway_requests_total{outcome="duplicate",source="ledger"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{outcome="unauthorized",source="ledger"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{outcome="malformed",source="ledger"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{outcome="accepted",source="ledig"}"#,
            2.0,
        ),
        (
            r#"gateway_events_total{source="ledger",type="ledger.transaction.completed"}"#,
            1.0,
        ),
        (
            r#"gateway_events_total{source="ledger",type="ledger.customer.created"}"#,
            1.0,
        ),
        (r#"gateway_events_total{source="ledger",type="other"}"#, 1.0),
        (
            r#"gateway_events_total{source="ledig",type="ledig.crypto_received"}"#,
            1.0,
        ),
        (r#"gateway_events_total{source="ledig",type="other"}"#, 1.0),
    ] {
        assert_eq!(metric(&m, series), want, "{series} in:\n{m}");
    }
    assert!(m.contains("# TYPE gateway_requests_total counter"), "{m}");
    assert!(m.contains("# TYPE gateway_events_total counter"), "{m}");
    assert!(
        m.contains("# TYPE gateway_ack_duration_seconds histogram"),
        "{m}"
    );
    // Every acknowledged Ledger request (3 accepted + 1 duplicate) is timed (whether refusals are is not specified).
    let acks = metric(&m, r#"gateway_ack_duration_seconds_count{source="ledger"}"#);
    assert!((4.0..=6.0).contains(&acks), "ack count {acks}");
    assert!(metric(&m, r#"gateway_ack_duration_seconds_sum{source="ledger"}"#) > 0.0);
    assert_eq!(
        metric(
            &m,
            r#"gateway_ack_duration_seconds_bucket{source="ledger",le="+Inf"}"#
        ),
        acks
    );
    // Label values never come from request data.
    assert!(!m.contains("balance.recalculated"), "{m}");
    assert!(!m.contains("brand_new_event"), "{m}");
}
