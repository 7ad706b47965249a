//! Ledger: every documented event type (and an unknown one) is accepted and stored with the
//! right envelope; every way a signature can be wrong is refused with 401 and nothing stored.

use crate::harness::*;
use serde_json::Value;

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

#[test]
fn every_ledger_event_type_is_stored_with_its_envelope() {
    let gw = Gateway::start();
    let all = fixtures("ledger");
    assert_eq!(all.len(), 17, "16 documented types + 1 unknown");
    for (name, body) in &all {
        gw.post_ledger(body).assert_accepted();
        let sent: Value = serde_json::from_slice(body).expect("fixture JSON");
        let id = sent["id"].as_str().expect("id");
        let env = envelope(&gw.db(), "ledger", id);
        let provider_type = sent["type"].as_str().expect("type");
        assert_eq!(env["specversion"], "1.0", "{name}");
        assert_eq!(env["id"], id, "{name}");
        assert_eq!(env["source"], "ledger", "{name}");
        assert_eq!(env["type"], format!("ledger.{provider_type}"), "{name}");
        assert_eq!(env["providertype"], provider_type, "{name}");
        assert_eq!(env["provider"], "ledger", "{name}");
        assert_eq!(env["datacontenttype"], "application/json", "{name}");
        assert_eq!(env["data"], sent["data"], "{name}: data verbatim");
        let ms = sent["createdAt"].as_i64().expect("createdAt");
        assert_eq!(env["time"], rfc3339_ms(ms), "{name}");
        match sent["data"]["id"].as_str() {
            Some(subject) => assert_eq!(env["subject"], subject, "{name}"),
            None => assert!(env.get("subject").is_none(), "{name}"),
        }
        assert!(env["receivedat"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    let db = gw.db();
    assert_eq!(
        count(&db, "SELECT count(*) FROM events WHERE source = 'ledger'"),
        17
    );
    // The raw body and the signature header are kept for re-verification.
    let (raw, headers): (Vec<u8>, String) = db
        .query_row(
            "SELECT raw_body, headers FROM events WHERE dedup_key = 'evt_fx_99_unknown'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(raw, fixture("ledger/unknown_type.json"));
    let headers: Value = serde_json::from_str(&headers).expect("headers JSON");
    assert!(
        headers["x-ledger-signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("t="))
    );
    let env = envelope(&db, "ledger", "evt_fx_99_unknown");
    assert_eq!(env["type"], "ledger.balance.recalculated");
}

fn stored(gw: &Gateway) -> i64 {
    count(&gw.db(), "SELECT count(*) FROM events")
}

#[test]
fn signatures_are_checked_on_the_raw_bytes() {
    let gw = Gateway::start();
    let body = fixture("ledger/transaction.completed.json");
    let t = now();

    // Valid: current secret.
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET, t, &body),
        &body,
    )
    .assert_accepted();

    // Rotation: a signature made with the old secret also passes.
    let other =
        br#"{"id":"evt_rotated","type":"wallet.created","createdAt":1,"data":{"id":"wal_9"}}"#;
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET_OLD, t, other),
        other,
    )
    .assert_accepted();
    assert_eq!(stored(&gw), 2);

    let fresh =
        br#"{"id":"evt_never","type":"wallet.created","createdAt":1,"data":{"id":"wal_1"}}"#;
    // Wrong secret.
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(
            "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw==",
            t,
            fresh,
        ),
        fresh,
    )
    .assert_error(401);
    // Stale timestamp (10 minutes old, tolerance 5 minutes), correctly signed.
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET, t - 600, fresh),
        fresh,
    )
    .assert_error(401);
    // From the future, beyond tolerance.
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET, t + 600, fresh),
        fresh,
    )
    .assert_error(401);
    // Missing header.
    gw.post(
        "/webhooks/ledger",
        &[("Content-Type", "application/json".into())],
        fresh,
    )
    .assert_error(401);
    // Malformed header.
    gw.post(
        "/webhooks/ledger",
        &[("X-Ledger-Signature", "v1=abc".into())],
        fresh,
    )
    .assert_error(401);
    // Body altered by one byte after signing.
    let headers = ledger_headers(LEDGER_SECRET, t, fresh);
    let mut altered = fresh.to_vec();
    let i = altered.iter().position(|b| *b == b'1').expect("a digit");
    altered[i] = b'2';
    gw.post("/webhooks/ledger", &headers, &altered)
        .assert_error(401);
    // The untouched body with the same headers passes: only the byte made the difference.
    gw.post("/webhooks/ledger", &headers, fresh)
        .assert_accepted();
    assert_eq!(stored(&gw), 3, "no 401 stored anything");
}

#[test]
fn standard_webhooks_and_svix_headers_are_accepted() {
    let gw = Gateway::start();
    let t = now();
    for (prefix, id) in [("webhook", "msg_std_1"), ("svix", "msg_svix_1")] {
        let body = format!(
            r#"{{"id":"evt_{id}","type":"customer.created","createdAt":1710000000000,"data":{{"id":"cus_1"}}}}"#
        );
        let headers = standard_headers(prefix, LEDGER_SECRET, id, t, body.as_bytes());
        let headers: Vec<(&str, String)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        gw.post("/webhooks/ledger", &headers, body.as_bytes())
            .assert_accepted();
        // Old secret too (rotation), on a different event.
        let body2 = body.replace("evt_", "evt_old_");
        let h2 = standard_headers(prefix, LEDGER_SECRET_OLD, id, t, body2.as_bytes());
        let h2: Vec<(&str, String)> = h2.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        gw.post("/webhooks/ledger", &h2, body2.as_bytes())
            .assert_accepted();
        // The signature covers the id: the same signature under another id fails.
        let mut forged = headers.clone();
        forged[0].1 = "msg_other".into();
        gw.post("/webhooks/ledger", &forged, body.as_bytes())
            .assert_error(401);
        // Stale.
        let stale = standard_headers(prefix, LEDGER_SECRET, id, t - 3600, body.as_bytes());
        let stale: Vec<(&str, String)> =
            stale.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        gw.post("/webhooks/ledger", &stale, body.as_bytes())
            .assert_error(401);
    }
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 4);
}
