//! Providers: turn one authenticated HTTP delivery into an [`Envelope`] and its [`DedupKey`].
//!
//! A [`Source`] is one configured endpoint. Its life per request is two steps:
//! [`Source::authenticate`] checks the raw bytes as received and yields a [`Verified`] delivery
//! (the only way to get one), then [`Source::normalize`] parses it. Before the body is read,
//! [`Source::check_headers`] may refuse from the head alone what could not pass anyway; it
//! never accepts anything. This crate never writes to
//! the store, never answers HTTP and never logs secrets or request bodies.
//!
//! It is the gateway's `providers` and `envelope` stages, kept in a crate of their own because
//! they are everything that reads untrusted request bytes: without the gateway's runtime
//! (wasmtime, SQLite, hyper) the cargo-fuzz targets in `fuzz/` build in about a minute, so CI
//! can fuzz them on every run. The gateway re-exports it as `gateway::providers`.

pub mod envelope;
mod ledger;
mod ledig;
mod secret;
pub mod settings;
pub mod signature;
pub mod signing;

#[cfg(test)]
mod fuzz_props;
#[cfg(test)]
mod head_props;

use crate::envelope::{DedupKey, Envelope, RetryIdentity};
use crate::settings::{ProviderSettings, SourceSettings};
use base64::Engine as _;
use http::{HeaderMap, HeaderName};
pub use secret::Secret;
use std::net::IpAddr;

/// One request as the provider parsers see it: bytes exactly as received plus transport facts.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub peer: IpAddr,
    /// The path segment after the source's path (`/webhooks/ledig/<this>`), if any.
    pub path_suffix: Option<&'a str>,
}

/// What a request says before its body: the headers and transport facts. Enough to refuse a
/// delivery that cannot pass ([`Source::check_headers`]), never enough to accept one.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub headers: &'a HeaderMap,
    pub peer: IpAddr,
    /// The path segment after the source's path (`/webhooks/ledig/<this>`), if any.
    pub path_suffix: Option<&'a str>,
}

/// A delivery that passed its source's authentication. Constructed only by
/// [`Source::authenticate`], so nothing unverified can be normalized or stored.
#[derive(Debug)]
pub struct Verified<'a> {
    delivery: Delivery<'a>,
    /// The event id the signature covered besides the body: the `webhook-id` of a delivery
    /// verified by the Standard Webhooks scheme. `None` when the signature covered the body
    /// alone (`X-Ledger-Signature`) or nothing is signed (Ledig): then no header is an id.
    signed_id: Option<&'a str>,
}

impl<'a> Verified<'a> {
    pub fn body(&self) -> &'a [u8] {
        self.delivery.body
    }
}

/// Why a delivery was not authenticated (answered 401). Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing signature headers")]
    MissingSignature,
    #[error("malformed signature header: {0}")]
    MalformedSignature(#[from] signature::HeaderError),
    #[error("signature timestamp outside the tolerance window")]
    StaleTimestamp,
    #[error("signature does not match")]
    SignatureMismatch,
    #[error("missing token")]
    MissingToken,
    #[error("invalid token")]
    InvalidToken,
    #[error("missing or malformed basic auth credentials")]
    MissingCredentials,
    #[error("invalid basic auth credentials")]
    InvalidCredentials,
    #[error("client address not allowed")]
    AddressNotAllowed,
}

/// Why an authenticated body could not be normalized (answered 400, body quarantined).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
}

/// The result of normalizing one verified delivery.
#[derive(Debug)]
pub struct Normalized {
    pub envelope: Envelope,
    pub dedup_key: DedupKey,
    /// The `type` metric label: an entry of the provider's catalogue, or "other".
    pub catalogue_type: &'static str,
    /// Payload fields the provider's docs do not list (Ledig), for counting and logging.
    pub unknown_fields: Vec<String>,
    /// Where `envelope.data` starts in the body, when it is a verbatim part of it (not
    /// reshaped), so a store can keep those bytes once.
    pub data_in_body: Option<usize>,
    /// How the store tells a retry of this event from a new one.
    pub retry_identity: RetryIdentity,
}

