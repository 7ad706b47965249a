//! Standard Webhooks signing (standardwebhooks.com, "Signature scheme"): the `webhook-signature`
//! value `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
//!
//! Owns the signed-content layout and the `webhook-id` as sent ([`wire_id`]). The key is the
//! raw HMAC key (the base64-decoded part of a `whsec_...` secret, decoded by config); it never
//! leaves [`Signer`], not even through `Debug`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// A MAC keyed once per destination; cloning it per attempt skips re-deriving the pads.
#[derive(Clone)]
pub(super) struct Signer {
    keyed: HmacSha256,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// HMAC accepts keys of any length, but the error is mapped rather than unwrapped.
    pub(super) fn new(key: &[u8]) -> Result<Self, hmac::digest::InvalidLength> {
        Ok(Self {
            keyed: HmacSha256::new_from_slice(key)?,
        })
    }

    /// The `webhook-signature` header value for one attempt.
    pub(super) fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
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

/// Marks a `webhook-id` derived by [`wire_id`] rather than sent as given.
const HASHED_PREFIX: &str = "hashed-";

/// The `webhook-id` as sent for the caller's id: the id itself when it is a plain token
/// (1 to 128 of `A-Z a-z 0-9 _ - :`), else `hashed-<first 16 bytes of its SHA-256, hex>`.
///
/// The spec requires ids without `.` (a dot would make `{id}.{timestamp}.{body}` ambiguous),
/// and an id must be a valid header value; event ids come from providers and may break both,
/// yet such an event must still be deliverable. The mapping is deterministic, so every attempt
/// of one delivery carries the same id and the receiver can still deduplicate. A plain id that
/// already starts with `hashed-` is hashed too, so a provider cannot pick an id that collides
/// with another event's derived one.
pub(super) fn wire_id(id: &str) -> Cow<'_, str> {
    let plain = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
        && !id.starts_with(HASHED_PREFIX);
    if plain {
        return Cow::Borrowed(id);
    }
    let digest = Sha256::digest(id.as_bytes());
    let half = digest.get(..16).unwrap_or_default();
    Cow::Owned(format!("{HASHED_PREFIX}{}", hex::encode(half)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer_from_whsec(secret: &str) -> Signer {
        let b64 = secret.strip_prefix("whsec_").expect("whsec_ prefix");
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 key");
        Signer::new(&key).expect("any key length")
    }

    /// The vector in the official Standard Webhooks Rust library's `test_sign`
    /// (standard-webhooks/standard-webhooks, libraries/rust/src/lib.rs).
    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let signer = signer_from_whsec("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let sig = signer.sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    /// The vector the svix libraries' tests use (also quoted by many verifiers).
    #[test]
    fn matches_the_svix_vector() {
        let signer = signer_from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn plain_ids_are_sent_as_given() {
        for id in ["msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "sha256:ab12", "evt-1"] {
            assert_eq!(wire_id(id), id);
        }
    }

    #[test]
    fn other_ids_are_hashed_deterministically() {
        for id in [
            "",
            "ledig.crypto_received:42",
            "has space",
            "caf\u{e9}",
            "hashed-00",
        ] {
            let sent = wire_id(id);
            assert!(sent.starts_with(HASHED_PREFIX), "{id:?} -> {sent}");
            assert_eq!(sent.len(), HASHED_PREFIX.len() + 32);
            assert_eq!(sent, wire_id(id), "stable across attempts");
            assert_ne!(wire_id(&sent), sent, "a derived id is never sent as given");
        }
        assert_ne!(wire_id("a.b"), wire_id("a.c"));
        assert!(wire_id(&"x".repeat(129)).starts_with(HASHED_PREFIX));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let signer = Signer::new(b"super-secret-key").expect("key");
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
    }
}
