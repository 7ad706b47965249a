//! Ledig: the seven documented events and the shapes the docs leave open (flat with `type`,
//! `eventType` + `payload`, `event_type`, an `Event-Type`/`DATA` spelling, extra unknown
//! fields, a JSON body that is not an object) are accepted and normalized: type, provider type,
//! key (`ledig:<object>:<state>:<arrival>`, the object being the event and its `id` or alias),
//! subject and verbatim data. Each protection (header token, token in path, basic auth, IP allow-list, and all of
//! them together) refuses missing or wrong credentials with 401, and no credential is stored.

use crate::harness::*;
use base64::Engine as _;
use serde_json::{Value, json};

/// A named request: what it exercises, the path, and its headers.
type Attempt = (&'static str, String, Vec<(&'static str, String)>);

/// Where an envelope's `data` comes from in the sent body.
#[derive(Debug, Clone, Copy)]
enum Data {
    /// The object under this top-level key.
    Under(&'static str),
    /// The flat object without its event-name key.
    FlatWithout(&'static str),
}

struct Case {
    file: &'static str,
    event: &'static str,
    /// What names the object, with `subject` as its value: `id`, else the alias.
    object_field: &'static str,
    subject: &'static str,
    data: Data,
}

const CASES: [Case; 12] = [
    Case {
        file: "admin_funding",
        event: "admin_funding",
        object_field: "id",
        subject: "af_501",
        data: Data::Under("data"),
    },
    Case {
        file: "crypto_payout_update",
        event: "crypto_payout_update",
        object_field: "id",
        subject: "po_7001",
        data: Data::Under("data"),
    },
    Case {
        file: "crypto_received",
        event: "crypto_received",
        object_field: "id",
        subject: "dep_8812",
        data: Data::Under("data"),
    },
    Case {
        file: "settlement_account_update",
        event: "settlement_account_update",
        object_field: "alias",
        subject: "settle-ngn-1",
        data: Data::Under("data"),
    },
    Case {
        file: "settlement_wallet_update",
        event: "settlement_wallet_update",
        object_field: "alias",
        subject: "settle-usdt-1",
        data: Data::Under("data"),
    },
    Case {
        file: "virtual_account_created",
        event: "virtual_account_created",
        object_field: "alias",
        subject: "va-acme-1",
        data: Data::Under("data"),
    },
    Case {
        file: "virtual_account_credited",
        event: "virtual_account_credited",
        object_field: "id",
        subject: "vac_3321",
        data: Data::Under("data"),
    },
    Case {
        file: "variant_event_type_key",
        event: "settlement_account_update",
        object_field: "alias",
        subject: "settle-usd-2",
        data: Data::Under("data"),
    },
    Case {
        file: "variant_eventtype_payload",
        event: "crypto_payout_update",
        object_field: "id",
        subject: "po_payload_1",
        data: Data::Under("payload"),
    },
    Case {
        file: "variant_extra_fields",
        event: "admin_funding",
        object_field: "id",
        subject: "af_extra_1",
        data: Data::Under("data"),
    },
    Case {
        file: "variant_flat_type",
        event: "crypto_received",
        object_field: "id",
        subject: "dep_flat_1",
        data: Data::FlatWithout("type"),
    },
    Case {
        file: "variant_odd_spelling",
        event: "virtual_account_credited",
        object_field: "id",
        subject: "vac_odd_1",
        data: Data::Under("DATA"),
    },
];

#[test]
fn every_ledig_fixture_is_stored_with_its_envelope() {
    let gw = Gateway::start();
    let on_disk: Vec<String> = fixtures("ledig").into_iter().map(|(n, _)| n).collect();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.file.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every Ledig fixture has a case");

    for case in &CASES {
        let name = case.file;
        let body = fixture(&format!("ledig/{name}.json"));
        let sent: Value = serde_json::from_slice(&body).expect("fixture is JSON");
        let object = ledig_object_of(case.event, case.object_field, case.subject);
        let prefix = ledig_key_prefix(&object, &body);
        let want_data = match case.data {
            Data::Under(k) => sent[k].clone(),
            Data::FlatWithout(k) => {
                let mut flat = sent.clone();
                flat.as_object_mut()
                    .expect("flat fixture is an object")
                    .remove(k);
                flat
            }
        };
        assert!(want_data.is_object(), "{name}: test expects object data");
        let before = now_ms();
        gw.post_ledig(&body).assert_accepted();
        let after = now_ms();

        let row = stored_with_prefix(&gw.db(), "ledig", &prefix);
        let env = &row.envelope;
        assert_eq!(
            row.dedup_key,
            format!("{prefix}{}", row.received_at),
            "{name}"
        );
        let want_type = format!("ledig.{}", case.event);
        assert_eq!(row.event_type, want_type, "{name}");
        assert_eq!(row.raw_body, body, "{name}: raw body kept byte for byte");
        assert!((before..=after).contains(&row.received_at), "{name}");
        assert_eq!(env["specversion"], "1.0", "{name}");
        assert_eq!(env["id"], row.dedup_key, "{name}");
        assert_eq!(env["source"], "ledig", "{name}");
        assert_eq!(env["type"], want_type, "{name}");
        assert_eq!(env["provider"], "ledig", "{name}");
        assert_eq!(env["providertype"], case.event, "{name}");
        assert_eq!(env["datacontenttype"], "application/json", "{name}");
        assert_eq!(env["subject"], case.subject, "{name}");
        assert_eq!(env["data"], want_data, "{name}: data verbatim");
        rfc3339_ms(env["receivedat"].as_str().expect("receivedat"));
    }
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 12);
    // The payload is kept once where it is a verbatim part of the body: all but the one flat
    // body whose event-name member the parser takes out of `data`.
    assert_eq!(
        count(&db, "SELECT count(*) FROM events WHERE data_at IS NOT NULL"),
        11
    );
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 0);
    // Unknown fields are kept, whatever their shape.
    let extra_body = fixture("ledig/variant_extra_fields.json");
    let extra = stored_with_prefix(
        &db,
        "ledig",
        &ledig_key_prefix(
            &ledig_object_of("admin_funding", "id", "af_extra_1"),
            &extra_body,
        ),
    );
    assert_eq!(extra.envelope["data"]["newField"], "surprise");
    assert_eq!(extra.envelope["data"]["nested"], json!({"a": [1, 2, 3]}));
    // ... and counted: `newField` and `nested` are the only fields the docs do not list.
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "gateway_unknown_fields_total{source=\"ledig\"}"),
        2.0,
        "{m}"
    );
}

