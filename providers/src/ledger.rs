//! Ledger: signature verification (`X-Ledger-Signature` and Standard Webhooks headers) and
//! normalization of its `{id, type, createdAt, data}` body.
//!
//! Verification works on the raw bytes as received, never on re-serialized JSON, and compares
//! tags in constant time against every configured secret (rotation). The timestamp is checked
//! before any HMAC work so stale replays cost nothing.

use super::signature::{self, HmacSha256, TAG_LEN};
use super::{AuthError, Delivery, NormalizeError, Normalized, OTHER_TYPE};
use crate::envelope::{DedupKey, Envelope, RetryIdentity, SPEC_VERSION};
use crate::settings::{LedgerSettings, SignatureScheme};
use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Digest as _;

/// Every Ledger event type its docs name; the `type` metric label is one of these or "other".
pub(super) const CATALOGUE: &[&str] = &[
    "ledger.customer.created",
    "ledger.customer.updated",
    "ledger.transaction.created",
    "ledger.transaction.updated",
    "ledger.transaction.completed",
    "ledger.wallet.created",
    "ledger.wallet.updated",
    "ledger.virtual_account.created",
    "ledger.virtual_account.updated",
    "ledger.counterparty.created",
    "ledger.payout_account.created",
    "ledger.card.created",
    "ledger.card.updated",
    "ledger.dispute.created",
    "ledger.dispute.updated",
    "ledger.webhook.test",
    OTHER_TYPE,
];

/// Headers kept beside the raw body so the signature can be re-checked later (sorted by name:
/// they are written in this order).
pub(super) static KEPT_HEADERS: [HeaderName; 10] = [
    HeaderName::from_static("content-type"),
    HeaderName::from_static("svix-id"),
    HeaderName::from_static("svix-signature"),
    HeaderName::from_static("svix-timestamp"),
    HeaderName::from_static("webhook-id"),
    HeaderName::from_static("webhook-signature"),
    HeaderName::from_static("webhook-timestamp"),
    HeaderName::from_static("x-ledger-event-id"),
    HeaderName::from_static("x-ledger-event-type"),
    HeaderName::from_static("x-ledger-signature"),
];

/// Pre-keyed MACs for each secret, per scheme.
#[derive(Debug)]
pub(super) struct LedgerVerifier {
    scheme: SignatureScheme,
    tolerance_secs: i64,
    /// Keyed with the secret string as written (the `X-Ledger-Signature` scheme).
    ledger_keys: Vec<HmacSha256>,
    /// Keyed with the base64-decoded `whsec_` secret (Standard Webhooks).
    standard_keys: Vec<HmacSha256>,
}

impl LedgerVerifier {
    pub(super) fn new(settings: &LedgerSettings) -> Self {
        let ledger_keys = settings
            .secrets
            .iter()
            .map(|s| signature::keyed_mac(s.expose()))
            .collect();
        let standard_keys = settings
            .secrets
            .iter()
            .filter_map(super::standard_webhooks_key)
            .map(|k| signature::keyed_mac(&k))
            .collect();
        Self {
            scheme: settings.scheme,
            tolerance_secs: i64::try_from(settings.tolerance.as_secs()).unwrap_or(i64::MAX),
            ledger_keys,
            standard_keys,
        }
    }

