//! Properties of the check that runs on a request's head before its body is read
//! ([`crate::Source::check_headers`]): it refuses only what authentication would refuse anyway
//! (whatever the body, with the same error), and it passes every correctly signed delivery
//! within the tolerance, in both schemes; for Ledig it is the whole check.

use crate::settings::{
    LedgerSettings, LedigSettings, ProviderSettings, SignatureScheme, SourceSettings, TokenLocation,
};
use crate::{AuthError, Delivery, RequestHead, Secret, Source};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOLERANCE: i64 = 300;
const TOKEN: &str = "ledig-token-1";

fn ledger(scheme: SignatureScheme) -> Source {
    Source::new(&SourceSettings {
        name: "ledger".into(),
        path: "/webhooks/ledger".into(),
        provider: ProviderSettings::Ledger(LedgerSettings {
            secrets: vec![Secret::new(SECRET.as_bytes().to_vec())],
            scheme,
            tolerance: Duration::from_secs(300),
        }),
    })
}

fn ledig(allow_ips: &[&str]) -> Source {
    Source::new(&SourceSettings {
        name: "ledig".into(),
        path: "/webhooks/ledig".into(),
        provider: ProviderSettings::Ledig(LedigSettings {
            token: Some((
                Secret::new(TOKEN.as_bytes().to_vec()),
                TokenLocation::Header(HeaderName::from_static("x-ledig-token")),
            )),
            basic_auth: None,
            allow_ips: allow_ips.iter().map(|n| n.parse().expect("net")).collect(),
            retry_window: crate::settings::DEFAULT_RETRY_WINDOW,
        }),
    })
}

fn head(headers: &HeaderMap) -> RequestHead<'_> {
    RequestHead {
        headers,
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        path_suffix: None,
    }
}

fn delivery<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Delivery<'a> {
    Delivery {
        headers,
        body,
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        path_suffix: None,
    }
}

fn tag(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Correct signatures of `body` at `t` in both schemes' headers.
fn signed(t: i64, body: &[u8]) -> HeaderMap {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ts = t.to_string();
    let ledger_tag = tag(SECRET.as_bytes(), &[ts.as_bytes(), b".", body]);
    let key = b64
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("base64");
    let standard_tag = tag(&key, &[b"msg_1.", ts.as_bytes(), b".", body]);
    let mut h = HeaderMap::new();
    let value = |s: String| HeaderValue::from_str(&s).expect("header value");
    h.insert(
        "x-ledger-signature",
        value(format!("t={ts},v1={}", hex::encode(ledger_tag))),
    );
    h.insert("webhook-id", value("msg_1".into()));
    h.insert("webhook-timestamp", value(ts));
    h.insert(
        "webhook-signature",
        value(format!("v1,{}", b64.encode(standard_tag))),
    );
    h
}

/// Header-like text, as in `fuzz_props`, plus well-formed values around the tolerance.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[tv1=,0-9a-fA-F ]{0,120}",
        "(v1,[A-Za-z0-9+/=]{0,60} ?){0,4}",
        "\\PC{0,80}",
        "[0-9-]{0,25}",
        (0i64..2000).prop_map(|skew| format!("t={},v1={}", 1_763_855_000 + skew, "ab".repeat(32))),
        (0i64..2000).prop_map(|skew| (1_763_855_000 + skew).to_string()),
    ]
}

