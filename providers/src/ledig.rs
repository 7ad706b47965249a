//! Ledig: endpoint protection (token, basic auth, IP allow-list) and a tolerant parser.
//!
//! Ledig signs nothing and its docs leave the payload shape open, so the parser accepts the
//! nested `{"event": .., "data": {..}}` shape, `payload` instead of `data`, a flat object, and
//! any spelling of a key (case, spaces, `_`, `-` ignored). Unknown fields stay in `data` and are
//! reported, never rejected. Secrets are compared as SHA-256 digests in constant time, so neither
//! their content nor their length leaks through timing.

use super::{AuthError, Delivery, NormalizeError, Normalized, OTHER_TYPE, RequestHead};
use crate::Secret;
use crate::envelope::{DedupKey, Envelope, SPEC_VERSION};
use crate::settings::{LedigSettings, TokenLocation};
use base64::Engine as _;
use http::HeaderName;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use std::fmt;
use subtle::ConstantTimeEq as _;

/// The seven documented event names, and the fields the docs list for each (normalized).
const EVENTS: &[(&str, &[&str])] = &[
    (
        "settlement_wallet_update",
        &[
            "alias",
            "address",
            "network",
            "assetsupported",
            "status",
            "business",
        ],
    ),
    (
        "settlement_account_update",
        &[
            "alias",
            "bankname",
            "accountnumber",
            "accountname",
            "status",
            "currency",
            "otherdetails",
        ],
    ),
    (
        "crypto_received",
        &[
            "id",
            "walletalias",
            "walletaddress",
            "txhash",
            "coin",
            "amount",
            "status",
            "fee",
        ],
    ),
    (
        "virtual_account_created",
        &[
            "alias",
            "bank",
            "accountnumber",
            "accountname",
            "merchantassociated",
            "business",
            "currency",
        ],
    ),
    (
        "virtual_account_credited",
        &[
            "id",
            "currency",
            "amount",
            "status",
            "accountreceivedalias",
            "senderbank",
            "senderaccountname",
            "senderaccountnumber",
        ],
    ),
    (
        "crypto_payout_update",
        &[
            "id",
            "coin",
            "amountsent",
            "walletreceivedalias",
            "status",
            "fee",
            "txhash",
        ],
    ),
    (
        "admin_funding",
        &[
            "id",
            "asset",
            "amount",
            "status",
            "business",
            "fee",
            "creditdebit",
            "fiatcrypto",
        ],
    ),
];

/// Fields any event may carry without being "unknown".
const COMMON_FIELDS: &[&str] = &["createdat", "updatedat", "timestamp", "time", "date"];

pub(super) const CATALOGUE: &[&str] = &[
    "ledig.settlement_wallet_update",
    "ledig.settlement_account_update",
    "ledig.crypto_received",
    "ledig.virtual_account_created",
    "ledig.virtual_account_credited",
    "ledig.crypto_payout_update",
    "ledig.admin_funding",
    OTHER_TYPE,
];

/// Headers kept beside the body (sorted by name: they are written in this order).
pub(super) static KEPT_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("content-type"),
    HeaderName::from_static("user-agent"),
];

/// Key names that carry the event name, in order of preference (normalized).
const NAME_KEYS: &[&str] = &["event", "eventtype", "eventname", "type"];
/// Key names that hold the payload object in the nested shape (normalized).
const BODY_KEYS: &[&str] = &["data", "payload"];

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A Ledig source's protections; every configured one must pass.
#[derive(Debug)]
pub(super) struct LedigGuard {
    token: Option<([u8; 32], TokenLocation)>,
    /// SHA-256 of `user:password`, as sent in the Authorization header after decoding.
    basic_auth: Option<[u8; 32]>,
    allow_ips: Vec<ipnet::IpNet>,
}