/// The metric label for event types outside a provider's catalogue.
pub const OTHER_TYPE: &str = "other";

#[derive(Debug)]
enum Kind {
    Ledger(ledger::LedgerVerifier),
    Ledig(ledig::LedigGuard),
}

/// One configured webhook endpoint, ready to authenticate and normalize deliveries.
#[derive(Debug)]
pub struct Source {
    name: String,
    path: String,
    kind: Kind,
}

impl Source {
    pub fn new(settings: &SourceSettings) -> Self {
        let kind = match &settings.provider {
            ProviderSettings::Ledger(l) => Kind::Ledger(ledger::LedgerVerifier::new(l)),
            ProviderSettings::Ledig(l) => Kind::Ledig(ledig::LedigGuard::new(l)),
        };
        Self {
            name: settings.name.clone(),
            path: settings.path.clone(),
            kind,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether requests carry a token as an extra path segment.
    pub fn token_in_path(&self) -> bool {
        matches!(&self.kind, Kind::Ledig(g) if g.token_in_path())
    }

    /// Every `type` label this source can produce, to pre-register metric series.
    pub fn catalogue(&self) -> &'static [&'static str] {
        match &self.kind {
            Kind::Ledger(_) => ledger::CATALOGUE,
            Kind::Ledig(_) => ledig::CATALOGUE,
        }
    }

    /// Checks a delivery against this source's signature, token, credentials or address rules.
    pub fn authenticate<'a>(
        &self,
        delivery: Delivery<'a>,
        now_unix: i64,
    ) -> Result<Verified<'a>, AuthError> {
        let signed_id = match &self.kind {
            Kind::Ledger(v) => v.verify(&delivery, now_unix)?,
            Kind::Ledig(g) => {
                g.check(&delivery)?;
                None
            }
        };
        Ok(Verified {
            delivery,
            signed_id,
        })
    }

    /// Refuses, from the head alone and before a byte of the body is read, a delivery that
    /// [`Source::authenticate`] would refuse whatever its body: so a client that cannot
    /// authenticate cannot make the gateway hold a body's worth of memory. Ledig's protections
    /// (token, basic auth, address) read no body, so its whole check runs here; for Ledger a
    /// missing or malformed signature header and a timestamp outside the tolerance. Passing it
    /// proves nothing: the delivery must still pass `authenticate`. The error is the one
    /// `authenticate` would give at the same `now_unix`.
    pub fn check_headers(&self, head: RequestHead<'_>, now_unix: i64) -> Result<(), AuthError> {
        match &self.kind {
            Kind::Ledger(v) => v.check_headers(head.headers, now_unix),
            Kind::Ledig(g) => g.check_head(&head),
        }
    }

    /// Turns a verified body into the envelope; `received_at_ms` is when it arrived (unix
    /// milliseconds). Identity and type come from signed bytes only (see [`DedupKey`]).
    pub fn normalize(
        &self,
        verified: &Verified<'_>,
        received_at_ms: i64,
    ) -> Result<Normalized, NormalizeError> {
        let d = &verified.delivery;
        let received = Received::at(received_at_ms);
        match &self.kind {
            Kind::Ledger(_) => ledger::normalize(&self.name, verified.signed_id, d.body, &received),
            Kind::Ledig(g) => ledig::normalize(&self.name, d.body, &received, g.retry_window()),
        }
    }

    /// The request headers worth keeping beside the raw body (to re-check a signature later),
    /// as a JSON object with lowercase names. Never tokens or credentials.
    pub fn kept_headers(&self, headers: &HeaderMap) -> String {
        let names: &[HeaderName] = match &self.kind {
            Kind::Ledger(_) => &ledger::KEPT_HEADERS,
            Kind::Ledig(_) => &ledig::KEPT_HEADERS,
        };
        // Serializing string pairs into memory cannot fail.
        serde_json::to_string(&KeptHeaders { names, headers }).unwrap_or_else(|_| "{}".into())
    }
}

/// The kept headers, serialized straight from the request's map: no intermediate value (this
/// runs on every request; going through `serde_json::Value` cost ~2% of its CPU). The name
/// lists are sorted, so the object's keys are too (as a JSON map would write them).
struct KeptHeaders<'a> {
    names: &'a [HeaderName],
    headers: &'a HeaderMap,
}