    /// Checks the delivery's signature; on success returns the event id the signature covered
    /// besides the body (the Standard Webhooks `webhook-id`/`svix-id`), if the scheme that
    /// passed covers one. An id header the passing signature does not cover is never returned:
    /// with both schemes' headers present and `X-Ledger-Signature` valid, the `webhook-id` is
    /// just an unsigned header.
    pub(super) fn verify<'a>(
        &self,
        d: &Delivery<'a>,
        now: i64,
    ) -> Result<Option<&'a str>, AuthError> {
        let ledger_header = d.headers.get("x-ledger-signature");
        let standard = StandardHeaders::find(d.headers);
        let ledger = |h| self.verify_ledger(h, d.body, now).map(|()| None);
        let standard_id =
            |s: &StandardHeaders<'a>| self.verify_standard(s, d.body, now).map(|()| Some(s.id));
        match self.scheme {
            SignatureScheme::Ledger => match ledger_header {
                Some(h) => ledger(h),
                None => Err(AuthError::MissingSignature),
            },
            SignatureScheme::StandardWebhooks => match standard {
                Some(s) => standard_id(&s),
                None => Err(AuthError::MissingSignature),
            },
            SignatureScheme::Any => match (ledger_header, standard) {
                (None, None) => Err(AuthError::MissingSignature),
                (Some(h), None) => ledger(h),
                (None, Some(s)) => standard_id(&s),
                (Some(h), Some(s)) => ledger(h).or_else(|e| standard_id(&s).map_err(|_| e)),
            },
        }
    }

    fn within_tolerance(&self, timestamp: i64, now: i64) -> Result<(), AuthError> {
        if now.abs_diff(timestamp) > self.tolerance_secs.unsigned_abs() {
            return Err(AuthError::StaleTimestamp);
        }
        Ok(())
    }

    fn verify_ledger(
        &self,
        header: &http::HeaderValue,
        body: &[u8],
        now: i64,
    ) -> Result<(), AuthError> {
        let text = header.to_str().map_err(|_| AuthError::SignatureMismatch)?;
        let parsed = signature::parse_ledger_header(text)?;
        self.within_tolerance(parsed.timestamp, now)?;
        let parts: [&[u8]; 3] = [parsed.timestamp_text.as_bytes(), b".", body];
        check_any_key(&self.ledger_keys, &parts, &parsed.signatures)
    }

    fn verify_standard(
        &self,
        h: &StandardHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<(), AuthError> {
        let timestamp = signature::parse_unix(h.timestamp)?;
        self.within_tolerance(timestamp, now)?;
        let candidates = signature::parse_standard_signatures(h.signature)?;
        let parts: [&[u8]; 5] = [h.id.as_bytes(), b".", h.timestamp.as_bytes(), b".", body];
        check_any_key(&self.standard_keys, &parts, &candidates)
    }
}

/// The part of verification that needs no body, run before the body is read.
impl LedgerVerifier {
    /// The error [`LedgerVerifier::verify`] would give at `now` whatever the body, if the
    /// headers alone decide it: no signature header of the accepted scheme(s), one that cannot
    /// be read, or a timestamp outside the tolerance. `Ok` means only that the body is worth
    /// reading. With `Any` and both header sets present, both must fail (as in `verify`, which
    /// then reports the `X-Ledger-Signature` error).
    pub(super) fn check_headers(&self, headers: &HeaderMap, now: i64) -> Result<(), AuthError> {
        let ledger_header = headers.get("x-ledger-signature");
        let standard = StandardHeaders::find(headers);
        match self.scheme {
            SignatureScheme::Ledger => match ledger_header {
                Some(h) => self.ledger_head(h, now),
                None => Err(AuthError::MissingSignature),
            },
            SignatureScheme::StandardWebhooks => match standard {
                Some(s) => self.standard_head(&s, now),
                None => Err(AuthError::MissingSignature),
            },
            SignatureScheme::Any => match (ledger_header, standard) {
                (None, None) => Err(AuthError::MissingSignature),
                (Some(h), None) => self.ledger_head(h, now),
                (None, Some(s)) => self.standard_head(&s, now),
                (Some(h), Some(s)) => self
                    .ledger_head(h, now)
                    .or_else(|e| self.standard_head(&s, now).map_err(|_| e)),
            },
        }
    }

    /// `verify_ledger` up to the HMAC: the header reads and its timestamp is within tolerance.
    fn ledger_head(&self, header: &http::HeaderValue, now: i64) -> Result<(), AuthError> {
        let text = header.to_str().map_err(|_| AuthError::SignatureMismatch)?;
        let parsed = signature::parse_ledger_header(text)?;
        self.within_tolerance(parsed.timestamp, now)
    }

    /// `verify_standard` up to the HMAC, its checks in the same order.
    fn standard_head(&self, h: &StandardHeaders<'_>, now: i64) -> Result<(), AuthError> {
        let timestamp = signature::parse_unix(h.timestamp)?;
        self.within_tolerance(timestamp, now)?;
        signature::parse_standard_signatures(h.signature)?;
        Ok(())
    }
}

