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
pub use gateway_providers::settings::{
    LedgerSettings, LedigSettings, ProviderSettings, SignatureScheme, SourceSettings, TokenLocation,
};
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
    /// `[admin]`; `None` means the admin API answers 404 (not enabled).
    pub admin: Option<AdminSettings>,
    /// `[workers]`: how routing and delivery run.
    pub workers: WorkerSettings,
    /// `[destinations.NAME]`, sorted by name.
    pub destinations: Vec<DestinationSettings>,
    /// `[[routes]]`, in file order (every matching route processes an event).
    pub routes: Vec<RouteSettings>,
}

/// `[admin]`: the admin API under `/admin/` and the console under `/console/`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `listen`: the admin API and the console get a listener of their own, and the webhook
    /// listener serves neither. `None`: both are served on the webhook listener.
    pub listen: Option<SocketAddr>,
    /// Every token that may sign in or send `Authorization: Bearer <token>`, with its name
    /// and role; the legacy single `token` is an operator named `admin`. Never empty.
    pub tokens: Vec<AdminToken>,
    /// How long a console session lasts after its sign-in.
    pub session_ttl: Duration,
}

/// One admin token: who holds it (the name audit records show) and what it may do.
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub role: AdminRole,
    pub token: Secret,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminRole {
    /// Reads only.
    Viewer,
    /// Reads, and replays and redrives.
    Operator,
}

impl AdminRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            _ => None,
        }
    }
}

/// `[workers]`: the stage after the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Events processed at the same time (plugin chains plus first delivery attempts).
    pub concurrency: usize,
    /// Plugin calls running at the same time (each holds a thread while it runs).
    pub plugin_threads: usize,
}

/// One `[destinations.NAME]`.
#[derive(Debug, Clone)]
pub struct DestinationSettings {
    /// The configured name; a metric label and the key deliveries are stored under.
    pub name: String,
    pub kind: DestinationKind,
    /// Attempts before a delivery becomes a dead letter (the first attempt counts).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Attempts in flight to this destination at the same time.
    pub concurrency: usize,
    /// `ordering = "subject"`: events about one subject are delivered one at a time, in the
    /// provider's order. `None`: `ordering = "none"` (the default), every delivery on its own.
    pub ordering: Option<SubjectOrdering>,
}

/// How a destination with `ordering = "subject"` orders the deliveries of one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectOrdering {
    /// `reorder_window`: how long a new delivery waits before its first attempt, so an older
    /// event of its subject that arrives meanwhile goes first.
    pub reorder_window: Duration,
    /// `stale`: what happens to an event older than one of its subject already delivered.
    pub stale: StaleEvents,
    /// `on_dead`: whether a dead letter keeps its subject blocked.
    pub on_dead: OnDead,
}

/// `stale = "deliver" | "drop"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleEvents {
    /// Delivered anyway (late), after the newer ones.
    Deliver,
    /// Not delivered; recorded as dropped with the reason.
    Drop,
}

/// `on_dead = "hold" | "skip"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDead {
    /// The subject stays blocked until an operator redrives or skips the dead letter.
    Hold,
    /// The next event of the subject goes on.
    Skip,
}

#[derive(Debug, Clone)]
pub enum DestinationKind {
    Http(HttpDestinationSettings),
    File(FileDestinationSettings),
}

/// `http = "..."`: POST of the envelope as CloudEvents structured JSON, signed with
/// Standard Webhooks headers.
#[derive(Debug, Clone)]
pub struct HttpDestinationSettings {
    /// `http://` or `https://` URL.
    pub url: http::Uri,
    /// The HMAC key: the base64-decoded part of a `whsec_...` secret.
    pub signing_key: Secret,
    /// Per attempt, from connect to the end of the response head.
    pub timeout: Duration,
    /// `allow_private_network = true`: the destination may resolve to loopback, private,
    /// link-local or metadata addresses (refused by default; see `delivery::address_policy`).
    pub allow_private_network: bool,
}

/// `file = "..."`: one JSON line per event, appended.
#[derive(Debug, Clone)]
pub struct FileDestinationSettings {
    pub path: PathBuf,
}