impl LedigGuard {
    pub(super) fn new(settings: &LedigSettings) -> Self {
        let token = settings
            .token
            .as_ref()
            .map(|(secret, location)| (digest(secret.expose()), location.clone()));
        let basic_auth = settings
            .basic_auth
            .as_ref()
            .map(|(user, pass): &(Secret, Secret)| {
                let mut joined = user.expose().to_vec();
                joined.push(b':');
                joined.extend_from_slice(pass.expose());
                digest(&joined)
            });
        Self {
            token,
            basic_auth,
            allow_ips: settings.allow_ips.clone(),
        }
    }

    pub(super) fn token_in_path(&self) -> bool {
        matches!(self.token, Some((_, TokenLocation::Path)))
    }

    pub(super) fn check(&self, d: &Delivery<'_>) -> Result<(), AuthError> {
        // An IPv4 client of a dual-stack listener (`[::]`) arrives as `::ffff:a.b.c.d`; it is
        // the IPv4 client all the same (the config writes networks in the same canonical form).
        let peer = d.peer.to_canonical();
        if !self.allow_ips.is_empty() && !self.allow_ips.iter().any(|n| n.contains(&peer)) {
            return Err(AuthError::AddressNotAllowed);
        }
        if let Some((expected, location)) = &self.token {
            let sent = match location {
                TokenLocation::Header(name) => d.headers.get(name).map(|v| v.as_bytes()),
                TokenLocation::Path => d.path_suffix.map(str::as_bytes),
            };
            let sent = sent
                .filter(|s| !s.is_empty())
                .ok_or(AuthError::MissingToken)?;
            if !bool::from(digest(sent).ct_eq(expected)) {
                return Err(AuthError::InvalidToken);
            }
        }
        if let Some(expected) = &self.basic_auth {
            let sent = d
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Basic ")
                        .or_else(|| v.strip_prefix("basic "))
                })
                .and_then(|b64| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .ok()
                })
                .ok_or(AuthError::MissingCredentials)?;
            if !bool::from(digest(&sent).ct_eq(expected)) {
                return Err(AuthError::InvalidCredentials);
            }
        }
        Ok(())
    }
}

impl LedigGuard {
    /// The whole check on a request's head, before its body is read: every Ledig protection
    /// (address, token, basic auth) is in the head, none in the body. The same answer as
    /// [`LedigGuard::check`] gives once the body is there.
    pub(super) fn check_head(&self, head: &RequestHead<'_>) -> Result<(), AuthError> {
        self.check(&Delivery {
            headers: head.headers,
            body: &[],
            peer: head.peer,
            path_suffix: head.path_suffix,
        })
    }
}