#[test]
fn json_that_is_not_an_object_is_kept_as_unknown() {
    let gw = Gateway::start();
    let body = b"[1,2,3]";
    gw.post_ledig(body).assert_accepted();
    let row = stored_by_type(&gw.db(), "ledig", "ledig.unknown");
    assert_eq!(row.raw_body, body);
    assert!(
        row.dedup_key
            .starts_with(&ledig_key_prefix(&ledig_content_object(body), body)),
        "{}",
        row.dedup_key
    );
    assert_eq!(row.envelope["type"], "ledig.unknown");
    assert_eq!(row.envelope["source"], "ledig");
    // The same body again is a retry of the same thing.
    gw.post_ledig(b" [1, 2, 3] ").assert_duplicate();
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 1);
}

fn basic(user: &str, pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("Basic {}", b64.encode(format!("{user}:{pass}")))
}

#[test]
fn every_protection_refuses_missing_or_wrong_credentials() {
    let gw = Gateway::start();
    let body = fixture("ledig/crypto_received.json");
    let token = |t: &str| vec![("X-Ledig-Token", t.to_owned())];
    let refused: Vec<Attempt> = vec![
        ("header token missing", "/webhooks/ledig".into(), vec![]),
        (
            "header token wrong",
            "/webhooks/ledig".into(),
            token("wrong"),
        ),
        (
            "header token with a suffix",
            "/webhooks/ledig".into(),
            token(&format!("{LEDIG_TOKEN}x")),
        ),
        (
            "header token as a prefix",
            "/webhooks/ledig".into(),
            token(&LEDIG_TOKEN[..LEDIG_TOKEN.len() - 1]),
        ),
        (
            "token in another header",
            "/webhooks/ledig".into(),
            vec![("Authorization", format!("Bearer {LEDIG_TOKEN}"))],
        ),
        ("path token missing", "/webhooks/ledig-path".into(), vec![]),
        (
            "path token wrong",
            "/webhooks/ledig-path/not-the-token".into(),
            vec![],
        ),
        (
            "header token on a path-token source",
            "/webhooks/ledig-path".into(),
            token(LEDIG_TOKEN),
        ),
        ("basic auth missing", "/webhooks/ledig-basic".into(), vec![]),
        (
            "basic auth wrong password",
            "/webhooks/ledig-basic".into(),
            vec![("Authorization", basic(LEDIG_USER, "nope"))],
        ),
        (
            "basic auth wrong user",
            "/webhooks/ledig-basic".into(),
            vec![("Authorization", basic("root", LEDIG_PASSWORD))],
        ),
        (
            "basic auth not base64",
            "/webhooks/ledig-basic".into(),
            vec![("Authorization", "Basic !!!".into())],
        ),
        (
            "allowed address, wrong token",
            "/webhooks/ledig-local".into(),
            token("wrong"),
        ),
        (
            "address not allowed",
            "/webhooks/ledig-remote-only".into(),
            vec![],
        ),
    ];
    for (case, path, headers) in &refused {
        let r = gw.post(path, headers, &body);
        assert_eq!(r.status, 401, "{case}: {}", r.body);
        r.assert_error(401);
    }
    let db = gw.db();
    assert_eq!(
        count(&db, "SELECT count(*) FROM events"),
        0,
        "401s store nothing"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 0);

    let accepted: [Attempt; 4] = [
        ("ledig", "/webhooks/ledig".into(), token(LEDIG_TOKEN)),
        (
            "ledig-path",
            format!("/webhooks/ledig-path/{LEDIG_TOKEN}"),
            vec![],
        ),
        (
            "ledig-basic",
            "/webhooks/ledig-basic".into(),
            vec![("Authorization", basic(LEDIG_USER, LEDIG_PASSWORD))],
        ),
        (
            "ledig-local",
            "/webhooks/ledig-local".into(),
            token(LEDIG_TOKEN),
        ),
    ];
    for (source, path, headers) in &accepted {
        gw.post(path, headers, &body).assert_accepted();
        let row = stored_with_prefix(
            &gw.db(),
            source,
            &ledig_id_prefix("crypto_received", "dep_8812"),
        );
        assert_eq!(row.envelope["source"], *source);
        // Tokens and credentials are never kept with the event.
        let kept = row.headers.to_string();
        assert!(!kept.contains(LEDIG_TOKEN), "{source}: {kept}");
        assert!(!kept.contains(LEDIG_PASSWORD), "{source}: {kept}");
        assert!(
            row.headers.get("authorization").is_none()
                && row.headers.get("x-ledig-token").is_none(),
            "{source}: {kept}"
        );
        assert!(
            !row.envelope.to_string().contains(LEDIG_TOKEN),
            "{source}: the path token leaked into the envelope"
        );
    }
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 4);
}

