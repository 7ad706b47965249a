//! Ledig: the seven event types and the shapes the docs leave open are accepted and
//! normalized; each protection (header token, token in path, basic auth) refuses wrong or
//! missing credentials with 401.

use crate::harness::*;
use base64::Engine as _;
use serde_json::Value;

#[test]
fn every_ledig_event_type_is_stored_with_its_envelope() {
    let gw = Gateway::start();
    let nested: Vec<_> = fixtures("ledig")
        .into_iter()
        .filter(|(name, _)| !name.starts_with("variant_"))
        .collect();
    assert_eq!(nested.len(), 7);
    for (name, body) in &nested {
        gw.post_ledig(body).assert_accepted();
        let sent: Value = serde_json::from_slice(body).expect("fixture JSON");
        let db = gw.db();
        let env_text: String = db
            .query_row(
                "SELECT envelope FROM events WHERE source = 'ledig' AND event_type = ?1",
                [format!("ledig.{name}")],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{name} not stored: {e}"));
        let env: Value = serde_json::from_str(&env_text).expect("JSON");
        assert_eq!(env["provider"], "ledig");
        assert_eq!(env["providertype"], name.as_str());
        assert_eq!(env["source"], "ledig");
        assert_eq!(env["data"], sent["data"], "{name}: data verbatim");
        let data = &sent["data"];
        match (data.get("id"), data.get("status")) {
            (Some(id), Some(status)) => assert_eq!(
                env["id"],
                format!(
                    "{name}:{}:{}",
                    id.as_str().expect("id"),
                    status.as_str().expect("status")
                )
            ),
            _ => assert!(
                env["id"].as_str().is_some_and(|i| i.starts_with("sha256:")),
                "{name}: {env}"
            ),
        }
        let subject = data
            .get("id")
            .or_else(|| data.get("Alias"))
            .and_then(Value::as_str)
            .expect("fixture has id or Alias");
        assert_eq!(env["subject"], subject, "{name}");
    }
}

#[test]
fn open_shapes_and_odd_spellings_are_normalized() {
    let gw = Gateway::start();
    let cases = [
        (
            "variant_flat_type",
            "ledig.crypto_received",
            "crypto_received:dep_flat_1:completed",
        ),
        (
            "variant_eventtype_payload",
            "ledig.crypto_payout_update",
            "crypto_payout_update:po_payload_1:pending",
        ),
        (
            "variant_odd_spelling",
            "ledig.virtual_account_credited",
            "virtual_account_credited:vac_odd_1:successful",
        ),
        (
            "variant_extra_fields",
            "ledig.admin_funding",
            "admin_funding:af_extra_1:completed",
        ),
    ];
    for (file, event_type, key) in cases {
        let body = fixture(&format!("ledig/{file}.json"));
        gw.post_ledig(&body).assert_accepted();
        let env = envelope(&gw.db(), "ledig", key);
        assert_eq!(env["type"], event_type, "{file}");
    }
    // Flat shape: data is the object without the name key, values verbatim.
    let env = envelope(&gw.db(), "ledig", "crypto_received:dep_flat_1:completed");
    assert!(env["data"].get("type").is_none());
    assert_eq!(env["data"]["Amount"], "150.25");
    // Unknown fields are kept and counted, not an error.
    let env = envelope(&gw.db(), "ledig", "admin_funding:af_extra_1:completed");
    assert_eq!(env["data"]["newField"], "surprise");
    assert_eq!(env["data"]["nested"]["a"][2], 3);
    let metrics = gw.metrics();
    let unknown = metrics
        .lines()
        .find(|l| l.starts_with("gateway_unknown_fields_total{source=\"ledig\"}"))
        .expect("unknown fields metric");
    assert!(unknown.ends_with(" 2"), "{unknown}");
    // A body that is JSON but not an object is still kept, under an unknown type.
    gw.post_ledig(b"[1,2,3]").assert_accepted();
    assert_eq!(
        count(
            &gw.db(),
            "SELECT count(*) FROM events WHERE event_type = 'ledig.unknown'"
        ),
        1
    );
}

#[test]
fn tokens_and_basic_auth_are_required() {
    let gw = Gateway::start();
    let body = fixture("ledig/crypto_received.json");
    // Header token.
    gw.post("/webhooks/ledig", &[], &body).assert_error(401);
    gw.post(
        "/webhooks/ledig",
        &[("X-Ledig-Token", "wrong".into())],
        &body,
    )
    .assert_error(401);
    gw.post(
        "/webhooks/ledig",
        &[("X-Ledig-Token", format!("{LEDIG_TOKEN}x"))],
        &body,
    )
    .assert_error(401);
    // Token in the path.
    gw.post("/webhooks/ledig-path", &[], &body)
        .assert_error(401);
    gw.post("/webhooks/ledig-path/not-the-token", &[], &body)
        .assert_error(401);
    // A token in the header does not open a token-in-path source.
    gw.post(
        "/webhooks/ledig-path",
        &[("X-Ledig-Token", LEDIG_TOKEN.into())],
        &body,
    )
    .assert_error(401);
    // Basic auth.
    let b64 = base64::engine::general_purpose::STANDARD;
    let basic = |user: &str, pass: &str| format!("Basic {}", b64.encode(format!("{user}:{pass}")));
    gw.post("/webhooks/ledig-basic", &[], &body)
        .assert_error(401);
    gw.post(
        "/webhooks/ledig-basic",
        &[("Authorization", basic("ops", "nope"))],
        &body,
    )
    .assert_error(401);
    gw.post(
        "/webhooks/ledig-basic",
        &[("Authorization", basic("root", LEDIG_PASSWORD))],
        &body,
    )
    .assert_error(401);
    assert_eq!(
        count(&gw.db(), "SELECT count(*) FROM events"),
        0,
        "401s store nothing"
    );

    gw.post(
        "/webhooks/ledig",
        &[("X-Ledig-Token", LEDIG_TOKEN.into())],
        &body,
    )
    .assert_accepted();
    gw.post(&format!("/webhooks/ledig-path/{LEDIG_TOKEN}"), &[], &body)
        .assert_accepted();
    gw.post(
        "/webhooks/ledig-basic",
        &[("Authorization", basic("ops", LEDIG_PASSWORD))],
        &body,
    )
    .assert_accepted();
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 3);
    // Tokens and credentials are never kept with the event.
    let headers: Vec<String> = db
        .prepare("SELECT headers FROM events")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    for h in headers {
        assert!(
            !h.contains(LEDIG_TOKEN) && !h.to_lowercase().contains("authorization"),
            "{h}"
        );
    }
}
