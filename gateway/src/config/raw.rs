//! The config file as written: serde structs that mirror the TOML one to one.
//!
//! Every table denies unknown keys, and values that can be checked on their own (durations,
//! sizes) are newtypes that validate while deserializing, so the TOML parser reports them with
//! their position. Cross-field rules live in `compile`, never here.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

/// A duration written like `5m`, `100ms`, `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HumanDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration `{text}`: {e}")))
    }
}

/// A size written like `1MiB`, `64KiB`, `512B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ByteSize(pub(super) u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<bytesize::ByteSize>()
            .map(|b| Self(b.as_u64()))
            .map_err(|e| serde::de::Error::custom(format!("invalid size `{text}`: {e}")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) sources: BTreeMap<String, Spanned<RawSource>>,
    #[serde(default)]
    pub(super) wasm: RawWasm,
    #[serde(default)]
    pub(super) plugins: BTreeMap<String, Spanned<RawPlugin>>,
    pub(super) admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    pub(super) workers: RawWorkers,
    #[serde(default)]
    pub(super) destinations: BTreeMap<String, Spanned<RawDestination>>,
    #[serde(default)]
    pub(super) routes: Vec<Spanned<RawRoute>>,
}

/// `[wasm]`: settings shared by every plugin.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWasm {
    pub(super) cache_dir: Option<Spanned<String>>,
}

/// One `[plugins.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    pub(super) wasm: Spanned<String>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) fuel: Option<Spanned<u64>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) memory: Option<Spanned<ByteSize>>,
    pub(super) table_elements: Option<Spanned<u64>>,
    pub(super) max_events_per_instance: Option<Spanned<u64>>,
    pub(super) unhealthy_after: Option<Spanned<u64>>,
    pub(super) unhealthy_cooldown: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(super) settings: BTreeMap<String, Spanned<String>>,
    pub(super) env: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) max_body: Option<Spanned<ByteSize>>,
    pub(super) header_timeout: Option<Spanned<HumanDuration>>,
    pub(super) request_timeout: Option<Spanned<HumanDuration>>,
    pub(super) write_timeout: Option<Spanned<HumanDuration>>,
    pub(super) trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) forwarded_header: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<u64>>,
    pub(super) max_body_buffer: Option<Spanned<ByteSize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    pub(super) dedup_window: Option<Spanned<HumanDuration>>,
    pub(super) retention: Option<Spanned<HumanDuration>>,
}

/// One `[sources.NAME]` table. Which keys apply depends on `provider`; `compile` rejects keys
/// that do not apply, with their position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) provider: Spanned<String>,
    pub(super) path: Option<Spanned<String>>,
    // Ledger
    pub(super) secrets: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) signature: Option<Spanned<String>>,
    pub(super) tolerance: Option<Spanned<HumanDuration>>,
    // Ledig
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_header: Option<Spanned<String>>,
    pub(super) token_in_path: Option<Spanned<bool>>,
    pub(super) basic_auth: Option<Spanned<RawBasicAuth>>,
    pub(super) allow_ips: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) unprotected: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBasicAuth {
    pub(super) username: Spanned<String>,
    pub(super) password: Spanned<String>,
}

/// `[admin]`: the admin API. Every key is optional here so that `compile` can report a missing
/// one together with every other problem.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) token: Option<Spanned<String>>,
}

/// `[workers]`: how routing and delivery run after the ack.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkers {
    pub(super) concurrency: Option<Spanned<u64>>,
    pub(super) plugin_threads: Option<Spanned<u64>>,
}

/// One `[destinations.NAME]` table: exactly one of `http` and `file`, which decides the keys
/// that apply; `compile` rejects the others with their position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    pub(super) http: Option<Spanned<String>>,
    pub(super) file: Option<Spanned<String>>,
    // http only
    pub(super) secret: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) allow_private_network: Option<Spanned<bool>>,
    // every kind
    pub(super) max_attempts: Option<Spanned<u64>>,
    pub(super) backoff_initial: Option<Spanned<HumanDuration>>,
    pub(super) backoff_max: Option<Spanned<HumanDuration>>,
    pub(super) concurrency: Option<Spanned<u64>>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub(super) matches: Option<Spanned<RawMatch>>,
    pub(super) plugins: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) plugin_max_attempts: Option<Spanned<u64>>,
    pub(super) plugin_backoff_initial: Option<Spanned<HumanDuration>>,
    pub(super) plugin_backoff_max: Option<Spanned<HumanDuration>>,
    // Optional here only so that a missing `to` is reported with the route's other problems.
    pub(super) to: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A route's `match = { source = [...], type = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub(super) source: Option<Spanned<Patterns>>,
    #[serde(rename = "type")]
    pub(super) types: Option<Spanned<Patterns>>,
}

/// Glob patterns written as a list, or as one plain string for the common single case.
#[derive(Debug)]
pub(super) enum Patterns {
    /// A plain string; its position is the enclosing `Spanned`'s.
    One(String),
    Many(Vec<Spanned<String>>),
}

// Hand-written rather than `#[serde(untagged)]`: untagged enums buffer the value, which loses
// the positions `Spanned` needs.
impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Patterns;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Patterns, E> {
                Ok(Patterns::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Patterns, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(Patterns::Many(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}
