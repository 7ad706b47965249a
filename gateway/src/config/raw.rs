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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    pub(super) dedup_window: Option<Spanned<HumanDuration>>,
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
