//! Parsers for the signature headers, and the constant-time HMAC check they feed.
//!
//! Owns the wire formats only (`t=..,v1=..` and Standard Webhooks' `v1,<base64>` lists); which
//! header is required and which secrets apply is the provider's business. Parsers never panic
//! and never allocate more than the header they read.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;

/// `X-Ledger-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`.
#[derive(Debug, PartialEq, Eq)]
pub struct LedgerSignatureHeader<'a> {
    /// The timestamp exactly as sent: it is part of the signed message.
    pub timestamp_text: &'a str,
    pub timestamp: i64,
    pub signatures: Vec<[u8; TAG_LEN]>,
}

/// Why a signature header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("signature header has no timestamp")]
    NoTimestamp,
    #[error("signature header timestamp is not a number")]
    BadTimestamp,
    #[error("signature header has more than one timestamp")]
    DuplicateTimestamp,
    #[error("signature header has no v1 signature")]
    NoSignature,
}

/// Most signatures one header may carry; more is an attack on our CPU, not a rotation.
const MAX_SIGNATURES: usize = 8;

pub fn parse_ledger_header(value: &str) -> Result<LedgerSignatureHeader<'_>, HeaderError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        let Some((key, val)) = item.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(HeaderError::DuplicateTimestamp);
                }
                timestamp = Some(val.trim());
            }
            "v1" if signatures.len() < MAX_SIGNATURES => {
                // A malformed entry is skipped: another entry may still be valid.
                let mut tag = [0u8; TAG_LEN];
                if hex::decode_to_slice(val.trim(), &mut tag).is_ok() {
                    signatures.push(tag);
                }
            }
            _ => {}
        }
    }
    let timestamp_text = timestamp.ok_or(HeaderError::NoTimestamp)?;
    let timestamp = parse_unix(timestamp_text)?;
    if signatures.is_empty() {
        return Err(HeaderError::NoSignature);
    }
    Ok(LedgerSignatureHeader {
        timestamp_text,
        timestamp,
        signatures,
    })
}

/// Standard Webhooks signature list: space-separated `v1,<base64>` entries.
pub fn parse_standard_signatures(value: &str) -> Result<Vec<[u8; TAG_LEN]>, HeaderError> {
    let mut out = Vec::new();
    for entry in value.split_ascii_whitespace().take(MAX_SIGNATURES) {
        let Some(("v1", b64)) = entry.split_once(',') else {
            continue;
        };
        let mut tag = [0u8; TAG_LEN];
        let engine = base64::engine::general_purpose::STANDARD;
        if let Ok(TAG_LEN) = engine.decode_slice(b64, &mut tag) {
            out.push(tag);
        }
    }
    if out.is_empty() {
        Err(HeaderError::NoSignature)
    } else {
        Ok(out)
    }
}

/// A Unix timestamp in seconds: ASCII digits only, no sign, no padding tricks.
pub fn parse_unix(text: &str) -> Result<i64, HeaderError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::BadTimestamp);
    }
    text.parse().map_err(|_| HeaderError::BadTimestamp)
}

/// HMAC over the concatenated parts with a pre-keyed MAC, compared in constant time against
/// every candidate tag. True when any matches.
pub(crate) fn any_tag_matches(
    keyed: &HmacSha256,
    parts: &[&[u8]],
    candidates: &[[u8; TAG_LEN]],
) -> bool {
    let mut mac = keyed.clone();
    for part in parts {
        mac.update(part);
    }
    let expected = mac.finalize().into_bytes();
    // Fold without short-circuit so timing does not reveal which candidate matched.
    candidates
        .iter()
        .fold(subtle::Choice::from(0), |acc, tag| {
            acc | expected.as_slice().ct_eq(tag)
        })
        .into()
}

/// A MAC keyed once at config time; cloning it per request skips re-deriving the pads.
pub(crate) fn keyed_mac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_header_parses_timestamp_and_signatures() {
        let sig = "ab".repeat(32);
        let h = format!("t=1710000000, v1={sig},v0=zz,v1=nothex");
        let parsed = parse_ledger_header(&h).expect("parses");
        assert_eq!(parsed.timestamp, 1_710_000_000);
        assert_eq!(parsed.timestamp_text, "1710000000");
        assert_eq!(parsed.signatures, vec![[0xab; 32]]);
    }

    #[test]
    fn ledger_header_rejects_missing_parts() {
        assert_eq!(
            parse_ledger_header("v1=00").err(),
            Some(HeaderError::NoTimestamp)
        );
        assert_eq!(
            parse_ledger_header("t=1").err(),
            Some(HeaderError::NoSignature)
        );
        assert_eq!(
            parse_ledger_header("t=-1,v1=00").err(),
            Some(HeaderError::BadTimestamp)
        );
        assert_eq!(
            parse_ledger_header("t=1,t=2").err(),
            Some(HeaderError::DuplicateTimestamp)
        );
    }

    #[test]
    fn standard_signatures_parse_space_separated_list() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let v = format!("v1a,xxx v1,{b64} v1,short");
        assert_eq!(
            parse_standard_signatures(&v).expect("one valid"),
            vec![[7u8; 32]]
        );
        assert!(parse_standard_signatures("v2,abc").is_err());
    }

    #[test]
    fn tag_comparison_matches_only_the_right_tag() {
        let key = keyed_mac(b"k");
        let mut mac = key.clone();
        mac.update(b"a.b");
        let good: [u8; 32] = mac.finalize().into_bytes().into();
        assert!(any_tag_matches(&key, &[b"a", b".b"], &[[0; 32], good]));
        assert!(!any_tag_matches(&key, &[b"a.c"], &[good]));
    }
}