/// Exponential backoff with jitter: the wait before attempt n+1 is a random duration between
/// half and all of `min(max, initial * 2^(n-1))` (so it never collapses to ~0), and at least
/// what a `Retry-After` answer asked for (capped at `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// `name`, or `route-<n>` (1-based position) when not given.
    pub name: String,
    /// `match.source` globs; empty matches every source.
    pub sources: Vec<Glob>,
    /// `match.type` globs; empty matches every type.
    pub types: Vec<Glob>,
    /// Plugin names, run in order.
    pub plugins: Vec<String>,
    /// Destination names; each gets one delivery per event that leaves the chain.
    pub to: Vec<String>,
    /// How often, and how far apart, the plugin stage is run again when a plugin answers
    /// `retry`, before the route run is a dead letter.
    pub plugin_retry: PluginRetry,
}

/// A route's plugin-stage retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginRetry {
    /// Attempts, the first run included.
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl RouteSettings {
    /// Whether this route takes an event of `source` and `event_type`.
    pub fn matches(&self, source: &str, event_type: &str) -> bool {
        let any = |globs: &[Glob], value: &str| {
            globs.is_empty() || globs.iter().any(|g| g.is_match(value))
        };
        any(&self.sources, source) && any(&self.types, event_type)
    }
}

/// A glob pattern (`*` any run of characters, `?` one character, `[abc]` a class), as written
/// plus its compiled matcher.
#[derive(Debug, Clone)]
pub struct Glob {
    pub pattern: String,
    matcher: globset::GlobMatcher,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, globset::Error> {
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .backslash_escape(true)
            .build()?
            .compile_matcher();
        Ok(Self {
            pattern: pattern.to_owned(),
            matcher,
        })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.matcher.is_match(value)
    }
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

/// When a plugin that keeps trapping or timing out is marked unhealthy and left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive traps/timeouts that mark the plugin unhealthy; 0 never marks it.
    pub unhealthy_after: u32,
    /// How long an unhealthy plugin is not called before one probe call.
    pub cooldown: Duration,
}

impl HealthPolicy {
    /// Every call runs, whatever came before (`gateway plugin run`, tests).
    pub const NEVER_UNHEALTHY: Self = Self {
        unhealthy_after: 0,
        cooldown: Duration::from_secs(30),
    };
}

/// One `[plugins.NAME]`.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub name: String,
    pub wasm: PathBuf,
    pub mode: InstanceMode,
    pub limits: PluginLimits,
    pub health: HealthPolicy,
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
    /// A connection whose answer the client does not take (its socket stays full) for this
    /// long is closed.
    pub write_timeout: Duration,
    /// Reverse proxies whose forwarding header names the client (for `allow_ips` and logs).
    pub trusted_proxies: TrustedProxies,
    /// Most client connections open at once; at the cap the listener waits for one to close.
    pub max_connections: usize,
    /// Most bytes of request bodies held in memory at once, across all requests; a request
    /// that would pass it is answered 503. At least `max_body`.
    pub max_body_buffer: u64,
    /// Threads of the async runtime (requests, routing and delivery, and on PostgreSQL the
    /// store's writes; plugins and the SQLite writer run on threads of their own). `None`: tokio's default, `TOKIO_WORKER_THREADS` or else the CPUs
    /// this process may use (a cgroup CPU limit counts). Set once at start.
    pub runtime_threads: Option<usize>,
}

/// Who may say who the client is, and in which header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Empty: the TCP peer is the client and forwarding headers are ignored.
    pub networks: Vec<ipnet::IpNet>,
    pub header: ForwardedHeader,
}

/// The header the trusted proxies write the client's address into. Only the one they manage
/// may be read: a proxy passes any other header through as the client wrote it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (the de facto standard).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name as it appears in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "X-Forwarded-For",
            Self::Forwarded => "Forwarded",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Where events live: the SQLite file (`store.path`) or a PostgreSQL database (`store.url`).
    pub backend: StoreBackend,
    /// Dedup keys older than this are pruned; a retry after it counts as a new event.
    pub dedup_window: Duration,
    /// Finished events (every delivery made, nothing dead or waiting) older than this are
    /// deleted with their routing records; `None` keeps everything.
    pub retention: Option<Duration>,
    /// Quarantined bodies not seen for this long are deleted.
    pub quarantine_retention: Duration,
}