impl serde::Serialize for KeptHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.names.iter().filter_map(|name| {
            let value = self.headers.get(name)?.to_str().ok()?;
            Some((name.as_str(), value))
        }))
    }
}

/// Normalizes a payload from a trusted local file, without authentication: for tooling such as
/// `gateway plugin run`. Never call this on network input; the webhook path goes through
/// [`Source::authenticate`]. Ledig payloads get the default retry window.
pub fn normalize_local_payload(
    provider: &str,
    source: &str,
    body: &[u8],
    received_at_ms: i64,
) -> Result<Normalized, NormalizeError> {
    let received = Received::at(received_at_ms);
    match provider {
        "ledger" => ledger::normalize(source, None, body, &received),
        _ => ledig::normalize(source, body, &received, settings::DEFAULT_RETRY_WINDOW),
    }
}

/// When a delivery arrived, in the two forms normalizing needs.
#[derive(Debug, Clone)]
struct Received {
    /// Unix milliseconds.
    ms: i64,
    /// RFC 3339, for the envelope's `receivedat`.
    text: String,
}

impl Received {
    fn at(ms: i64) -> Self {
        Self {
            ms,
            text: crate::envelope::rfc3339_from_millis(ms).unwrap_or_default(),
        }
    }
}

/// The HMAC key of a Standard Webhooks secret (`whsec_<base64>`), if the secret has that form.
pub fn standard_webhooks_key(secret: &Secret) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(secret.expose()).ok()?;
    let b64 = text.strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Where `part`, a slice of `text` (a value borrowed from it by the parser), starts in it.
fn offset_in(text: &[u8], part: &str) -> Option<usize> {
    let start = part.as_ptr().addr().checked_sub(text.as_ptr().addr())?;
    (start.checked_add(part.len())? <= text.len()).then_some(start)
}

/// Checks a body is JSON without building a tree (and without recursion limits surprises:
/// serde_json stops at depth 128 with an error, which we report as "not JSON").
fn check_json(body: &[u8]) -> Result<&serde_json::value::RawValue, NormalizeError> {
    parse_body(body)
}

/// Parses a body as `T` in one pass that also checks ALL of it is JSON: fields `T` does not
/// name are parsed and skipped, never trusted unchecked. So a provider that reads a few top-level
/// fields needs no separate validating pass (the body is ~1 KB and every byte costs).
///
/// The body must be UTF-8 as a whole (serde_json skips over strings it does not keep without
/// looking at their bytes). Skipping a string does not decode its escapes either, so a lone
/// surrogate (`"\udaaa"`) passed unnoticed and the stored envelope could not be read back by
/// the plugins' JSON parser or by strict receivers (found by cargo-fuzz). Bodies with `\u`
/// escapes are therefore decoded in full once more (no tree is built); the others cannot hold
/// an invalid escape of that kind.
fn parse_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, NormalizeError> {
    let not_json = |e: serde_json::Error| NormalizeError::NotJson(e.to_string());
    let text = std::str::from_utf8(body).map_err(|e| {
        NormalizeError::NotJson(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let value = serde_json::from_str::<T>(text).map_err(not_json)?;
    if memchr::memmem::find(body, b"\\u").is_some() {
        serde_json::from_str::<Decoded>(text).map_err(not_json)?;
    }
    Ok(value)
}

/// Any JSON value, every string decoded (so escapes are validated) and then dropped.
struct Decoded;

impl<'de> serde::Deserialize<'de> for Decoded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DecodedVisitor)
    }
}

struct DecodedVisitor;

