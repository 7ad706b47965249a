//! Ledig: endpoint protection (token, basic auth, IP allow-list) and a tolerant parser.
//!
//! Ledig signs nothing and its docs leave the payload shape open, so the parser accepts the
//! nested `{"event": .., "data": {..}}` shape, `payload` instead of `data`, a flat object, and
//! any spelling of a key (case, spaces, `_`, `-` ignored). Unknown fields stay in `data` and are
//! reported, never rejected. Secrets are compared as SHA-256 digests in constant time, so neither
//! their content nor their length leaks through timing.

use super::{AuthError, Delivery, NormalizeError, Normalized, OTHER_TYPE, RequestHead};
use crate::Secret;
use crate::envelope::{DedupKey, Envelope, ObjectState, RetryIdentity, SPEC_VERSION};
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
    /// Not a protection: how long a repeated state counts as a retry (see `normalize`).
    retry_window: std::time::Duration,
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
            retry_window: settings.retry_window,
        }
    }

    pub(super) fn retry_window(&self) -> std::time::Duration {
        self.retry_window
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
                // The scheme name is case-insensitive (RFC 9110, 11.1).
                .and_then(|v| v.split_once(' '))
                .and_then(|(scheme, b64)| scheme.eq_ignore_ascii_case("Basic").then_some(b64))
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

/// SHA-256 of the canonical form: keys sorted, no white space, numbers as written. A retry
/// that a provider re-serializes (other key order or spacing) hashes the same.
fn canonical_hash(body: &RawValue) -> [u8; 32] {
    let canonical = serde_json::from_str::<serde_json::Value>(body.get())
        .map(|v| v.to_string())
        .unwrap_or_else(|_| body.get().to_owned());
    Sha256::digest(canonical.as_bytes()).into()
}

/// Payload fields that name the object an event is about when it has no `id` (normalized
/// names, in order of preference).
const ALIAS_FIELDS: &[&str] = &[
    "alias",
    "walletalias",
    "accountreceivedalias",
    "walletreceivedalias",
];

/// What the tolerant parser found in one body, before it becomes an envelope.
struct Parsed {
    name: String,
    known_fields: Option<&'static [&'static str]>,
    data: Box<RawValue>,
    /// Where `data` starts in the parsed text, when it is a verbatim part of it.
    data_at: Option<usize>,
    /// The object the event is about: (normalized field name, value), `id` first, else an
    /// alias; `None` when the payload names none.
    object: Option<(&'static str, String)>,
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
            object: None,
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
    let object = match field(&["id"]) {
        Some(id) => Some(("id", id)),
        None => ALIAS_FIELDS
            .iter()
            .find_map(|name| field(&[name]).map(|v| (*name, v))),
    };
    let subject = object.as_ref().map(|(_, v)| v.clone());
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
        object,
        subject,
        time,
        unknown_fields,
    }
}