/// True when any key's tag matches any candidate. Every key is tried (no early exit), so the
/// time taken does not reveal which secret matched.
fn check_any_key(
    keys: &[HmacSha256],
    parts: &[&[u8]],
    candidates: &[[u8; TAG_LEN]],
) -> Result<(), AuthError> {
    let matched = keys.iter().fold(false, |acc, key| {
        signature::any_tag_matches(key, parts, candidates) | acc
    });
    if matched {
        Ok(())
    } else {
        Err(AuthError::SignatureMismatch)
    }
}

/// The `webhook-*` (or, failing that, `svix-*`) header triple.
#[derive(Debug)]
struct StandardHeaders<'a> {
    id: &'a str,
    timestamp: &'a str,
    signature: &'a str,
}

/// The Standard Webhooks header names, then Svix's: (id, timestamp, signature).
static STANDARD_NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("webhook-id"),
        HeaderName::from_static("webhook-timestamp"),
        HeaderName::from_static("webhook-signature"),
    ],
    [
        HeaderName::from_static("svix-id"),
        HeaderName::from_static("svix-timestamp"),
        HeaderName::from_static("svix-signature"),
    ],
];

impl<'a> StandardHeaders<'a> {
    /// The first complete triple. Names are static: this runs for every Ledger request (twice:
    /// from the head, then with the body), and building them with `format!` cost six
    /// allocations a request when neither triple is present.
    fn find(headers: &'a HeaderMap) -> Option<Self> {
        STANDARD_NAMES
            .iter()
            .find_map(|[id, timestamp, signature]| {
                let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
                Some(Self {
                    id: get(id)?,
                    timestamp: get(timestamp)?,
                    signature: get(signature)?,
                })
            })
    }
}

/// The fields of a Ledger body we read; everything else stays in `data` untouched.
#[derive(Deserialize, Default)]
struct LedgerBody<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "createdAt")]
    created_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DataId<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Normalizes a verified Ledger body. Identity and type come from signed bytes only: the
/// body's `id` and `type` (both schemes sign the body), else `signed_id` (the `webhook-id` a
/// Standard Webhooks signature covered), else a hash of the body itself, so a replay of the
/// same signed request is a duplicate whatever unsigned headers (`X-Ledger-Event-Id`,
/// `X-Ledger-Event-Type`, an unsigned `webhook-id`) it carries. Those headers are kept with
/// the raw body for the record, never read here.
pub(super) fn normalize(
    source: &str,
    signed_id: Option<&str>,
    body: &[u8],
    received: &super::Received,
) -> Result<Normalized, NormalizeError> {
    // An object is read and checked in one pass; anything else has no fields to read and is
    // checked, then kept whole as the data, before any work is spent on it. (Not parsed as the
    // struct: serde would read an array's items as its fields, in order.)
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    let parsed = if first == Some(&b'{') {
        super::parse_body::<LedgerBody<'_>>(body)?
    } else {
        LedgerBody {
            data: Some(super::check_json(body)?),
            ..LedgerBody::default()
        }
    };
    let event_id = parsed
        .id
        .and_then(super::scalar_text)
        .filter(|id| !id.is_empty())
        .or_else(|| signed_id.filter(|id| !id.is_empty()).map(str::to_owned));
    let dedup_key = match event_id {
        Some(id) => DedupKey::from_signed_id(&id),
        None => DedupKey::from_content_hash(&sha2::Sha256::digest(body).into()),
    };
    let provider_type = parsed
        .event_type
        .and_then(super::scalar_text)
        .unwrap_or_else(|| "unknown".to_owned());
    let event_type = format!("ledger.{provider_type}");
    let catalogue_type = CATALOGUE
        .iter()
        .find(|t| **t == event_type)
        .copied()
        .unwrap_or(OTHER_TYPE);
    // An object without `data` is kept whole too, so nothing is lost.
    let data = match parsed.data {
        Some(data) => data,
        None => super::check_json(body)?,
    };
    let subject = serde_json::from_str::<DataId<'_>>(data.get())
        .ok()
        .and_then(|d| d.id)
        .and_then(super::scalar_text);
    let time = parsed.created_at.and_then(super::timestamp_text);
    let envelope = Envelope {
        specversion: SPEC_VERSION.to_owned(),
        id: dedup_key.as_str().to_owned(),
        source: source.to_owned(),
        event_type,
        time,
        subject,
        datacontenttype: "application/json".to_owned(),
        data: data.to_owned(),
        provider: "ledger".to_owned(),
        providertype: provider_type,
        receivedat: received.text.clone(),
    };
    Ok(Normalized {
        envelope,
        dedup_key,
        catalogue_type,
        unknown_fields: Vec::new(),
        data_in_body: super::offset_in(body, data.get()),
        retry_identity: RetryIdentity::Key,
    })
}