/// The `Basic` scheme name is case-insensitive (RFC 9110, 11.1); the credentials are not.
#[test]
fn the_basic_scheme_is_accepted_in_any_case() {
    let gw = Gateway::start();
    let b64 = base64::engine::general_purpose::STANDARD;
    let credentials = b64.encode(format!("{LEDIG_USER}:{LEDIG_PASSWORD}"));
    let body = |n: usize| {
        format!(
            r#"{{"event":"crypto_received","data":{{"id":"dep_case_{n}","status":"completed"}}}}"#
        )
    };
    for (n, scheme) in ["Basic", "basic", "BASIC", "bAsIc"].iter().enumerate() {
        let auth = ("Authorization", format!("{scheme} {credentials}"));
        let r = gw.post("/webhooks/ledig-basic", &[auth], body(n).as_bytes());
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
        r.assert_accepted();
    }
    let wrong = b64.encode(format!("{}:{LEDIG_PASSWORD}", LEDIG_USER.to_uppercase()));
    for (what, value) in [
        ("lower-case scheme, wrong user", format!("basic {wrong}")),
        (
            "a scheme that only starts with Basic",
            format!("Basicx {credentials}"),
        ),
        ("no space after the scheme", format!("basic{credentials}")),
    ] {
        let r = gw.post(
            "/webhooks/ledig-basic",
            &[("Authorization", value)],
            body(9).as_bytes(),
        );
        assert_eq!(r.status, 401, "{what}: {}", r.body);
    }
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 4);
}

/// A gateway whose `[server]` trusts 127.0.0.1 (where the tests send from) as a proxy, plus
/// `server_extra`, with a Ledig source `ledig-partner` that only allows 203.0.113.0/24.
fn partner_behind_a_proxy(server_extra: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let text = config(&db, &Settings::default()).replace(
        "[store]",
        &format!("trusted_proxies = [\"127.0.0.1/32\"]\n{server_extra}\n[store]"),
    );
    let partner =
        "\n[sources.ledig-partner]\nprovider = \"ledig\"\nallow_ips = [\"203.0.113.0/24\"]\n";
    std::fs::write(dir.path().join("gateway.toml"), format!("{text}{partner}"))
        .expect("write config");
    Gateway::start_in(dir, db)
}

