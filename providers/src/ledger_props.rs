//! Property tests of Ledger signature verification (both schemes): every correctly signed
//! delivery within the tolerance passes, with the current or the rotated secret; flipping any
//! single bit of the body, the signed timestamp or the signature makes it fail; a timestamp
//! outside the tolerance fails even with a correct signature. The signatures are computed here
//! with `hmac` directly, not with the code under test.

use super::LedgerVerifier;
use crate::settings::{LedgerSettings, SignatureScheme};
use crate::{Delivery, Secret};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use http::HeaderMap;
use proptest::prelude::*;
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const TOLERANCE: i64 = 300;
/// Two Standard Webhooks secrets (current, rotated out); Ledger's own scheme keys with the
/// secret string itself.
const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_b2xkIHNlY3JldCBieXRlcyBmb3IgdGVzdHM=",
];

fn verifier(scheme: SignatureScheme) -> LedgerVerifier {
    LedgerVerifier::new(&LedgerSettings {
        secrets: SECRETS
            .iter()
            .map(|s| Secret::new(s.as_bytes().to_vec()))
            .collect(),
        scheme,
        tolerance: Duration::from_secs(300),
    })
}

fn tag(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// What the two schemes sign and send, kept apart so a test can flip bits in each part.
#[derive(Debug, Clone)]
struct Signed {
    scheme: SignatureScheme,
    id: String,
    timestamp: Vec<u8>,
    signature: Vec<u8>,
    body: Vec<u8>,
}

impl Signed {
    fn new(scheme: SignatureScheme, secret: &str, t: i64, body: Vec<u8>) -> Self {
        let timestamp = t.to_string().into_bytes();
        let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".to_owned();
        let signature = match scheme {
            SignatureScheme::StandardWebhooks => {
                let b64 = base64::engine::general_purpose::STANDARD;
                let key = b64
                    .decode(secret.trim_start_matches("whsec_"))
                    .expect("base64 secret");
                tag(&key, &[id.as_bytes(), b".", &timestamp, b".", &body])
            }
            _ => tag(secret.as_bytes(), &[&timestamp, b".", &body]),
        };
        Self {
            scheme,
            id,
            timestamp,
            signature,
            body,
        }
    }

    /// The request headers, or `None` when a flipped byte is no longer a valid header value
    /// (such a request never reaches the verifier).
    fn headers(&self) -> Option<HeaderMap> {
        let t = String::from_utf8(self.timestamp.clone()).ok()?;
        let mut h = HeaderMap::new();
        match self.scheme {
            SignatureScheme::StandardWebhooks => {
                let b64 = base64::engine::general_purpose::STANDARD;
                h.insert("webhook-id", self.id.parse().ok()?);
                h.insert("webhook-timestamp", t.parse().ok()?);
                let sig = format!("v1,{}", b64.encode(&self.signature));
                h.insert("webhook-signature", sig.parse().ok()?);
            }
            _ => {
                let sig = format!("t={t},v1={}", hex::encode(&self.signature));
                h.insert("x-ledger-signature", sig.parse().ok()?);
            }
        }
        Some(h)
    }

    fn passes(&self, v: &LedgerVerifier, now: i64) -> bool {
        let Some(headers) = self.headers() else {
            return false;
        };
        let d = Delivery {
            headers: &headers,
            body: &self.body,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            path_suffix: None,
        };
        v.verify(&d, now).is_ok()
    }
}

fn flip(bytes: &mut [u8], bit: usize) {
    let n = bytes.len() * 8;
    if n > 0 {
        let bit = bit % n;
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
}

fn scheme() -> impl Strategy<Value = SignatureScheme> {
    prop_oneof![
        Just(SignatureScheme::Ledger),
        Just(SignatureScheme::StandardWebhooks)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_valid_signature_within_the_tolerance_passes_with_either_secret(
        scheme in scheme(),
        secret in 0usize..2,
        body in proptest::collection::vec(any::<u8>(), 0..600),
        t in 1_000_000_000i64..4_000_000_000,
        skew in -TOLERANCE..=TOLERANCE,
    ) {
        let signed = Signed::new(scheme, SECRETS[secret], t, body);
        prop_assert!(signed.passes(&verifier(scheme), t + skew));
        prop_assert!(signed.passes(&verifier(SignatureScheme::Any), t + skew));
    }

    #[test]
    fn any_single_bit_flip_of_body_timestamp_or_signature_fails(
        scheme in scheme(),
        secret in 0usize..2,
        body in proptest::collection::vec(any::<u8>(), 1..600),
        t in 1_000_000_000i64..4_000_000_000,
        part in 0u8..3,
        bit in any::<usize>(),
    ) {
        let mut signed = Signed::new(scheme, SECRETS[secret], t, body);
        match part {
            0 => flip(&mut signed.body, bit),
            1 => flip(&mut signed.timestamp, bit),
            _ => flip(&mut signed.signature, bit),
        }
        prop_assert!(!signed.passes(&verifier(scheme), t));
        prop_assert!(!signed.passes(&verifier(SignatureScheme::Any), t));
    }

    #[test]
    fn a_correct_signature_outside_the_tolerance_fails(
        scheme in scheme(),
        body in proptest::collection::vec(any::<u8>(), 0..100),
        t in 1_000_000_000i64..4_000_000_000,
        beyond in 1i64..1_000_000,
        later in any::<bool>(),
    ) {
        let signed = Signed::new(scheme, SECRETS[0], t, body);
        let now = if later { t + TOLERANCE + beyond } else { t - TOLERANCE - beyond };
        prop_assert!(!signed.passes(&verifier(scheme), now));
    }

    #[test]
    fn a_secret_the_gateway_does_not_hold_fails(
        scheme in scheme(),
        body in proptest::collection::vec(any::<u8>(), 0..100),
        t in 1_000_000_000i64..4_000_000_000,
    ) {
        let other = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZzE=";
        let signed = Signed::new(scheme, other, t, body);
        prop_assert!(!signed.passes(&verifier(scheme), t));
    }
}