impl<'de> serde::de::Visitor<'de> for DecodedVisitor {
    type Value = Decoded;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Decoded, E> {
        Ok(Decoded)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Decoded, E> {
        Ok(Decoded)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Decoded, E> {
        Ok(Decoded)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Decoded, E> {
        Ok(Decoded)
    }
    fn visit_str<E>(self, _: &str) -> Result<Decoded, E> {
        Ok(Decoded)
    }
    fn visit_unit<E>(self) -> Result<Decoded, E> {
        Ok(Decoded)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Decoded, A::Error> {
        while seq.next_element::<Decoded>()?.is_some() {}
        Ok(Decoded)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Decoded, A::Error> {
        while map.next_entry::<Decoded, Decoded>()?.is_some() {}
        Ok(Decoded)
    }
}

/// A JSON string's value, or the raw text of any other scalar (numbers as written).
fn scalar_text(raw: &serde_json::value::RawValue) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok(),
        Some(b'{' | b'[') | None => None,
        Some(_) if text == "null" => None,
        Some(_) => Some(text.to_owned()),
    }
}

/// A provider timestamp as RFC 3339: epoch numbers (seconds or milliseconds, told apart by
/// size) or an RFC 3339 string.
fn timestamp_text(raw: &serde_json::value::RawValue) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let text = scalar_text(raw)?;
    if let Ok(n) = text.parse::<i64>() {
        return if n.abs() >= 100_000_000_000 {
            crate::envelope::rfc3339_from_millis(n)
        } else {
            crate::envelope::rfc3339_from_secs(n)
        };
    }
    let t = time::OffsetDateTime::parse(&text, &Rfc3339).ok()?;
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_headers_read_back_as_the_text_they_were_sent_with() {
        for text in ["t=1,v1=ab", "quote \" backslash \\ tab \t", ""] {
            let mut headers = HeaderMap::new();
            let value = http::HeaderValue::from_str(text).expect("a header value");
            headers.insert("x-ledger-signature", value);
            let names = &ledger::KEPT_HEADERS;
            let out = serde_json::to_string(&KeptHeaders {
                names,
                headers: &headers,
            })
            .expect("serializes");
            let back: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(back["x-ledger-signature"], text, "{out}");
        }
    }

    #[test]
    fn a_lone_surrogate_escape_is_not_json_and_every_stored_envelope_reads_back() {
        // The body cargo-fuzz found: a JSON string holding an unpaired `\udaaa`.
        let found = br#"";ne\udaaaa1ua!at%\ufaaa!aay""#;
        let nested = br#"{"id":"evt_1","type":"transaction.created","data":{"memo":"\ud800"}}"#;
        for (provider, body) in [
            ("ledger", &found[..]),
            ("ledger", nested),
            ("ledig", nested),
        ] {
            match normalize_local_payload(provider, provider, body, 0) {
                Err(NormalizeError::NotJson(e)) => assert!(e.contains("escape"), "{e}"),
                other => panic!("{provider}: {other:?}"),
            }
        }
        // Valid escapes, a surrogate pair included, are kept exactly as sent.
        let fine =
            br#"{"id":"evt_2","type":"transaction.created","data":{"n":"\u00e9\ud83d\ude00"}}"#;
        for provider in ["ledger", "ledig"] {
            let n = normalize_local_payload(provider, provider, fine, 0).expect("valid JSON");
            let back: serde_json::Value =
                serde_json::from_str(&n.envelope.to_json()).expect("reads back");
            assert_eq!(back["data"]["n"], "\u{e9}\u{1f600}", "{provider}");
        }
    }

    #[test]
    fn timestamps_accept_millis_seconds_and_rfc3339() {
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned()).expect("json");
        assert_eq!(
            timestamp_text(&raw("1710000000000")).as_deref(),
            Some("2024-03-09T16:00:00Z")
        );
        assert_eq!(
            timestamp_text(&raw("1710000000")).as_deref(),
            Some("2024-03-09T16:00:00Z")
        );
        assert_eq!(
            timestamp_text(&raw("\"2024-03-09T17:00:00+01:00\"")).as_deref(),
            Some("2024-03-09T16:00:00Z")
        );
        assert_eq!(timestamp_text(&raw("\"yesterday\"")), None);
    }

    #[test]
    fn standard_key_needs_whsec_prefix_and_base64() {
        let s = Secret::new(b"whsec_AAEC".to_vec());
        assert_eq!(standard_webhooks_key(&s), Some(vec![0, 1, 2]));
        assert_eq!(standard_webhooks_key(&Secret::new(b"plain".to_vec())), None);
    }
}