/// A key as Ledig might spell it, reduced to lowercase letters and digits.
fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A JSON object's members in document order, values left as raw JSON.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Fields<'a> {
    fn parse(raw: &'a RawValue) -> Option<Self> {
        if !raw.get().starts_with('{') {
            return None;
        }
        serde_json::from_str(raw.get()).ok()
    }

    /// The first member whose normalized key is one of `names` (in `names` order).
    fn find(&self, names: &[&str]) -> Option<(usize, &'a RawValue)> {
        names.iter().find_map(|want| {
            self.0
                .iter()
                .position(|(k, _)| normalize_key(k) == *want)
                .map(|i| (i, self.0[i].1))
        })
    }

    /// The object without member `skip`, members and values verbatim.
    fn without(&self, skip: usize) -> Box<RawValue> {
        let mut out = String::from("{");
        for (_, (k, v)) in self.0.iter().enumerate().filter(|(i, _)| *i != skip) {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        // Built from valid JSON pieces; fall back to an empty object rather than fail.
        RawValue::from_string(out).unwrap_or_else(|_| empty_object())
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// The documented name an event name matches, ignoring spelling.
fn documented(name: &str) -> Option<(&'static str, &'static [&'static str])> {
    let n = normalize_key(name);
    EVENTS
        .iter()
        .find(|(event, _)| normalize_key(event) == n)
        .copied()
}

/// SHA-256 of the canonical form: keys sorted, no white space, numbers as written.
fn canonical_hash(body: &RawValue) -> String {
    let canonical = serde_json::from_str::<serde_json::Value>(body.get())
        .map(|v| v.to_string())
        .unwrap_or_else(|_| body.get().to_owned());
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// What the tolerant parser found in one body, before it becomes an envelope.
struct Parsed {
    name: String,
    known_fields: Option<&'static [&'static str]>,
    data: Box<RawValue>,
    /// Where `data` starts in the parsed text, when it is a verbatim part of it.
    data_at: Option<usize>,
    id: Option<String>,
    status: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    unknown_fields: Vec<String>,
}

fn parse(whole: &RawValue) -> Parsed {
    let Some(top) = Fields::parse(whole) else {
        // Valid JSON but not an object: keep it whole under an "unknown" type.
        return Parsed {
            name: "unknown".to_owned(),
            known_fields: None,
            data: whole.to_owned(),
            data_at: Some(0),
            id: None,
            status: None,
            subject: None,
            time: None,
            unknown_fields: Vec::new(),
        };
    };
    let name_member = top
        .find(NAME_KEYS)
        .and_then(|(i, v)| super::scalar_text(v).map(|n| (i, n)));
    let nested = top
        .find(BODY_KEYS)
        .filter(|(_, v)| v.get().starts_with('{'));
    let (data, data_at, fields) = match (nested, &name_member) {
        (Some((_, inner)), _) => (
            inner.to_owned(),
            super::offset_in(whole.get().as_bytes(), inner.get()),
            Fields::parse(inner).unwrap_or(Fields(Vec::new())),
        ),
        (None, Some((i, _))) => {
            let rest = top
                .0
                .iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .map(|(_, kv)| kv.clone())
                .collect();
            // Rebuilt without the name member: not a part of the body.
            (top.without(*i), None, Fields(rest))
        }
        (None, None) => (whole.to_owned(), Some(0), Fields(top.0.clone())),
    };
    let (name, known_fields) = match &name_member {
        Some((_, raw_name)) => match documented(raw_name) {
            Some((doc, fields)) => (doc.to_owned(), Some(fields)),
            None => (raw_name.trim().to_owned(), None),
        },
        None => ("unknown".to_owned(), None),
    };
    // The payload's own members win; the outer object is the fallback (flat shapes).
    let field = |names: &[&str]| {
        fields
            .find(names)
            .or_else(|| top.find(names))
            .and_then(|(_, v)| super::scalar_text(v))
    };
    let id = field(&["id"]);
    let subject = id.clone().or_else(|| {
        field(&[
            "alias",
            "walletalias",
            "accountreceivedalias",
            "walletreceivedalias",
        ])
    });
    let time = fields
        .find(COMMON_FIELDS)
        .or_else(|| top.find(COMMON_FIELDS))
        .and_then(|(_, v)| super::timestamp_text(v));
    let unknown_fields = known_fields.map_or_else(Vec::new, |known| {
        fields
            .0
            .iter()
            .map(|(k, _)| k)
            .filter(|k| {
                let n = normalize_key(k);
                !known.contains(&n.as_str()) && !COMMON_FIELDS.contains(&n.as_str())
            })
            .cloned()
            .collect()
    });
    Parsed {
        name,
        known_fields,
        data,
        data_at,
        status: field(&["status"]),
        id,
        subject,
        time,
        unknown_fields,
    }
}

pub(super) fn normalize(
    source: &str,
    body: &[u8],
    received_at: &str,
) -> Result<Normalized, NormalizeError> {
    let whole = super::check_json(body)?;
    let p = parse(whole);
    // Type + id + status: a status change of the same payout is a new event, a retry is not.
    let dedup_key = match &p.id {
        Some(id) => {
            let mut parts = vec![p.name.as_str(), id.as_str()];
            if let Some(status) = &p.status {
                parts.push(status);
            }
            DedupKey::from_parts(&parts)
        }
        None => DedupKey::from_content_hash(&canonical_hash(whole)),
    };
    let event_type = format!("ledig.{}", p.name);
    let catalogue_type = match p.known_fields {
        Some(_) => CATALOGUE
            .iter()
            .find(|t| **t == event_type)
            .copied()
            .unwrap_or(OTHER_TYPE),
        None => OTHER_TYPE,
    };
    Ok(Normalized {
        envelope: Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id: dedup_key.as_str().to_owned(),
            source: source.to_owned(),
            event_type,
            time: p.time,
            subject: p.subject,
            datacontenttype: "application/json".to_owned(),
            data: p.data,
            provider: "ledig".to_owned(),
            providertype: p.name,
            receivedat: received_at.to_owned(),
        },
        dedup_key,
        catalogue_type,
        unknown_fields: p.unknown_fields,
        data_in_body: p
            .data_at
            .and_then(|at| super::offset_in(body, whole.get())?.checked_add(at)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(body: &str) -> Normalized {
        normalize("ledig", body.as_bytes(), "2024-01-01T00:00:00Z").expect("normalizes")
    }

    #[test]
    fn nested_shape_keeps_data_verbatim() {
        let n = norm(
            r#"{"event":"crypto_received","data":{"id":"dep_1","Amount":"10.5","status":"completed","wallet_alias":"w1"}}"#,
        );
        assert_eq!(n.envelope.event_type, "ledig.crypto_received");
        assert_eq!(n.catalogue_type, "ledig.crypto_received");
        assert_eq!(n.dedup_key.as_str(), "crypto_received:dep_1:completed");
        assert_eq!(n.envelope.subject.as_deref(), Some("dep_1"));
        assert_eq!(
            n.envelope.data.get(),
            r#"{"id":"dep_1","Amount":"10.5","status":"completed","wallet_alias":"w1"}"#
        );
        assert!(n.unknown_fields.is_empty());
    }

    #[test]
    fn flat_shape_with_odd_spellings() {
        let n = norm(
            r#"{"Event-Type":"Crypto Payout Update","ID":7,"Status":"pending","Amount Sent":"1","extra_thing":true}"#,
        );
        assert_eq!(n.envelope.event_type, "ledig.crypto_payout_update");
        assert_eq!(n.dedup_key.as_str(), "crypto_payout_update:7:pending");
        assert_eq!(
            n.envelope.data.get(),
            r#"{"ID":7,"Status":"pending","Amount Sent":"1","extra_thing":true}"#
        );
        assert_eq!(n.unknown_fields, vec!["extra_thing".to_owned()]);
    }

    #[test]
    fn payload_key_and_status_change_is_a_new_event() {
        let a = norm(
            r#"{"eventType":"crypto_payout_update","payload":{"id":"po_1","status":"pending"}}"#,
        );
        let b = norm(
            r#"{"eventType":"crypto_payout_update","payload":{"id":"po_1","status":"completed"}}"#,
        );
        assert_ne!(a.dedup_key, b.dedup_key);
    }

    #[test]
    fn events_without_id_hash_the_canonical_payload() {
        let a =
            norm(r#"{"event":"settlement_wallet_update","data":{"Alias":"w","status":"active"}}"#);
        let b = norm(
            r#"{ "data" : { "status":"active", "Alias":"w" }, "event":"settlement_wallet_update" }"#,
        );
        assert_eq!(a.dedup_key, b.dedup_key);
        assert!(a.dedup_key.as_str().starts_with("sha256:"));
        assert_eq!(a.envelope.subject.as_deref(), Some("w"));
    }

    #[test]
    fn unknown_names_and_non_objects_are_accepted() {
        let n = norm(r#"{"type":"brand_new_event","x":1}"#);
        assert_eq!(n.envelope.event_type, "ledig.brand_new_event");
        assert_eq!(n.catalogue_type, OTHER_TYPE);
        let n = norm("[1,2,3]");
        assert_eq!(n.envelope.event_type, "ledig.unknown");
        assert_eq!(n.envelope.data.get(), "[1,2,3]");
    }
}
