//! The common event envelope every provider's webhook is normalized into.
//!
//! Owns the CloudEvents 1.0 attributes and our extensions (`provider`, `providertype`,
//! `receivedat`), and the [`DedupKey`] that makes two deliveries "the same event". It never
//! looks at HTTP, signatures or storage: providers build envelopes, later stages only read them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

/// CloudEvents spec version we emit.
pub const SPEC_VERSION: &str = "1.0";

/// Identity of one stored event within its source; it doubles as the envelope `id`.
///
/// Every key has one of these forms, told apart by what comes before the first `:`, so no
/// choice of field values can make a key of one form equal a key of another:
///
/// | form | made by | meaning |
/// |---|---|---|
/// | `<id>` (no `:` in it) | [`DedupKey::from_signed_id`] | the provider's own event id, from signed bytes |
/// | `id:<id>` | [`DedupKey::from_signed_id`] | the same, for an id that holds a `:` |
/// | `sha256:<64 hex>` | [`DedupKey::from_content_hash`] | no signed id: a hash of the signed body |
/// | `ledig:<24 hex>:<24 hex>:<ms>` | [`DedupKey::from_object_state`] | an unsigned provider: object, state, arrival |
///
/// For the first three forms, equal keys mean "a retry of the same event" (the store drops it
/// within the dedup window). Ledig signs nothing and sends no event id, so its keys only name
/// a stored event uniquely; whether a delivery is a retry is decided by its [`ObjectState`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DedupKey(String);

/// The tag of keys made from an id that holds a `:` (see [`DedupKey`]).
const ID_TAG: &str = "id:";
/// The tag of content-hash keys.
const SHA256_TAG: &str = "sha256:";
/// The tag of Ledig keys.
const LEDIG_TAG: &str = "ledig:";

impl DedupKey {
    /// A key from an event id the provider signed (in the body, or as the signed
    /// `webhook-id`). Never call this with an id from an unsigned header.
    pub fn from_signed_id(id: &str) -> Self {
        if id.contains(':') {
            Self(format!("{ID_TAG}{id}"))
        } else {
            Self(id.to_owned())
        }
    }

    /// A key from the SHA-256 of the signed content, for events whose id is not signed: a
    /// replay of the same signed bytes gets the same key.
    pub fn from_content_hash(digest: &[u8; 32]) -> Self {
        Self(format!("{SHA256_TAG}{}", hex::encode(digest)))
    }

