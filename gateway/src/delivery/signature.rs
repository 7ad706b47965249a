//! Standard Webhooks signing of deliveries (standardwebhooks.com, "Signature scheme"): the
//! `webhook-signature` value `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
//!
//! Owns the `webhook-id` as sent ([`wire_id`]); the signed-content layout is the providers
//! crate's [`Signer`] (the same code that signs Ledger's Standard Webhooks scheme for `gateway
//! send` and the tests). The key is the raw HMAC key (the base64-decoded part of a
//! `whsec_...` secret, decoded by config); it never leaves the signer, not even through `Debug`.

pub(super) use gateway_providers::signing::StandardSigner as Signer;
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;

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
}