/// `[server] trusted_proxies` (127.0.0.1, where the test sends from, plays the load balancer):
/// `allow_ips` is checked against the client the proxy forwarded in `X-Forwarded-For`, read
/// from the right, so a client cannot spoof an allowed address by sending the header itself;
/// without `trusted_proxies` the header is ignored.
#[test]
fn behind_a_trusted_proxy_allow_ips_checks_the_forwarded_client() {
    let gw = partner_behind_a_proxy("");
    let body = br#"{"event":"crypto_received","data":{"id":"dep_proxy","status":"completed"}}"#;
    let via = |forwarded: &[&str]| {
        let headers: Vec<(&str, String)> = forwarded
            .iter()
            .map(|v| ("X-Forwarded-For", (*v).to_owned()))
            .collect();
        gw.post("/webhooks/ledig-partner", &headers, body)
    };

    for (case, forwarded) in [
        ("no header: the proxy itself", &[][..]),
        ("a client outside the list", &["198.51.100.1"][..]),
        (
            "an allowed address the client wrote itself",
            &["203.0.113.7, 198.51.100.1"][..],
        ),
        (
            "the same, in two header fields",
            &["203.0.113.7", "198.51.100.1"][..],
        ),
    ] {
        let r = via(forwarded);
        assert_eq!(r.status, 401, "{case}: {}", r.body);
        r.assert_error(401);
    }
    let r = via(&["203.0.113.7, garbage"]);
    r.assert_error(400);
    assert_eq!(
        r.json()["error"],
        "X-Forwarded-For from trusted proxy 127.0.0.1 holds `garbage`, not an IP address"
    );
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 0);

    via(&["198.51.100.1, 203.0.113.7"]).assert_accepted();
    stored_with_prefix(
        &gw.db(),
        "ledig-partner",
        &ledig_id_prefix("crypto_received", "dep_proxy"),
    );
    let m = gw.metrics();
    let outcome = |o: &str| {
        metric(
            &m,
            &format!(r#"gateway_requests_total{{outcome="{o}",source="ledig-partner"}}"#),
        )
    };
    assert_eq!(
        (
            outcome("accepted"),
            outcome("unauthorized"),
            outcome("malformed")
        ),
        (1.0, 4.0, 1.0)
    );
    // Refusals are logged with the client's address, not the proxy's.
    assert!(gw.stderr().contains("peer=198.51.100.1"), "{}", gw.stderr());

    // Without trusted proxies the header is nobody's word: the TCP peer is the client.
    let plain = Gateway::start();
    let r = plain.post(
        "/webhooks/ledig-remote-only",
        &[("X-Forwarded-For", "10.1.2.3".into())],
        body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

/// `[server] forwarded_header = "forwarded"`: the proxy manages RFC 7239 `Forwarded`, so the
/// client is its rightmost `for=` that is not a trusted proxy, and an `X-Forwarded-For` the
/// client wrote itself (the proxy passes it through) is nobody's word.
#[test]
fn behind_a_proxy_that_writes_forwarded_its_for_names_the_client() {
    let gw = partner_behind_a_proxy("forwarded_header = \"forwarded\"\n");
    let body = br#"{"event":"crypto_received","data":{"id":"dep_7239","status":"completed"}}"#;
    let via = |headers: &[(&str, &str)]| {
        let headers: Vec<(&str, String)> =
            headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        gw.post("/webhooks/ledig-partner", &headers, body)
    };

    let spoofed = via(&[("X-Forwarded-For", "203.0.113.7")]);
    assert_eq!(spoofed.status, 401, "{}", spoofed.body);
    let client_written = via(&[("Forwarded", "for=203.0.113.7, for=198.51.100.1")]);
    assert_eq!(client_written.status, 401, "{}", client_written.body);
    let r = via(&[("Forwarded", "for=203.0.113.7, for=unknown;proto=https")]);
    r.assert_error(400);
    assert_eq!(
        r.json()["error"],
        "Forwarded from trusted proxy 127.0.0.1 holds `unknown`, not an IP address"
    );
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 0);

    via(&[(
        "Forwarded",
        r#"for=198.51.100.1, for="203.0.113.7:4711";proto=https"#,
    )])
    .assert_accepted();
    stored_with_prefix(
        &gw.db(),
        "ledig-partner",
        &ledig_id_prefix("crypto_received", "dep_7239"),
    );
}
