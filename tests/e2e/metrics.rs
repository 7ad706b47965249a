//! `/metrics`: Prometheus text with request outcomes per source, stored events per catalogued
//! type (a type outside the provider's catalogue is counted as "other", so request data never
//! becomes a label value), the ack latency histogram, and the age of the oldest due work.

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

/// `gateway_queue_oldest_age_seconds`: while a delivery's first attempt hangs, its event is
/// not yet routed and the gauge (measured every second) shows it ageing; once delivered,
/// nothing is due and it is back to 0.
#[test]
fn the_oldest_due_age_grows_while_an_event_waits_and_falls_back_to_zero() {
    use crate::reload::{ADMIN, http_destination, ledger_txn, wait_delivered};
    use crate::sink::{Mode, Sink};
    const AGE: &str = "gateway_queue_oldest_age_seconds";
    let sink = Sink::start(Mode::Ok);
    sink.set_delay(std::time::Duration::from_millis(2_500));
    let gw = Gateway::start_with_extra(&format!(
        "{ADMIN}{}[[routes]]\nname = \"all\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\nto = [\"sink\"]\n",
        http_destination("sink", &sink)
    ));
    assert_eq!(metric(&gw.metrics(), AGE), 0.0);
    gw.post_ledger(&ledger_txn("aged")).assert_accepted();
    let waited = wait_until(&gw, "the gauge shows the waiting event", || {
        let age = metric(&gw.metrics(), AGE);
        (age >= 1.0).then_some(age)
    });
    assert!(waited < 30.0, "{waited}");
    let ids = std::iter::once("aged".to_owned()).collect();
    wait_delivered(&sink, &ids, "the held delivery", &gw);
    wait_until(&gw, "the gauge is back to 0", || {
        (metric(&gw.metrics(), AGE) == 0.0).then_some(())
    });
}
