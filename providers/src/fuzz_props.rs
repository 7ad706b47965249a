//! Fuzzing of everything that reads request bytes before (and right after) authentication: the
//! `X-Ledger-Signature` and Standard Webhooks header parsers, signature verification with
//! arbitrary header values, and both provider normalizers on arbitrary bytes and on arbitrary
//! JSON of provider-like shape. None may panic; whatever they accept must be well-formed.
//!
//! These are the CI-sized fuzzers: proptest on the stable toolchain, the default 256 cases per
//! target; a long run is `PROPTEST_CASES=200000 cargo test -p gateway --release --lib fuzz_`.
//! The coverage-guided cargo-fuzz targets in `fuzz/` (`fuzz/run.sh`, README) need an
//! instrumented build of the whole gateway, too slow for every CI run.

use super::signature::{parse_ledger_header, parse_standard_signatures, parse_unix};
use super::{ledger, ledig};
use crate::settings::{LedgerSettings, SignatureScheme};
use crate::{Delivery, Secret};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// 2026-11-23T10:00:00Z
const RECEIVED_MS: i64 = 1_763_892_000_000;

fn received() -> super::Received {
    super::Received::at(RECEIVED_MS)
}

const WINDOW: std::time::Duration = crate::settings::DEFAULT_RETRY_WINDOW;

/// Header-like text: mostly the characters these headers are made of, plus anything.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[tv1=,0-9a-fA-F ]{0,120}",
        "(v1,[A-Za-z0-9+/=]{0,60} ?){0,4}",
        "\\PC{0,80}",
        "[0-9-]{0,25}",
    ]
}

/// JSON values with the keys the normalizers look for, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("type".to_owned()),
        Just("event".to_owned()),
        Just("event_type".to_owned()),
        Just("createdAt".to_owned()),
        Just("created_at".to_owned()),
        Just("data".to_owned()),
        Just("payload".to_owned()),
        Just("status".to_owned()),
        Just("amount".to_owned()),
        Just("timestamp".to_owned()),
        "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
        Just(Value::String("transaction.created".into())),
        Just(Value::String("crypto_received".into())),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn headers_with(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    headers
}

fn verifier(scheme: SignatureScheme) -> ledger::LedgerVerifier {
    ledger::LedgerVerifier::new(&LedgerSettings {
        secrets: vec![Secret::new(
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec(),
        )],
        scheme,
        tolerance: Duration::from_secs(300),
    })
}

/// Whatever a normalizer accepts must be an envelope that serializes to JSON, deterministically,
/// and where it says its `data` is in the body, those bytes are the data.
fn assert_well_formed(body: &[u8], n: &super::Normalized, again: &super::Normalized) {
    let parts = n.envelope.to_json_parts();
    let json = parts.text;
    let data = n.envelope.data.get();
    let range = parts.data.expect("data located in the envelope");
    assert_eq!(&json[range], data);
    if let Some(at) = n.data_in_body {
        assert_eq!(body.get(at..at + data.len()), Some(data.as_bytes()));
    }
    let parsed: Value = serde_json::from_str(&json).expect("the envelope is JSON");
    assert_eq!(parsed["specversion"], "1.0");
    assert_eq!(
        n.dedup_key.as_str(),
        again.dedup_key.as_str(),
        "dedup is deterministic"
    );
    assert_eq!(n.envelope.id, again.envelope.id);
    assert_eq!(
        n.retry_identity, again.retry_identity,
        "retry identity is deterministic"
    );
}

proptest! {
    #[test]
    fn fuzz_signature_header_parsers(text in header_text()) {
        if let Ok(h) = parse_ledger_header(&text) {
            prop_assert!(text.contains("t="));
            prop_assert!(!h.signatures.is_empty());
        }
        if let Ok(tags) = parse_standard_signatures(&text) {
            prop_assert!(text.contains("v1,"));
            prop_assert!(!tags.is_empty());
        }
        let _ = parse_unix(&text);
    }

    #[test]
    fn fuzz_verification_never_accepts_made_up_headers(
        ledger_sig in header_text(),
        id in header_text(),
        ts in header_text(),
        sig in header_text(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let headers = headers_with(&[
            ("x-ledger-signature", ledger_sig),
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ]);
        let d = Delivery {
            headers: &headers,
            body: &body,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            path_suffix: None,
        };
        for scheme in [SignatureScheme::Ledger, SignatureScheme::StandardWebhooks, SignatureScheme::Any] {
            prop_assert!(verifier(scheme).verify(&d, 1_763_856_000).is_err());
        }
    }

    #[test]
    fn fuzz_normalizers_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let (Ok(a), Ok(b)) = (
            ledger::normalize("ledger", None, &body, &received()),
            ledger::normalize("ledger", None, &body, &received()),
        ) {
            assert_well_formed(&body, &a, &b);
        }
        if let (Ok(a), Ok(b)) = (
            ledig::normalize("ledig", &body, &received(), WINDOW),
            ledig::normalize("ledig", &body, &received(), WINDOW),
        ) {
            assert_well_formed(&body, &a, &b);
        }
    }

    #[test]
    fn fuzz_normalizers_on_provider_shaped_json(
        value in json_value(),
        event_id in proptest::option::of("\\PC{0,20}"),
    ) {
        let body = value.to_string();
        let signed_id = event_id.as_deref();
        let a = ledger::normalize("ledger", signed_id, body.as_bytes(), &received());
        let b = ledger::normalize("ledger", signed_id, body.as_bytes(), &received());
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_well_formed(body.as_bytes(), &a, &b);
                prop_assert!(a.envelope.event_type.starts_with("ledger."));
            }
            (a, b) => prop_assert!(a.is_err() && b.is_err(), "valid JSON may only fail for depth"),
        }
        let a = ledig::normalize("ledig", body.as_bytes(), &received(), WINDOW);
        let b = ledig::normalize("ledig", body.as_bytes(), &received(), WINDOW);
        if let (Ok(a), Ok(b)) = (&a, &b) {
            assert_well_formed(body.as_bytes(), a, b);
            prop_assert!(a.envelope.event_type.starts_with("ledig."));
        }
    }
}