fn schemes() -> [SignatureScheme; 3] {
    [
        SignatureScheme::Ledger,
        SignatureScheme::StandardWebhooks,
        SignatureScheme::Any,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the headers, a refusal from the head is the refusal authentication gives, for
    /// any body: the head check never turns away a delivery that could pass.
    #[test]
    fn a_refusal_from_the_head_is_what_authentication_says_for_any_body(
        present in proptest::collection::vec(any::<bool>(), 4),
        values in proptest::collection::vec(header_text(), 4),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let now = 1_763_856_000;
        let names = ["x-ledger-signature", "webhook-id", "webhook-timestamp", "webhook-signature"];
        let mut headers = HeaderMap::new();
        for ((name, value), on) in names.iter().zip(&values).zip(&present) {
            if let (true, Ok(v)) = (on, HeaderValue::from_str(value)) {
                headers.insert(*name, v);
            }
        }
        for scheme in schemes() {
            let source = ledger(scheme);
            if let Err(e) = source.check_headers(head(&headers), now) {
                let full = source.authenticate(delivery(&headers, &body), now).err();
                prop_assert_eq!(Some(e), full, "{:?}", scheme);
            }
        }
    }

    /// Every correctly signed delivery within the tolerance passes the head check, in either
    /// scheme, and one outside it is refused there as stale.
    #[test]
    fn signed_deliveries_pass_the_head_and_stale_ones_do_not(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        t in 1_000_000_000i64..4_000_000_000,
        skew in -TOLERANCE..=TOLERANCE,
        beyond in 1i64..1_000_000,
    ) {
        let headers = signed(t, &body);
        for scheme in schemes() {
            let source = ledger(scheme);
            prop_assert_eq!(source.check_headers(head(&headers), t + skew), Ok(()));
            prop_assert!(source.authenticate(delivery(&headers, &body), t + skew).is_ok());
            prop_assert_eq!(
                source.check_headers(head(&headers), t + TOLERANCE + beyond),
                Err(AuthError::StaleTimestamp)
            );
        }
    }
}

#[test]
fn no_signature_header_and_a_malformed_one_are_refused_from_the_head() {
    let empty = HeaderMap::new();
    for scheme in schemes() {
        assert_eq!(
            ledger(scheme).check_headers(head(&empty), 1000),
            Err(AuthError::MissingSignature)
        );
    }
    let mut h = HeaderMap::new();
    h.insert("x-ledger-signature", HeaderValue::from_static("v1=00"));
    assert_eq!(
        ledger(SignatureScheme::Any).check_headers(head(&h), 1000),
        Err(AuthError::MalformedSignature(
            crate::signature::HeaderError::NoTimestamp
        ))
    );
    // With both header sets, the head passes if either may still verify.
    let mut both = signed(1000, b"{}");
    both.insert("x-ledger-signature", HeaderValue::from_static("t=1,v1=00"));
    assert_eq!(
        ledger(SignatureScheme::Any).check_headers(head(&both), 1000),
        Ok(())
    );
}

#[test]
fn a_ledig_head_is_the_whole_check() {
    let source = ledig(&[]);
    let token = |t: &'static str| {
        let mut h = HeaderMap::new();
        h.insert("x-ledig-token", HeaderValue::from_static(t));
        h
    };
    let empty = HeaderMap::new();
    assert_eq!(
        source.check_headers(head(&empty), 0),
        Err(AuthError::MissingToken)
    );
    assert_eq!(
        source.check_headers(head(&token("wrong")), 0),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(source.check_headers(head(&token(TOKEN)), 0), Ok(()));
    // The address rule too, compared in canonical form: the IPv4 client of a dual-stack
    // listener (`::ffff:127.0.0.1`) is 127.0.0.1.
    let local = ledig(&["127.0.0.1/32"]);
    let h = token(TOKEN);
    let from = |peer: IpAddr| RequestHead {
        headers: &h,
        peer,
        path_suffix: None,
    };
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert_eq!(local.check_headers(from(mapped), 0), Ok(()));
    assert_eq!(
        local.check_headers(from(IpAddr::V6(Ipv6Addr::LOCALHOST)), 0),
        Err(AuthError::AddressNotAllowed)
    );
    let mapped_other = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(
        local.check_headers(from(mapped_other), 0),
        Err(AuthError::AddressNotAllowed)
    );
    assert!(
        local
            .authenticate(
                Delivery {
                    headers: &h,
                    body: b"{}",
                    peer: mapped,
                    path_suffix: None
                },
                0
            )
            .is_ok()
    );
}