/// Normalizes a Ledig body. Ledig signs nothing and sends no event id (its `id` is the
/// payout's or deposit's), so a retry is told from a new event by the object the event is
/// about and the state it reports (see [`ObjectState`]): the object is the event name plus
/// the payload's `id` (else its alias; else the content itself), the state the canonical
/// body. The key names this stored event: object, state and arrival time.
pub(super) fn normalize(
    source: &str,
    body: &[u8],
    received: &super::Received,
    retry_window: std::time::Duration,
) -> Result<Normalized, NormalizeError> {
    let whole = super::check_json(body)?;
    let p = parse(whole);
    let state = canonical_hash(whole);
    let object = match &p.object {
        Some((field, value)) => {
            ObjectState::object_hash(&[p.name.as_bytes(), field.as_bytes(), value.as_bytes()])
        }
        None => ObjectState::object_hash(&[b"content", &state]),
    };
    let object_state = ObjectState {
        object,
        state,
        retry_window,
    };
    let dedup_key = DedupKey::from_object_state(&object_state, received.ms);
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
            receivedat: received.text.clone(),
        },
        dedup_key,
        catalogue_type,
        unknown_fields: p.unknown_fields,
        data_in_body: p
            .data_at
            .and_then(|at| super::offset_in(body, whole.get())?.checked_add(at)),
        retry_identity: RetryIdentity::ObjectState(object_state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z
    const RECEIVED_MS: i64 = 1_704_067_200_000;
    const WINDOW: std::time::Duration = crate::settings::DEFAULT_RETRY_WINDOW;

    fn norm_at(body: &str, received_ms: i64) -> Normalized {
        let received = super::super::Received::at(received_ms);
        normalize("ledig", body.as_bytes(), &received, WINDOW).expect("normalizes")
    }

    fn norm(body: &str) -> Normalized {
        norm_at(body, RECEIVED_MS)
    }

    fn state(n: &Normalized) -> ObjectState {
        match n.retry_identity {
            RetryIdentity::ObjectState(s) => s,
            RetryIdentity::Key => panic!("a Ledig event is told apart by its object state"),
        }
    }

    #[test]
    fn nested_shape_keeps_data_verbatim() {
        let n = norm(
            r#"{"event":"crypto_received","data":{"id":"dep_1","Amount":"10.5","status":"completed","wallet_alias":"w1"}}"#,
        );
        assert_eq!(n.envelope.event_type, "ledig.crypto_received");
        assert_eq!(n.catalogue_type, "ledig.crypto_received");
        assert!(
            n.dedup_key.as_str().starts_with("ledig:"),
            "{}",
            n.dedup_key
        );
        assert!(n.dedup_key.as_str().ends_with(":1704067200000"));
        assert_eq!(n.envelope.id, n.dedup_key.as_str());
        assert_eq!(n.envelope.receivedat, "2024-01-01T00:00:00Z");
        assert_eq!(n.envelope.subject.as_deref(), Some("dep_1"));
        let object = ObjectState::object_hash(&[b"crypto_received", b"id", b"dep_1"]);
        assert_eq!(state(&n).object, object);
        assert_eq!(state(&n).retry_window, WINDOW);
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
        let object = ObjectState::object_hash(&[b"crypto_payout_update", b"id", b"7"]);
        assert_eq!(state(&n).object, object);
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
        assert_eq!(state(&a).object, state(&b).object, "the same payout");
        assert_ne!(state(&a).state, state(&b).state, "in another state");
    }

    /// A state that comes back (A -> B -> A) carries the same object and state as the first
    /// time: the store tells it from a retry by what it stored last. Its key names the later
    /// arrival, so the two stored events keep distinct ids.
    #[test]
    fn a_state_that_comes_back_has_the_first_ones_identity_and_its_own_key() {
        let active =
            r#"{"event":"settlement_account_update","data":{"Alias":"acc_1","status":"active"}}"#;
        let first = norm_at(active, RECEIVED_MS);
        let again = norm_at(active, RECEIVED_MS + 60_000);
        assert_eq!(first.retry_identity, again.retry_identity);
        assert_ne!(first.dedup_key, again.dedup_key);
        assert_eq!(
            state(&first).object,
            ObjectState::object_hash(&[b"settlement_account_update", b"alias", b"acc_1"])
        );
    }

    /// The review's pre-claims: a token holder picks field values so that another event gets
    /// its identity. Parts are length-prefixed into the object's hash, never joined with a
    /// separator, and every key has the `ledig:` form, so neither works.
    #[test]
    fn no_choice_of_field_values_takes_another_events_identity() {
        let genuine =
            norm(r#"{"event":"crypto_received","data":{"id":"dep_77","status":"completed"}}"#);
        let shifted = [
            r#"{"event":"crypto_received","data":{"id":"dep_77:completed"}}"#,
            r#"{"event":"crypto_received","data":{"id":"dep_77:completed","status":""}}"#,
            r#"{"event":"crypto_received:dep_77","data":{"id":"completed"}}"#,
            r#"{"event":"crypto_receiveddep_77","data":{"id":"completed"}}"#,
        ];
        for body in shifted {
            let n = norm(body);
            assert_ne!(state(&n).object, state(&genuine).object, "{body}");
            assert_ne!(n.dedup_key, genuine.dedup_key, "{body}");
        }
        // An event named `sha256`, or an id shaped like a content hash: still a `ledig:` key.
        let n = norm(r#"{"event":"sha256","data":{"id":"0123abcd"}}"#);
        assert!(
            n.dedup_key.as_str().starts_with("ledig:"),
            "{}",
            n.dedup_key
        );
        // Without any object, the content is the object: two bodies differing in one field
        // are two objects; the same body re-serialized is one.
        let a = norm(r#"{"event":"brand_new","x":1}"#);
        let b = norm(r#"{"event":"brand_new","x":2}"#);
        let a2 = norm(r#"{ "x" : 1, "event" : "brand_new" }"#);
        assert_ne!(state(&a).object, state(&b).object);
        assert_eq!(a.retry_identity, a2.retry_identity);
    }

    #[test]
    fn events_without_id_hash_the_canonical_payload() {
        let a =
            norm(r#"{"event":"settlement_wallet_update","data":{"Alias":"w","status":"active"}}"#);
        let b = norm(
            r#"{ "data" : { "status":"active", "Alias":"w" }, "event":"settlement_wallet_update" }"#,
        );
        assert_eq!(a.retry_identity, b.retry_identity);
        assert_eq!(a.dedup_key, b.dedup_key, "same arrival, same key");
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
