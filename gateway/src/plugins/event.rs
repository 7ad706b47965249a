//! The event as plugins see it, and the checked conversions across the WIT boundary.
//!
//! Going in, the envelope becomes a WIT `event` (non-core attributes as extensions). Coming
//! out, everything a plugin returns is validated: `data` must be JSON, extension names must be
//! CloudEvents-style (lowercase letters and digits) and not shadow a core attribute. A plugin
//! that breaks these rules fails its stage with a reason; it never corrupts an event.

use super::bindings;
use crate::envelope::Envelope;
use serde_json::value::RawValue;

/// Core attributes a plugin may not set as extensions.
const RESERVED: &[&str] = &[
    "id",
    "source",
    "type",
    "specversion",
    "data",
    "datacontenttype",
    "subject",
    "time",
    "provider",
];
/// Most extensions one event may carry.
const MAX_EXTENSIONS: usize = 64;
/// Longest extension value.
const MAX_EXTENSION_VALUE: usize = 4096;

/// One event on its way through a plugin chain.
#[derive(Debug, Clone)]
pub struct PluginEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub provider: String,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub data: Box<RawValue>,
    /// CloudEvents extension attributes besides `provider` (e.g. providertype, receivedat).
    pub extensions: Vec<(String, String)>,
}

impl From<&Envelope> for PluginEvent {
    fn from(e: &Envelope) -> Self {
        Self {
            id: e.id.clone(),
            source: e.source.clone(),
            event_type: e.event_type.clone(),
            provider: e.provider.clone(),
            subject: e.subject.clone(),
            time: e.time.clone(),
            data: e.data.clone(),
            extensions: vec![
                ("providertype".to_owned(), e.providertype.clone()),
                ("receivedat".to_owned(), e.receivedat.clone()),
            ],
        }
    }
}

impl PluginEvent {
    pub(super) fn to_wit(&self) -> bindings::Event {
        bindings::Event {
            id: self.id.clone(),
            source: self.source.clone(),
            type_: self.event_type.clone(),
            provider: self.provider.clone(),
            subject: self.subject.clone(),
            time: self.time.clone(),
            data: self.data.get().to_owned(),
            extensions: self.extensions.clone(),
        }
    }

    /// Checks and converts what a plugin returned.
    pub(super) fn from_wit(e: bindings::Event) -> Result<Self, String> {
        let data = RawValue::from_string(e.data)
            .map_err(|err| format!("event `{}`: `data` is not valid JSON: {err}", e.id))?;
        if e.id.is_empty() {
            return Err("returned an event with an empty id".into());
        }
        if e.type_.is_empty() {
            return Err(format!("event `{}`: empty type", e.id));
        }
        if e.extensions.len() > MAX_EXTENSIONS {
            return Err(format!(
                "event `{}`: more than {MAX_EXTENSIONS} extensions",
                e.id
            ));
        }
        for (name, value) in &e.extensions {
            let valid = !name.is_empty()
                && name.len() <= 20
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !valid || RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "event `{}`: invalid extension name {name:?} (lowercase letters and digits, at most 20, not a core attribute)",
                    e.id
                ));
            }
            if value.len() > MAX_EXTENSION_VALUE {
                return Err(format!("event `{}`: extension `{name}` is too long", e.id));
            }
        }
        Ok(Self {
            id: e.id,
            source: e.source,
            event_type: e.type_,
            provider: e.provider,
            subject: e.subject,
            time: e.time,
            data,
            extensions: e.extensions,
        })
    }

    /// Reads a stored envelope (CloudEvents structured JSON as written at ingest).
    pub fn from_envelope_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<Envelope>(json).map(|e| Self::from(&e))
    }

    /// Whether `other` is this event unchanged (a plugin passed it on as it came).
    pub fn same_as(&self, other: &Self) -> bool {
        self.id == other.id
            && self.source == other.source
            && self.event_type == other.event_type
            && self.provider == other.provider
            && self.subject == other.subject
            && self.time == other.time
            && self.data.get() == other.data.get()
            && self.extensions == other.extensions
    }

    /// The event as CloudEvents structured JSON for delivery: attributes in the envelope's
    /// order, then extensions, and `data` byte for byte as the provider or plugin wrote it.
    pub fn to_envelope_json(&self) -> String {
        // Strings and an already-valid RawValue always serialize.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// CloudEvents structured JSON, as delivered ([`PluginEvent::to_envelope_json`]) and as
/// `gateway plugin run` prints it: `data` is the JSON text exactly as the provider or plugin
/// wrote it (key order, number spelling, white space), never re-encoded.
impl serde::Serialize for PluginEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            specversion: &'static str,
            id: &'a str,
            source: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            time: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            subject: Option<&'a str>,
            datacontenttype: &'static str,
            data: &'a RawValue,
            provider: &'a str,
            #[serde(flatten)]
            extensions: Extensions<'a>,
        }
        struct Extensions<'a>(&'a [(String, String)]);
        impl serde::Serialize for Extensions<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
            }
        }
        Out {
            specversion: "1.0",
            id: &self.id,
            source: &self.source,
            event_type: &self.event_type,
            time: self.time.as_deref(),
            subject: self.subject.as_deref(),
            datacontenttype: "application/json",
            data: &self.data,
            provider: &self.provider,
            extensions: Extensions(&self.extensions),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit(data: &str, ext: &[(&str, &str)]) -> bindings::Event {
        bindings::Event {
            id: "e1".into(),
            source: "ledger".into(),
            type_: "payment.received".into(),
            provider: "ledger".into(),
            subject: None,
            time: None,
            data: data.into(),
            extensions: ext
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn a_stored_envelope_round_trips_byte_for_byte() {
        let stored = r#"{"specversion":"1.0","id":"evt_1","source":"ledger","type":"ledger.transaction.completed","time":"2024-03-09T16:00:00Z","subject":"txn_1","datacontenttype":"application/json","data":{"z":1,"a":"10.50"},"provider":"ledger","providertype":"transaction.completed","receivedat":"2024-03-09T16:00:01Z"}"#;
        let event = PluginEvent::from_envelope_json(stored).expect("parses");
        assert_eq!(event.to_envelope_json(), stored);
        assert!(event.same_as(&event.clone()));
    }

    #[test]
    fn plugin_output_is_validated() {
        assert!(PluginEvent::from_wit(wit(r#"{"a":1}"#, &[("flag", "1")])).is_ok());
        let err = PluginEvent::from_wit(wit("not json{", &[])).err();
        assert!(err.is_some_and(|e| e.contains("not valid JSON")));
        assert!(PluginEvent::from_wit(wit("{}", &[("Bad-Name", "x")])).is_err());
        assert!(PluginEvent::from_wit(wit("{}", &[("id", "x")])).is_err());
    }
}