#[cfg(test)]
#[path = "ledger_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use hmac::Mac as _;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OLD: &str = "whsec_b2xkIHNlY3JldCBieXRlcyBmb3IgdGVzdHM=";

    fn verifier(scheme: SignatureScheme) -> LedgerVerifier {
        LedgerVerifier::new(&LedgerSettings {
            secrets: vec![
                Secret::new(SECRET.as_bytes().to_vec()),
                Secret::new(OLD.as_bytes().to_vec()),
            ],
            scheme,
            tolerance: Duration::from_secs(300),
        })
    }

    fn ledger_sig(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = signature::keyed_mac(secret.as_bytes());
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn delivery<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Delivery<'a> {
        Delivery {
            headers,
            body,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            path_suffix: None,
        }
    }

    /// 2024-03-09T16:00:01Z
    const RECEIVED_MS: i64 = 1_710_000_001_000;

    fn norm(body: &[u8], signed_id: Option<&str>) -> Result<Normalized, NormalizeError> {
        normalize(
            "ledger",
            signed_id,
            body,
            &super::super::Received::at(RECEIVED_MS),
        )
    }

    fn standard_sig(id: &str, t: i64, body: &[u8]) -> String {
        use base64::Engine as _;
        let key = super::super::standard_webhooks_key(&Secret::new(SECRET.as_bytes().to_vec()))
            .expect("whsec key");
        let mut mac = signature::keyed_mac(&key);
        mac.update(format!("{id}.{t}.").as_bytes());
        mac.update(body);
        let tag = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("v1,{tag}")
    }

    /// Authenticates and normalizes as the webhook path does, through the crate's `Source`.
    fn receive(scheme: SignatureScheme, h: &HeaderMap, body: &[u8]) -> Result<Normalized, String> {
        let source = crate::Source::new(&crate::settings::SourceSettings {
            name: "ledger".into(),
            path: "/webhooks/ledger".into(),
            provider: crate::settings::ProviderSettings::Ledger(LedgerSettings {
                secrets: vec![Secret::new(SECRET.as_bytes().to_vec())],
                scheme,
                tolerance: Duration::from_secs(300),
            }),
        });
        let verified = source
            .authenticate(delivery(h, body), 1000)
            .map_err(|e| e.to_string())?;
        source
            .normalize(&verified, RECEIVED_MS)
            .map_err(|e| e.to_string())
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn current_and_rotated_secrets_pass_and_others_fail() {
        let body = br#"{"id":"evt_1"}"#;
        let v = verifier(SignatureScheme::Any);
        for secret in [SECRET, OLD] {
            let h = headers(&[("x-ledger-signature", ledger_sig(secret, 1000, body))]);
            assert_eq!(v.verify(&delivery(&h, body), 1000), Ok(None));
        }
        let h = headers(&[("x-ledger-signature", ledger_sig("whsec_other", 1000, body))]);
        assert_eq!(
            v.verify(&delivery(&h, body), 1000),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn stale_timestamp_and_altered_body_fail() {
        let body = br#"{"id":"evt_1"}"#;
        let v = verifier(SignatureScheme::Ledger);
        let h = headers(&[("x-ledger-signature", ledger_sig(SECRET, 1000, body))]);
        assert_eq!(
            v.verify(&delivery(&h, body), 1000 + 301),
            Err(AuthError::StaleTimestamp)
        );
        assert_eq!(
            v.verify(&delivery(&h, br#"{"id":"evt_2"}"#), 1000),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn standard_webhooks_headers_verify_with_decoded_key() {
        use base64::Engine as _;
        let body = br#"{"id":"evt_1"}"#;
        let key = super::super::standard_webhooks_key(&Secret::new(SECRET.as_bytes().to_vec()))
            .expect("whsec key");
        let mut mac = signature::keyed_mac(&key);
        mac.update(b"msg_1.1000.");
        mac.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let h = headers(&[
            ("svix-id", "msg_1".into()),
            ("svix-timestamp", "1000".into()),
            ("svix-signature", format!("v1,bm90IGl0 v1,{sig}")),
        ]);
        let v = verifier(SignatureScheme::StandardWebhooks);
        assert_eq!(v.verify(&delivery(&h, body), 1010), Ok(Some("msg_1")));
        assert_eq!(
            verifier(SignatureScheme::Ledger).verify(&delivery(&h, body), 1010),
            Err(AuthError::MissingSignature)
        );
    }

    #[test]
    fn normalizes_documented_body() {
        let body = br#"{"id":"evt_9","type":"transaction.completed","createdAt":1710000000000,"data":{"id":"txn_1","amount":"5.0"}}"#;
        let n = norm(body, None).expect("normalizes");
        assert_eq!(n.dedup_key.as_str(), "evt_9");
        assert_eq!(n.envelope.receivedat, "2024-03-09T16:00:01Z");
        assert_eq!(n.envelope.event_type, "ledger.transaction.completed");
        assert_eq!(n.catalogue_type, "ledger.transaction.completed");
        assert_eq!(n.envelope.subject.as_deref(), Some("txn_1"));
        assert_eq!(n.envelope.time.as_deref(), Some("2024-03-09T16:00:00Z"));
        assert_eq!(n.envelope.data.get(), r#"{"id":"txn_1","amount":"5.0"}"#);
    }

    #[test]
    fn unknown_types_and_non_objects_are_kept() {
        let n = norm(br#"{"id":"e","type":"x.y"}"#, None).expect("normalizes");
        assert_eq!(n.catalogue_type, OTHER_TYPE);
        assert_eq!(n.envelope.event_type, "ledger.x.y");
        let n = norm(b"[1,2]", None).expect("normalizes");
        assert_eq!(n.envelope.data.get(), "[1,2]");
        assert!(n.dedup_key.as_str().starts_with("sha256:"));
        assert!(norm(b"not json", None).is_err());
    }

    /// The fields normalize reads and the whole body are checked in the same pass, so a flaw in
    /// a part no field names still makes the body "not JSON" (quarantined, never stored).
    #[test]
    fn a_flaw_outside_the_read_fields_is_not_json() {
        let flawed: [&[u8]; 6] = [
            br#"{"id":"e","data":{},"extra":tru}"#,
            br#"{"id":"e","data":{},"extra":"\udaaa"}"#,
            b"{\"id\":\"e\",\"data\":{},\"extra\":\"\xff\"}",
            br#"{"id":"e","data":{}} trailing"#,
            br#"{"id":"e","id":"f","data":{}}"#,
            br#"  {"id":"e","data":{"id":[1,}}"#,
        ];
        for body in flawed {
            let result = norm(body, None);
            assert!(
                matches!(result, Err(NormalizeError::NotJson(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let n = norm(b" \n{\"id\":\"e\",\"data\":[1]} ", None)
            .expect("whitespace around an object is JSON");
        assert_eq!(n.envelope.data.get(), "[1]");
        assert_eq!(n.dedup_key.as_str(), "e");
    }

    /// The review's replay: one captured request without a body `id`, signed with
    /// `X-Ledger-Signature`, sent again with other `X-Ledger-Event-Id` / `-Type` headers. Those
    /// headers are not signed, so they decide nothing: every copy has the key of the signed
    /// body, and the type is the body's (none here: `unknown`).
    #[test]
    fn unsigned_id_and_type_headers_never_decide_identity_or_type() {
        let body = br#"{"type":"transaction.completed","data":{"id":"txn_1","amount":"5.0"}}"#;
        let signed = ledger_sig(SECRET, 1000, body);
        let hash: [u8; 32] = sha2::Sha256::digest(body).into();
        let expected = format!("sha256:{}", hex::encode(hash));
        for (claimed, claimed_type) in [
            ("evt_a", "customer.created"),
            ("evt_b", "dispute.created"),
            ("evt_future", "webhook.test"),
        ] {
            let h = headers(&[
                ("x-ledger-signature", signed.clone()),
                ("x-ledger-event-id", claimed.into()),
                ("x-ledger-event-type", claimed_type.into()),
            ]);
            let n = receive(SignatureScheme::Any, &h, body).expect("verified");
            assert_eq!(n.dedup_key.as_str(), expected, "{claimed}");
            assert_eq!(n.envelope.id, expected);
            assert_eq!(n.envelope.event_type, "ledger.transaction.completed");
        }
        // Without a type in the body, a type header is not believed either.
        let untyped = br#"{"data":{"id":"txn_2"}}"#;
        let h = headers(&[
            ("x-ledger-signature", ledger_sig(SECRET, 1000, untyped)),
            ("x-ledger-event-type", "transaction.completed".into()),
        ]);
        let n = receive(SignatureScheme::Ledger, &h, untyped).expect("verified");
        assert_eq!(n.envelope.event_type, "ledger.unknown");
        assert_eq!(n.catalogue_type, OTHER_TYPE);
    }

    /// Standard Webhooks signs `webhook-id` with the body, so it is the identity of a body
    /// without `id`, and an unsigned `X-Ledger-Event-Id` beside it does not win. A `webhook-id`
    /// that only rode along with a valid `X-Ledger-Signature` is not signed and not used.
    #[test]
    fn only_a_webhook_id_the_signature_covered_names_the_event() {
        let body = br#"{"type":"transaction.created","data":{"id":"txn_1"}}"#;
        let h = headers(&[
            ("webhook-id", "msg_signed".into()),
            ("webhook-timestamp", "1000".into()),
            ("webhook-signature", standard_sig("msg_signed", 1000, body)),
            ("x-ledger-event-id", "evt_claimed".into()),
        ]);
        for scheme in [SignatureScheme::StandardWebhooks, SignatureScheme::Any] {
            let n = receive(scheme, &h, body).expect("verified");
            assert_eq!(n.dedup_key.as_str(), "msg_signed", "{scheme:?}");
        }
        // The body's own id still comes first: both schemes sign the body.
        let with_id = br#"{"id":"evt_body","type":"transaction.created","data":{}}"#;
        let h = headers(&[
            ("webhook-id", "msg_signed".into()),
            ("webhook-timestamp", "1000".into()),
            (
                "webhook-signature",
                standard_sig("msg_signed", 1000, with_id),
            ),
        ]);
        let n = receive(SignatureScheme::StandardWebhooks, &h, with_id).expect("verified");
        assert_eq!(n.dedup_key.as_str(), "evt_body");

        // Both schemes' headers, the Ledger one valid, the Standard one made up: the
        // `webhook-id` is an unsigned header like any other.
        let h = headers(&[
            ("x-ledger-signature", ledger_sig(SECRET, 1000, body)),
            ("webhook-id", "msg_made_up".into()),
            ("webhook-timestamp", "1000".into()),
            ("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl".into()),
        ]);
        let n = receive(SignatureScheme::Any, &h, body).expect("verified");
        assert!(
            n.dedup_key.as_str().starts_with("sha256:"),
            "{}",
            n.dedup_key
        );
    }

    /// Key forms never meet: an id holding `:` is tagged, so a provider id cannot equal a
    /// content-hash key or another form's key.
    #[test]
    fn ids_that_look_like_derived_keys_are_tagged() {
        let body = br#"{"data":{}}"#;
        let hash: [u8; 32] = sha2::Sha256::digest(body).into();
        let content_key = format!("sha256:{}", hex::encode(hash));
        let mimic = format!(r#"{{"id":"{content_key}","data":{{}}}}"#);
        let n = norm(mimic.as_bytes(), None).expect("normalizes");
        assert_eq!(n.dedup_key.as_str(), format!("id:{content_key}"));
        assert_eq!(
            norm(body, None).expect("normalizes").dedup_key.as_str(),
            content_key
        );
        let n = norm(br#"{"id":"evt:1","data":{}}"#, None).expect("normalizes");
        assert_eq!(n.dedup_key.as_str(), "id:evt:1");
        // An empty id is no id.
        let n = norm(br#"{"id":"","data":{}}"#, None).expect("normalizes");
        assert!(n.dedup_key.as_str().starts_with("sha256:"));
    }
}