/// `[store]`'s backend: exactly one of `path` and `url`.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// `path`: one SQLite file, one gateway process (the default).
    Sqlite { path: PathBuf },
    /// `url`: a PostgreSQL database several gateway replicas share.
    Postgres(PostgresSettings),
}

/// `store.url` and the keys only PostgreSQL has.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The connection string (URL or `key=value` form; several hosts allowed), resolved from
    /// its secret reference: it may hold a password, so it never prints. The compile pass
    /// checked that it is UTF-8 and parses.
    pub url: Secret,
    /// Connections at most, all uses together.
    pub pool_size: usize,
    /// Ack batches the whole cluster commits at once (each replica its share).
    pub ack_writers: usize,
    /// How soon after one of its ack batches started a writer may start the next (zero: at
    /// once), so that at moderate rates a commit carries more events.
    pub ack_spacing: Duration,
    /// Connecting, and waiting for a free pooled connection, give up after this.
    pub connect_timeout: Duration,
    /// The server cancels any one statement running longer (set on every connection).
    pub statement_timeout: Duration,
    /// How long a replica's claim on work lasts without renewal: the work of a replica that
    /// died is taken over this long after its last renewal.
    pub lease: Duration,
}

impl PostgresSettings {
    /// The connection string. Never log or print it (it may hold a password).
    pub fn conninfo(&self) -> &str {
        std::str::from_utf8(self.url.expose()).unwrap_or_default()
    }
}

impl StoreBackend {
    /// The keys whose values differ between `self` and `other`, as written in the config
    /// (for the reload's "needs a restart" list). Compares the URL without showing it.
    pub fn changed_keys(&self, other: &Self) -> Vec<&'static str> {
        match (self, other) {
            (Self::Sqlite { path: a }, Self::Sqlite { path: b }) => {
                if a == b {
                    Vec::new()
                } else {
                    vec!["store.path"]
                }
            }
            (Self::Postgres(a), Self::Postgres(b)) => {
                let mut keys = Vec::new();
                if !a.url.same_as(&b.url) {
                    keys.push("store.url");
                }
                if a.pool_size != b.pool_size {
                    keys.push("store.pool_size");
                }
                if a.ack_writers != b.ack_writers {
                    keys.push("store.ack_writers");
                }
                if a.ack_spacing != b.ack_spacing {
                    keys.push("store.ack_spacing");
                }
                if a.connect_timeout != b.connect_timeout {
                    keys.push("store.connect_timeout");
                }
                if a.statement_timeout != b.statement_timeout {
                    keys.push("store.statement_timeout");
                }
                if a.lease != b.lease {
                    keys.push("store.lease");
                }
                keys
            }
            // Another backend altogether.
            _ => vec!["store.path", "store.url"],
        }
    }
}

/// Where a config's store is, read without resolving any secret (see [`store_location`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// `store.url`: the reference as written (`env:NAME` / `file:PATH`), not resolved.
    Postgres(SecretRef),
}

/// Something valid but worth telling the operator (printed by `gateway check` and at start).
pub type ConfigWarning = ConfigIssue;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<(GatewayConfig, Vec<ConfigWarning>), ConfigError> {
    compile::compile(path, &read(path)?)
}

/// Where a config file's store is (`[store] path`, or its default; or `url`), for commands
/// that work on the store without serving (`gateway backup`, `gateway store copy`). The file
/// must parse, but nothing else is checked and no secret is resolved: the service's secrets
/// (its environment, its credentials) are usually not there where an operator runs such a
/// command.
pub fn store_location(path: &Path) -> Result<StoreLocation, ConfigError> {
    compile::store_location(path, &read(path)?)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        issues: vec![ConfigIssue {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }],
    })
}
