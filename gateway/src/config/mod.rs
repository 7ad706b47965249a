//! The gateway's configuration: read one TOML file, validate it in one pass, and yield an
//! immutable runtime value ([`GatewayConfig`]).
//!
//! Owns parsing (`raw`), secret references (`secret`), positioned errors (`error`) and the
//! compile pass (`compile`) that turns raw tables into typed settings and collects every problem
//! at once. It never opens sockets or the store: later stages receive the finished value.

mod compile;
mod error;
mod raw;
mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigIssue};
pub use secret::{Secret, SecretError, SecretRef};

/// A validated configuration, with secrets resolved.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file it was read from, for messages.
    pub file: PathBuf,
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub sources: Vec<SourceSettings>,
    /// Where compiled plugin code is cached, keyed by the component's hash.
    pub wasm_cache_dir: PathBuf,
    pub plugins: Vec<PluginSettings>,
}

/// Largest linear memory a plugin may be given (the instance pool reserves this per slot).
pub const MAX_PLUGIN_MEMORY: u64 = 1024 * 1024 * 1024;
/// Largest table a plugin may be given.
pub const MAX_TABLE_ELEMENTS: u64 = 500_000;

/// How a plugin's instances live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// A new instance per event: no state can leak between events.
    Fresh,
    /// Instances reused across events, recycled after a trap or `max_events_per_instance`.
    Warm { max_events_per_instance: u64 },
}

/// The hard limits one plugin call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Instructions budget per call (wasmtime fuel); `None` means only the deadline applies.
    pub fuel: Option<u64>,
    /// Wall-clock deadline per call.
    pub timeout: Duration,
    /// Largest linear memory, in bytes.
    pub memory: u64,
    /// Largest table, in elements.
    pub table_elements: u64,
}

/// One `[plugins.NAME]`.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub name: String,
    pub wasm: PathBuf,
    pub mode: InstanceMode,
    pub limits: PluginLimits,
    /// `[plugins.NAME.settings]`, readable by the plugin through `host.setting`.
    pub settings: std::collections::BTreeMap<String, String>,
    /// Environment variables granted to the plugin (name, value); none by default.
    pub env: Vec<(String, String)>,
    /// Where `wasm` is written in the config, for positioned load errors.
    pub at: ConfigIssue,
}

impl PluginSettings {
    /// A positioned issue about this plugin's `wasm` key.
    pub fn issue(&self, message: impl Into<String>) -> ConfigIssue {
        ConfigIssue {
            message: message.into(),
            ..self.at.clone()
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body: u64,
    /// A client must send all request headers within this.
    pub header_timeout: Duration,
    /// A client must send the whole body within this, counted from the end of the headers.
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub path: PathBuf,
    /// Dedup keys older than this are pruned; a retry after it counts as a new event.
    pub dedup_window: Duration,
}

/// One `[sources.NAME]`: where it listens and how its deliveries are authenticated.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The configured name; also the envelope's `source` and a metric label.
    pub name: String,
    /// The request path, e.g. `/webhooks/ledger`.
    pub path: String,
    pub provider: ProviderSettings,
}

#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Ledger(LedgerSettings),
    Ledig(LedigSettings),
}

/// Which Ledger signature headers a source accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// `X-Ledger-Signature: t=..,v1=..`
    Ledger,
    /// `webhook-*` / `svix-*` headers.
    StandardWebhooks,
    /// Either of the two.
    Any,
}

#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// Every secret that may have signed a delivery (current first, then rotated-out ones).
    pub secrets: Vec<Secret>,
    pub scheme: SignatureScheme,
    /// Largest accepted distance between the signed timestamp and now.
    pub tolerance: Duration,
}

/// Where a Ledig source expects its shared token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// In this request header.
    Header(http::HeaderName),
    /// As the last path segment: `<path>/<token>`.
    Path,
}

#[derive(Debug, Clone)]
pub struct LedigSettings {
    pub token: Option<(Secret, TokenLocation)>,
    /// (username, password)
    pub basic_auth: Option<(Secret, Secret)>,
    /// Empty means any address.
    pub allow_ips: Vec<ipnet::IpNet>,
}

/// Something valid but worth telling the operator (printed by `gateway check` and at start).
pub type ConfigWarning = ConfigIssue;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<(GatewayConfig, Vec<ConfigWarning>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        issues: vec![ConfigIssue {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }],
    })?;
    compile::compile(path, &text)
}
