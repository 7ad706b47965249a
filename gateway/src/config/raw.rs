//! The config file as written: serde structs that mirror the TOML one to one.
//!
//! Every table denies unknown keys, and values that can be checked on their own (durations,
//! sizes) are newtypes that validate while deserializing, so the TOML parser reports them with
//! their position. Cross-field rules live in `compile`, never here.
//!
//! Keys that hold a secret are [`SecretValue`]s: they take any TOML value, so that a secret
//! written with the wrong type never reaches the parser's own error text, which quotes values.

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

/// What is written at a key that holds a secret (or, for `secrets` and `basic_auth`, a list or
/// table of them): `T` when the value has the expected shape, else only what kind of value it
/// was. A value of the wrong type is read and dropped, never kept, so no error can quote it;
/// `compile` reports the kind with the key's position.
pub(super) enum SecretValue<T> {
    Written(T),
    /// `a string`, `an integer`, `a table`, ...: never the value itself.
    WrongType(&'static str),
}

impl<T> std::fmt::Debug for SecretValue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Written(_) => f.write_str("Written(<not shown>)"),
            Self::WrongType(kind) => write!(f, "WrongType({kind})"),
        }
    }
}

/// The TOML shape a [`SecretValue`] expects; every method has the shape refuse by default,
/// reading the value to its end so the parser goes on after it.
pub(super) trait SecretShape<'de>: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }

    fn from_seq<A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    /// `Err(kind)` when refused: a TOML date-time also arrives as a map, under a private key.
    fn from_map<A: serde::de::MapAccess<'de>>(
        mut map: A,
    ) -> Result<Result<Self, &'static str>, A::Error> {
        let first = map.next_key::<String>()?;
        map.next_value::<serde::de::IgnoredAny>()?;
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Err(match first.as_deref() {
            Some(k) if k.contains("toml") && k.contains("datetime") => "a date-time",
            _ => "a table",
        }))
    }
}

/// One secret reference: a string.
impl SecretShape<'_> for String {
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

/// `secrets = [...]`: each entry a secret reference.
pub(super) type SecretList = Vec<Spanned<SecretValue<String>>>;

/// `secrets = [...]`: a list of secret references.
impl<'de> SecretShape<'de> for SecretList {
    fn from_seq<A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// `basic_auth = { ... }`: a table whose password is a secret reference.
impl<'de> SecretShape<'de> for RawBasicAuth {
    fn from_map<A: serde::de::MapAccess<'de>>(
        map: A,
    ) -> Result<Result<Self, &'static str>, A::Error> {
        Self::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Ok)
    }
}

impl<'de, T: SecretShape<'de>> Deserialize<'de> for SecretValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: SecretShape<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = SecretValue<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any TOML value")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(T::from_str(v).map_or(SecretValue::WrongType("a string"), SecretValue::Written))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(SecretValue::WrongType("a boolean"))
            }

            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(SecretValue::WrongType("an integer"))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(SecretValue::WrongType("an integer"))
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(SecretValue::WrongType("a float"))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Ok(T::from_seq(seq)?
                    .map_or(SecretValue::WrongType("an array"), SecretValue::Written))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                Ok(match T::from_map(map)? {
                    Ok(v) => SecretValue::Written(v),
                    Err(kind) => SecretValue::WrongType(kind),
                })
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
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
    pub(super) runtime_threads: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    // PostgreSQL: `url` (a secret reference to the connection string) and its own keys.
    pub(super) url: Option<Spanned<SecretValue<String>>>,
    pub(super) pool_size: Option<Spanned<u64>>,
    pub(super) ack_writers: Option<Spanned<u64>>,
    pub(super) ack_spacing: Option<Spanned<HumanDuration>>,
    pub(super) connect_timeout: Option<Spanned<HumanDuration>>,
    pub(super) statement_timeout: Option<Spanned<HumanDuration>>,
    pub(super) lease: Option<Spanned<HumanDuration>>,
    pub(super) dedup_window: Option<Spanned<HumanDuration>>,
    pub(super) retention: Option<Spanned<HumanDuration>>,
    pub(super) quarantine_retention: Option<Spanned<HumanDuration>>,
}

/// One `[sources.NAME]` table. Which keys apply depends on `provider`; `compile` rejects keys
/// that do not apply, with their position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) provider: Spanned<String>,
    pub(super) path: Option<Spanned<String>>,
    // Ledger
    pub(super) secrets: Option<Spanned<SecretValue<SecretList>>>,
    pub(super) signature: Option<Spanned<String>>,
    pub(super) tolerance: Option<Spanned<HumanDuration>>,
    // Ledig
    pub(super) token: Option<Spanned<SecretValue<String>>>,
    pub(super) token_header: Option<Spanned<String>>,
    pub(super) token_in_path: Option<Spanned<bool>>,
    pub(super) basic_auth: Option<Spanned<SecretValue<RawBasicAuth>>>,
    pub(super) allow_ips: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) unprotected: Option<Spanned<bool>>,
    pub(super) retry_window: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBasicAuth {
    pub(super) username: Spanned<String>,
    pub(super) password: Spanned<SecretValue<String>>,
}

/// `[admin]`: the admin API. Every key is optional here so that `compile` can report a missing
/// one together with every other problem.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) token: Option<Spanned<SecretValue<String>>>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) session_ttl: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(super) tokens: Vec<Spanned<RawAdminToken>>,
}

/// One `[[admin.tokens]]` entry: a named token with a role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdminToken {
    pub(super) name: Option<Spanned<String>>,
    pub(super) role: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<SecretValue<String>>>,
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
    pub(super) secret: Option<Spanned<SecretValue<String>>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) allow_private_network: Option<Spanned<bool>>,
    // every kind
    pub(super) max_attempts: Option<Spanned<u64>>,
    pub(super) backoff_initial: Option<Spanned<HumanDuration>>,
    pub(super) backoff_max: Option<Spanned<HumanDuration>>,
    pub(super) concurrency: Option<Spanned<u64>>,
    // ordered delivery per subject (config/compile/ordering.rs)
    pub(super) ordering: Option<Spanned<String>>,
    pub(super) reorder_window: Option<Spanned<HumanDuration>>,
    pub(super) stale: Option<Spanned<String>>,
    pub(super) on_dead: Option<Spanned<String>>,
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
