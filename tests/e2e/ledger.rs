//! Ledger: every documented event type (and an unknown one) is accepted with exactly
//! `{"ok":true}` and stored once with the right envelope, raw body and signature headers; every
//! way a signature can be wrong (wrong secret, stale or future timestamp, missing or malformed
//! header, one byte changed after signing, scheme not enabled for the source) is refused with
//! 401 and stores nothing; both signing schemes and secret rotation work.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// The 16 types Ledger documents, plus the fixture of a type it does not.
const FIXTURES: [&str; 17] = [
    "card.created",
    "card.updated",
    "counterparty.created",
    "customer.created",
    "customer.updated",
    "dispute.created",
    "dispute.updated",
    "payout_account.created",
    "transaction.completed",
    "transaction.created",
    "transaction.updated",
    "unknown_type",
    "virtual_account.created",
    "virtual_account.updated",
    "wallet.created",
    "wallet.updated",
    "webhook.test",
];

#[test]
fn every_ledger_fixture_is_stored_with_its_envelope() {
    let gw = Gateway::start();
    let all = fixtures("ledger");
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, FIXTURES.into_iter().collect(), "fixture set");

    for (name, body) in &all {
        let sent: Value = serde_json::from_slice(body).expect("fixture is JSON");
        let id = sent["id"].as_str().expect("fixture has an id");
        let provider_type = sent["type"].as_str().expect("fixture has a type");
        if name != "unknown_type" {
            assert_eq!(name, provider_type, "fixture file named after its type");
        }
        let signature = ledger_signature(LEDGER_SECRET, now(), body);
        let headers = [
            ("Content-Type", "application/json".to_owned()),
            ("X-Ledger-Event-Id", id.to_owned()),
            ("X-Ledger-Event-Type", provider_type.to_owned()),
            ("X-Ledger-Signature", signature.clone()),
        ];
        let before = now_ms();
        gw.post("/webhooks/ledger", &headers, body)
            .assert_accepted();
        let after = now_ms();

        let row = stored(&gw.db(), "ledger", id);
        let env = &row.envelope;
        let want_type = format!("ledger.{provider_type}");
        assert_eq!(row.dedup_key, id, "{name}");
        assert_eq!(row.event_type, want_type, "{name}");
        assert_eq!(row.raw_body, *body, "{name}: raw body kept byte for byte");
        assert_eq!(env["specversion"], "1.0", "{name}");
        assert_eq!(env["id"], id, "{name}");
        assert_eq!(env["source"], "ledger", "{name}");
        assert_eq!(env["type"], want_type, "{name}");
        assert_eq!(env["provider"], "ledger", "{name}");
        assert_eq!(env["providertype"], provider_type, "{name}");
        assert_eq!(env["datacontenttype"], "application/json", "{name}");
        assert_eq!(env["data"], sent["data"], "{name}: data verbatim");
        let created = sent["createdAt"].as_i64().expect("createdAt in ms");
        assert_eq!(
            rfc3339_ms(env["time"].as_str().expect("time is a string")),
            created,
            "{name}: time from createdAt"
        );
        match sent["data"]["id"].as_str() {
            Some(subject) => assert_eq!(env["subject"], subject, "{name}"),
            None => assert!(
                env.get("subject").is_none_or(Value::is_null),
                "{name}: no subject without data.id: {env}"
            ),
        }
        let received = rfc3339_ms(env["receivedat"].as_str().expect("receivedat"));
        assert!(
            (before - 1000..=after).contains(&received),
            "{name}: receivedat {received} not in [{before}, {after}]"
        );
        assert!(
            (before..=after).contains(&row.received_at),
            "{name}: received_at {} not in [{before}, {after}]",
            row.received_at
        );
        assert_eq!(row.headers["x-ledger-signature"], signature, "{name}");
        assert_eq!(row.headers["x-ledger-event-id"], id, "{name}");
    }

    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 17);
    // A Ledger payload is a verbatim part of the body: every row keeps it once.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM events WHERE data_at IS NOT NULL \
             AND instr(envelope, '\"data\":{') = 0"
        ),
        17
    );
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 0);
    let unknown = stored(&db, "ledger", "evt_fx_99_unknown");
    assert_eq!(unknown.envelope["type"], "ledger.balance.recalculated");
    assert_eq!(unknown.envelope["providertype"], "balance.recalculated");
    let test = stored(&db, "ledger", "evt_fx_15_webhook_test");
    assert_eq!(
        test.envelope["data"],
        serde_json::json!({"message": "hello"})
    );
}

fn events(gw: &Gateway) -> i64 {
    count(&gw.db(), "SELECT count(*) FROM events")
}