    /// A key naming one stored state of one object, for a provider that signs nothing: the
    /// arrival time tells apart two stored events that carry the same state (A -> B -> A).
    pub fn from_object_state(state: &ObjectState, received_at_ms: i64) -> Self {
        let object = state.object.get(..12).unwrap_or_default();
        let value = state.state.get(..12).unwrap_or_default();
        Self(format!(
            "{LEDIG_TAG}{}:{}:{received_at_ms}",
            hex::encode(object),
            hex::encode(value)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a delivery from a provider that signs no event id is about, for telling a retry from
/// a new event: the object (e.g. a payout: event name + its id, or an account's alias) and a
/// hash of the state it reports (the whole canonical body).
///
/// The rule the store applies: a delivery is a retry when its state equals the LATEST state
/// stored for its object and that state was stored less than `retry_window` before. So a
/// status that moves on is a new event, a state that comes back (active -> suspended ->
/// active) is a new event, and a provider's retry of what it last sent is a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectState {
    /// SHA-256 over the object's identifying parts, each length-prefixed.
    pub object: [u8; 32],
    /// SHA-256 of the canonical body (keys sorted, no white space, values as written).
    pub state: [u8; 32],
    /// How long after a state was stored a copy of it still counts as a retry.
    pub retry_window: std::time::Duration,
}

impl ObjectState {
    /// The object's hash from its parts; each part is length-prefixed, so parts cannot be
    /// shifted into each other (`"a:b" + "c"` and `"a" + "b:c"` hash differently).
    pub fn object_hash(parts: &[&[u8]]) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"object/v1");
        for part in parts {
            h.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// How the store tells a retry of this event from a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryIdentity {
    /// Equal [`DedupKey`]s within the dedup window are one event (a signed id or signed
    /// content).
    Key,
    /// No signed identity: see [`ObjectState`].
    ObjectState(ObjectState),
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One normalized event, serialized as CloudEvents structured JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// Equals the dedup key.
    pub id: String,
    /// The configured source name, e.g. `ledger`.
    pub source: String,
    /// `<provider>.<provider type>`, e.g. `ledger.transaction.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the provider says it happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The object the event is about (transaction id, wallet alias, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub datacontenttype: String,
    /// The provider's payload object, verbatim.
    pub data: Box<RawValue>,
    /// Extension: provider name (`ledger`, `ledig`).
    pub provider: String,
    /// Extension: the provider's own type string.
    pub providertype: String,
    /// Extension: when the gateway received it (RFC 3339, UTC).
    pub receivedat: String,
}

/// An envelope's JSON text and where its `data` value sits in it, so a store can keep the
/// payload once when it is also a verbatim part of the raw body.
#[derive(Debug, Clone)]
pub struct EnvelopeJson {
    pub text: String,
    /// Byte range of `data` in `text`; `None` if it could not be located (never expected).
    pub data: Option<Range<usize>>,
}

/// The attributes serialized after `data`, in field order: their JSON length tells where
/// `data` ends without searching the text (a search could match inside a string).
#[derive(Serialize)]
struct AfterData<'a> {
    provider: &'a str,
    providertype: &'a str,
    receivedat: &'a str,
}

impl Envelope {
    /// The envelope as CloudEvents structured-mode JSON.
    pub fn to_json(&self) -> String {
        // Sized up front: growing from serde_json's default 128 bytes took 3-4 reallocations
        // (and copies) per event.
        let strings = [
            Some(&self.specversion),
            Some(&self.id),
            Some(&self.source),
            Some(&self.event_type),
            self.time.as_ref(),
            self.subject.as_ref(),
            Some(&self.datacontenttype),
            Some(&self.provider),
            Some(&self.providertype),
            Some(&self.receivedat),
        ];
        let estimate = strings.iter().flatten().map(|s| s.len()).sum::<usize>()
            + self.data.get().len()
            + ENVELOPE_KEYS_LEN;
        let mut out = Vec::with_capacity(estimate);
        // Serializing plain strings and an already-valid RawValue into memory cannot fail, and
        // serde_json writes only UTF-8.
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => String::from_utf8(out).unwrap_or_else(|_| String::from("{}")),
            Err(_) => String::from("{}"),
        }
    }

    /// [`Envelope::to_json`] plus the byte range of `data` in it.
    pub fn to_json_parts(&self) -> EnvelopeJson {
        let text = self.to_json();
        let after = AfterData {
            provider: &self.provider,
            providertype: &self.providertype,
            receivedat: &self.receivedat,
        };
        // `{"provider":..}` is as long as the envelope's tail `,"provider":..}`.
        let mut tail = ByteCount(0);
        let tail = match serde_json::to_writer(&mut tail, &after) {
            Ok(()) => tail.0,
            Err(_) => usize::MAX,
        };
        let data = self.data.get();
        let range = text
            .len()
            .checked_sub(tail)
            .and_then(|end| Some(end.checked_sub(data.len())?..end))
            .filter(|r| {
                text.get(r.clone()) == Some(data) && text[..r.start].ends_with("\"data\":")
            });
        EnvelopeJson { text, data: range }
    }
}

/// Room for the keys, quotes and punctuation of a serialized envelope (they take ~150 bytes),
/// plus a little for escapes.
const ENVELOPE_KEYS_LEN: usize = 192;

/// Counts the bytes written to it, for a length without the text.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Formats a Unix time in milliseconds as RFC 3339 UTC, if it is in range.
pub fn rfc3339_from_millis(millis: i64) -> Option<String> {
    let nanos = i128::from(millis).checked_mul(1_000_000)?;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Formats a Unix time in seconds as RFC 3339 UTC, if it is in range.
pub fn rfc3339_from_secs(secs: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Current time as unix milliseconds.
pub fn now_unix_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_format_as_rfc3339() {
        assert_eq!(
            rfc3339_from_millis(1_710_000_000_000).as_deref(),
            Some("2024-03-09T16:00:00Z")
        );
        assert_eq!(rfc3339_from_millis(i64::MAX), None);
    }

    #[test]
    fn envelope_serializes_as_structured_cloudevent() {
        let env = Envelope {
            specversion: SPEC_VERSION.into(),
            id: "evt_1".into(),
            source: "ledger".into(),
            event_type: "ledger.transaction.completed".into(),
            time: None,
            subject: Some("txn_1".into()),
            datacontenttype: "application/json".into(),
            data: RawValue::from_string(r#"{"a":1}"#.into()).expect("valid json"),
            provider: "ledger".into(),
            providertype: "transaction.completed".into(),
            receivedat: "2024-03-09T16:00:00Z".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).expect("json");
        assert_eq!(v["type"], "ledger.transaction.completed");
        assert_eq!(v["data"]["a"], 1);
        assert!(v.get("time").is_none());
    }

    #[test]
    fn json_parts_locate_data_even_when_strings_look_like_it() {
        let tricky = r#"x","data":{"a":1},"provider":"y"#;
        let env = Envelope {
            specversion: SPEC_VERSION.into(),
            id: tricky.into(),
            source: "ledger".into(),
            event_type: "ledger.other".into(),
            time: Some(tricky.into()),
            subject: Some("é \u{2028} \\ \"".into()),
            datacontenttype: "application/json".into(),
            data: RawValue::from_string(r#"{ "a" : [1, "}"] }"#.into()).expect("valid json"),
            provider: tricky.into(),
            providertype: "\u{1F600}\"".into(),
            receivedat: tricky.into(),
        };
        let parts = env.to_json_parts();
        assert_eq!(parts.text, env.to_json());
        let range = parts.data.expect("data located");
        assert_eq!(&parts.text[range.clone()], r#"{ "a" : [1, "}"] }"#);
        assert!(
            parts.text[..range.start].ends_with(r#""datacontenttype":"application/json","data":"#)
        );
    }
}
