//! The signing side of the wire formats [`crate::signature`] parses: what a provider (or the
//! gateway itself, delivering to a destination) puts in the signature header.
//!
//! Used by `gateway send`, the delivery stage, `loadgen` and the tests, so that one piece of
//! code writes every signature the project checks. Never used to verify: verification stays
//! constant-time in `signature`. A signer holds a keyed MAC and never prints its key.

use crate::signature::{HmacSha256, keyed_mac};
use base64::Engine as _;
use hmac::Mac as _;
use std::fmt;

/// `X-Ledger-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, keyed with the
/// secret string's bytes as written (`whsec_` prefix included).
#[derive(Clone)]
pub struct LedgerSigner {
    keyed: HmacSha256,
}

impl LedgerSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            keyed: keyed_mac(secret),
        }
    }

    /// The header value for `body` signed at `timestamp` (Unix seconds).
    pub fn header(&self, timestamp: i64, body: &[u8]) -> String {
        let t = timestamp.to_string();
        let mut mac = self.keyed.clone();
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Standard Webhooks (and Svix): `webhook-signature: v1,<base64 HMAC-SHA256(key,
/// "<id>.<timestamp>.<body>")>`, keyed with the raw key (the base64-decoded part of a
/// `whsec_...` secret; see [`crate::standard_webhooks_key`]).
#[derive(Clone)]
pub struct StandardSigner {
    keyed: HmacSha256,
}

impl StandardSigner {
    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: keyed_mac(key),
        }
    }

    /// The `webhook-signature` header value.
    pub fn header(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag)
        )
    }
}

impl fmt::Debug for LedgerSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LedgerSigner(<redacted>)")
    }
}

impl fmt::Debug for StandardSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardSigner(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{LedgerSettings, ProviderSettings, SignatureScheme, SourceSettings};
    use crate::{Delivery, Secret, Source};
    use std::time::Duration;

    /// The vector in the official Standard Webhooks Rust library's `test_sign`.
    #[test]
    fn standard_matches_the_reference_vector() {
        let key = crate::standard_webhooks_key(&Secret::new(
            b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_vec(),
        ))
        .expect("whsec key");
        let sig = StandardSigner::new(&key).header(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    /// The vector the svix libraries' tests use (also quoted by many verifiers).
    #[test]
    fn standard_matches_the_svix_vector() {
        let key = crate::standard_webhooks_key(&Secret::new(
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec(),
        ))
        .expect("whsec key");
        let sig = StandardSigner::new(&key).header(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// Both signers' output passes the verifier the gateway runs, and only for its secret.
    #[test]
    fn signatures_pass_the_gateway_verifier() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let source = |s: &str| {
            Source::new(&SourceSettings {
                name: "ledger".into(),
                path: "/l".into(),
                provider: ProviderSettings::Ledger(LedgerSettings {
                    secrets: vec![Secret::new(s.as_bytes().to_vec())],
                    scheme: SignatureScheme::Any,
                    tolerance: Duration::from_secs(300),
                }),
            })
        };
        let body = br#"{"id":"evt_1","type":"webhook.test","data":{}}"#;
        let now = 1_710_000_000;
        let key = crate::standard_webhooks_key(&Secret::new(secret.as_bytes().to_vec()))
            .expect("whsec key");
        let ledger = LedgerSigner::new(secret.as_bytes()).header(now, body);
        let standard = StandardSigner::new(&key).header("msg_1", now, body);
        let sets: [Vec<(&str, String)>; 2] = [
            vec![("x-ledger-signature", ledger)],
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", standard),
            ],
        ];
        for set in sets {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &set {
                headers.insert(
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_str(v).expect("header value"),
                );
            }
            let delivery = Delivery {
                headers: &headers,
                body,
                peer: std::net::Ipv4Addr::LOCALHOST.into(),
                path_suffix: None,
            };
            assert!(
                source(secret).authenticate(delivery, now).is_ok(),
                "{set:?}"
            );
            let other = "whsec_b2xkIHNlY3JldCBieXRlcyBmb3IgdGVzdHM=";
            assert!(
                source(other).authenticate(delivery, now).is_err(),
                "{set:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(
            format!("{:?}", LedgerSigner::new(b"k")),
            "LedgerSigner(<redacted>)"
        );
        assert_eq!(
            format!("{:?}", StandardSigner::new(b"k")),
            "StandardSigner(<redacted>)"
        );
    }
}