#[test]
fn ledger_signature_header_is_checked_on_the_raw_bytes() {
    let gw = Gateway::start();
    let t = now();

    // Valid, current secret.
    let body = fixture("ledger/transaction.completed.json");
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET, t, &body),
        &body,
    )
    .assert_accepted();
    // Rotation: a signature by the old secret passes too.
    let rotated =
        br#"{"id":"evt_rotated","type":"wallet.created","createdAt":1763856000000,"data":{"id":"wal_9"}}"#;
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET_OLD, t, rotated),
        rotated,
    )
    .assert_accepted();
    assert_eq!(events(&gw), 2);
    stored(&gw.db(), "ledger", "evt_rotated");

    let fresh =
        br#"{"id":"evt_never","type":"wallet.created","createdAt":1763856000000,"data":{"id":"wal_1"}}"#;
    let refused: [(&str, Vec<(&str, String)>); 7] = [
        (
            "wrong secret",
            ledger_headers(LEDGER_SECRET_WRONG, t, fresh),
        ),
        (
            "stale: t = now - 10 min, tolerance 5 min",
            ledger_headers(LEDGER_SECRET, t - 600, fresh),
        ),
        (
            "future: t = now + 10 min",
            ledger_headers(LEDGER_SECRET, t + 600, fresh),
        ),
        (
            "no signature header",
            vec![("Content-Type", "application/json".into())],
        ),
        (
            "header without t=",
            vec![(
                "X-Ledger-Signature",
                ledger_signature(LEDGER_SECRET, t, fresh)
                    .split_once(',')
                    .expect("t=..,v1=..")
                    .1
                    .to_owned(),
            )],
        ),
        (
            "signature for another timestamp",
            vec![(
                "X-Ledger-Signature",
                ledger_signature(LEDGER_SECRET, t - 1, fresh).replacen(
                    &format!("t={}", t - 1),
                    &format!("t={t}"),
                    1,
                ),
            )],
        ),
        ("empty header", vec![("X-Ledger-Signature", String::new())]),
    ];
    for (case, headers) in &refused {
        let r = gw.post("/webhooks/ledger", headers, fresh);
        assert_eq!(r.status, 401, "{case}: {}", r.body);
        r.assert_error(401);
    }
    // Body altered by one byte after signing.
    let headers = ledger_headers(LEDGER_SECRET, t, fresh);
    let mut altered = fresh.to_vec();
    let i = altered
        .windows(5)
        .position(|w| w == b"wal_1")
        .expect("the subject is in the body")
        + 4;
    altered[i] = b'2';
    gw.post("/webhooks/ledger", &headers, &altered)
        .assert_error(401);
    assert_eq!(events(&gw), 2, "no 401 stored anything");
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM quarantine"), 0);
    // The untouched body under the same headers passes: only that byte made the difference.
    gw.post("/webhooks/ledger", &headers, fresh)
        .assert_accepted();
    assert_eq!(events(&gw), 3);
}

#[test]
fn standard_webhooks_and_svix_headers_are_accepted() {
    let gw = Gateway::start();
    let t = now();
    let mut expected = 0;
    for prefix in ["webhook", "svix"] {
        let body = format!(
            r#"{{"id":"evt_{prefix}_1","type":"customer.created","createdAt":1763856000000,"data":{{"id":"cus_{prefix}"}}}}"#
        );
        let body = body.as_bytes();
        let msg_id = format!("msg_{prefix}_1");
        let good = standard_headers(prefix, LEDGER_SECRET, &msg_id, t, body);
        // `signature = "any"` and `signature = "standard-webhooks"` both accept the scheme.
        for path in ["/webhooks/ledger", "/webhooks/ledger-std"] {
            gw.post(path, &borrowed(&good), body).assert_accepted();
            expected += 1;
        }
        let row = stored(&gw.db(), "ledger", &format!("evt_{prefix}_1"));
        assert_eq!(row.envelope["type"], "ledger.customer.created");
        assert_eq!(row.envelope["subject"], format!("cus_{prefix}"));
        assert_eq!(
            row.headers[format!("{prefix}-signature")],
            good[3].1,
            "signature header kept for re-verification"
        );

        // Rotation: the old secret passes on the source that lists it.
        let old_body = String::from_utf8_lossy(body).replace("evt_", "evt_old_");
        let old = standard_headers(prefix, LEDGER_SECRET_OLD, &msg_id, t, old_body.as_bytes());
        gw.post("/webhooks/ledger", &borrowed(&old), old_body.as_bytes())
            .assert_accepted();
        expected += 1;

        let fresh = String::from_utf8_lossy(body).replace("evt_", "evt_refused_");
        let fresh = fresh.as_bytes();
        let mut other_id = standard_headers(prefix, LEDGER_SECRET, &msg_id, t, fresh);
        other_id[1].1 = "msg_other".into();
        let refused = [
            (
                "wrong secret",
                standard_headers(prefix, LEDGER_SECRET_WRONG, &msg_id, t, fresh),
            ),
            ("signature covers the id", other_id),
            (
                "stale",
                standard_headers(prefix, LEDGER_SECRET, &msg_id, t - 600, fresh),
            ),
            (
                "signed another body",
                standard_headers(prefix, LEDGER_SECRET, &msg_id, t, body),
            ),
        ];
        for (case, headers) in &refused {
            let r = gw.post("/webhooks/ledger", &borrowed(headers), fresh);
            assert_eq!(r.status, 401, "{prefix} {case}: {}", r.body);
            r.assert_error(401);
        }
        // The old secret is not configured on the standard-webhooks-only source.
        gw.post(
            "/webhooks/ledger-std",
            &borrowed(&standard_headers(
                prefix,
                LEDGER_SECRET_OLD,
                &msg_id,
                t,
                fresh,
            )),
            fresh,
        )
        .assert_error(401);
    }
    // A valid X-Ledger-Signature is not enough where only Standard Webhooks is enabled.
    let body = br#"{"id":"evt_scheme","type":"customer.created","createdAt":1,"data":{"id":"c"}}"#;
    gw.post(
        "/webhooks/ledger-std",
        &ledger_headers(LEDGER_SECRET, t, body),
        body,
    )
    .assert_error(401);
    assert_eq!(events(&gw), expected, "nothing refused was stored");
}
