//! Prometheus metrics: the registry, every metric's name and help text, and pre-resolved
//! per-source handles for the request path.
//!
//! Metric names are part of the gateway's interface and live only here. Label values come only
//! from config names and the providers' catalogues, never from request data, so the number of
//! series is bounded. Code elsewhere never touches a metric directly: it emits a typed event
//! from [`events`], which updates the metric and writes the matching log line together.

pub mod events;
mod flow;
pub mod flow_events;
pub mod log_limit;
pub mod log_text;

pub use flow::{
    ADMIN_ACTIONS, ADMIN_REQUESTS_TOTAL, ADMIN_RESULTS, ADMIN_SIGN_INS_TOTAL, CONFIG_GENERATION,
    CONFIG_RELOADS_TOTAL, DEAD_LETTERS, DELIVERIES_TOTAL, DELIVERY_DURATION, DELIVERY_RESULTS,
    DestinationMetrics, ORDERING_BLOCKED_SUBJECTS, ORDERING_OLDEST_HELD_AGE,
    ORDERING_UNROUTED_HOLDS, QUEUE_DEPTH, QUEUE_OLDEST_AGE, RELOAD_RESULTS, ROUTED_EVENTS_TOTAL,
    ROUTING_RESULTS, SIGN_IN_RESULTS,
};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::Arc;

pub const REQUESTS_TOTAL: &str = "gateway_requests_total";
pub const ACK_DURATION: &str = "gateway_ack_duration_seconds";
pub const EVENTS_TOTAL: &str = "gateway_events_total";
pub const UNKNOWN_FIELDS_TOTAL: &str = "gateway_unknown_fields_total";
pub const QUARANTINED_TOTAL: &str = "gateway_quarantined_total";
pub const STORE_BATCH_SIZE: &str = "gateway_store_batch_size";
pub const STORE_COMMIT_DURATION: &str = "gateway_store_commit_duration_seconds";
pub const STORE_FAILURES_TOTAL: &str = "gateway_store_failures_total";
pub const STORE_POOL_CONNECTIONS: &str = "gateway_store_pool_connections";
pub const STORE_POOL_WAITING: &str = "gateway_store_pool_waiting";
pub const STORE_REPLICAS: &str = "gateway_store_replicas";
pub const STORE_ACK_WRITERS: &str = "gateway_store_ack_writers";
pub const DEDUP_PRUNED_TOTAL: &str = "gateway_dedup_pruned_total";
pub const CLAIMS_LOST_TOTAL: &str = "gateway_claims_lost_total";
pub const EVENTS_EXPIRED_TOTAL: &str = "gateway_events_expired_total";
pub const QUARANTINE_EXPIRED_TOTAL: &str = "gateway_quarantine_expired_total";
pub const PLUGIN_CALLS_TOTAL: &str = "gateway_plugin_calls_total";
pub const PLUGIN_DURATION: &str = "gateway_plugin_duration_seconds";
pub const PLUGIN_UNHEALTHY: &str = "gateway_plugin_unhealthy";
pub const PLUGIN_SKIPPED_TOTAL: &str = "gateway_plugin_skipped_total";
pub const UNMATCHED_REQUESTS_TOTAL: &str = "gateway_unmatched_requests_total";
pub const OPEN_CONNECTIONS: &str = "gateway_open_connections";
pub const BODY_BUFFER_BYTES: &str = "gateway_body_buffer_bytes";
pub const LIMIT_REACHED_TOTAL: &str = "gateway_limit_reached_total";

/// `limit` of `gateway_limit_reached_total`: `server.max_connections` (the listener waited for
/// a connection to close before accepting another) and `server.max_body_buffer` (a request was
/// answered 503 because request bodies in memory were at the limit).
pub const LIMITS: [&str; 2] = ["connections", "body_buffer"];

/// Ack latency buckets: the target is single-digit milliseconds, so resolve that range finely;
/// refusals (401, 413) answer in about 100 µs.
const ACK_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const PLUGIN_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.05,
    0.1, 0.5, 1.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// How a request on a webhook path ended; the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Unauthorized,
    Malformed,
    TooLarge,
    /// A `Content-Encoding` the gateway does not inflate (anything but `identity`): 415.
    UnsupportedEncoding,
    Timeout,
    Error,
    /// Request bodies in memory were at `server.max_body_buffer`: 503, retry later.
    Overloaded,
}

impl Outcome {
    pub const ALL: [Self; 9] = [
        Self::Accepted,
        Self::Duplicate,
        Self::Unauthorized,
        Self::Malformed,
        Self::TooLarge,
        Self::UnsupportedEncoding,
        Self::Timeout,
        Self::Error,
        Self::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Unauthorized => "unauthorized",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::Overloaded => "overloaded",
        }
    }
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    ack_duration: HistogramVec,
    events: IntCounterVec,
    unknown_fields: IntCounterVec,
    quarantined: IntCounterVec,
    store_batch_size: Histogram,
    store_commit_duration: Histogram,
    store_failures: IntCounter,
    /// PostgreSQL only: pooled connections by `state` (idle, busy), and requests waiting.
    store_pool: [IntGauge; 2],
    store_pool_waiting: IntGauge,
    /// PostgreSQL only: replicas sharing the database as this one counted them, and this
    /// replica's batch writers allowed to commit because of it.
    store_replicas: IntGauge,
    store_ack_writers: IntGauge,
    dedup_pruned: IntCounter,
    claims_lost: IntCounterVec,
    events_expired: IntCounter,
    quarantine_expired: IntCounter,
    unmatched: IntCounterVec,
    plugin_calls: IntCounterVec,
    plugin_duration: HistogramVec,
    plugin_unhealthy: IntGaugeVec,
    plugin_skipped: IntCounterVec,
    flow: flow::Flow,
    capacity: Capacity,
}

/// What the listener's connection cap and the request bodies' memory budget have in use, and
/// how often they were reached.
#[derive(Debug)]
struct Capacity {
    open_connections: IntGauge,
    body_buffer_bytes: IntGauge,
    /// By [`LIMITS`].
    limit_reached: [IntCounter; LIMITS.len()],
}

impl Capacity {
    /// The `gateway_limit_reached_total` series of `limit`, one of [`LIMITS`].
    fn reached(&self, limit: &str) -> Option<&IntCounter> {
        let i = LIMITS.iter().position(|l| *l == limit)?;
        self.limit_reached.get(i)
    }

    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open_connections = IntGauge::new(
            OPEN_CONNECTIONS,
            "Client connections open now (server.max_connections caps them).",
        )?;
        let body_buffer_bytes = IntGauge::new(
            BODY_BUFFER_BYTES,
            "Bytes of request bodies held in memory now (server.max_body_buffer caps them).",
        )?;
        let limit_reached = IntCounterVec::new(
            Opts::new(
                LIMIT_REACHED_TOTAL,
                "Times a capacity limit was reached: connections (accepting waited for a \
                 connection to close), body_buffer (a request was answered 503).",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(body_buffer_bytes.clone()))?;
        registry.register(Box::new(limit_reached.clone()))?;
        Ok(Self {
            open_connections,
            body_buffer_bytes,
            limit_reached: LIMITS.map(|l| limit_reached.with_label_values(&[l])),
        })
    }
}

/// The gateway's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                REQUESTS_TOTAL,
                "Requests on webhook paths, by source and outcome.",
            ),
            &["source", "outcome"],
        )?;
        let ack_duration = HistogramVec::new(
            HistogramOpts::new(
                ACK_DURATION,
                "Time from request start to the answer, by source.",
            )
            .buckets(ACK_BUCKETS.to_vec()),
            &["source"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                EVENTS_TOTAL,
                "Events stored, by source and catalogued type.",
            ),
            &["source", "type"],
        )?;
        let unknown_fields = IntCounterVec::new(
            Opts::new(
                UNKNOWN_FIELDS_TOTAL,
                "Payload fields the provider's docs do not list.",
            ),
            &["source"],
        )?;
        let quarantined = IntCounterVec::new(
            Opts::new(
                QUARANTINED_TOTAL,
                "Authenticated bodies kept in quarantine.",
            ),
            &["source"],
        )?;
        let store_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                STORE_BATCH_SIZE,
                "Requests committed per store transaction.",
            )
            .buckets(BATCH_BUCKETS.to_vec()),
        )?;
        let store_commit_duration = Histogram::with_opts(
            HistogramOpts::new(STORE_COMMIT_DURATION, "Time to apply and commit one batch.")
                .buckets(ACK_BUCKETS.to_vec()),
        )?;
        let store_failures = IntCounter::new(STORE_FAILURES_TOTAL, "Store batches that failed.")?;
        let store_pool = IntGaugeVec::new(
            Opts::new(
                STORE_POOL_CONNECTIONS,
                "PostgreSQL store: pooled connections, idle or busy (store.pool_size caps them).",
            ),
            &["state"],
        )?;
        let store_pool_waiting = IntGauge::new(
            STORE_POOL_WAITING,
            "PostgreSQL store: requests waiting for a pooled connection.",
        )?;
        registry.register(Box::new(store_pool.clone()))?;
        registry.register(Box::new(store_pool_waiting.clone()))?;
        let store_replicas = IntGauge::new(
            STORE_REPLICAS,
            "PostgreSQL store: replicas connected to the database, as this replica last counted \
             them (0 until its control connection has counted).",
        )?;
        let store_ack_writers = IntGauge::new(
            STORE_ACK_WRITERS,
            "PostgreSQL store: this replica's batch writers allowed to commit at once (the \
             cluster's budget divided among its replicas).",
        )?;
        registry.register(Box::new(store_replicas.clone()))?;
        registry.register(Box::new(store_ack_writers.clone()))?;
        let dedup_pruned =
            IntCounter::new(DEDUP_PRUNED_TOTAL, "Dedup keys pruned after the window.")?;
        let claims_lost = IntCounterVec::new(
            Opts::new(
                CLAIMS_LOST_TOTAL,
                "Results not recorded because this replica's claim on the work ran out and \
                 another replica took it over (PostgreSQL), by kind: event, delivery.",
            ),
            &["kind"],
        )?;
        for kind in ["event", "delivery"] {
            claims_lost.with_label_values(&[kind]);
        }
        let events_expired = IntCounter::new(
            EVENTS_EXPIRED_TOTAL,
            "Finished events deleted after store.retention.",
        )?;
        let quarantine_expired = IntCounter::new(
            QUARANTINE_EXPIRED_TOTAL,
            "Quarantined bodies deleted after store.quarantine_retention.",
        )?;
        let unmatched = IntCounterVec::new(
            Opts::new(
                UNMATCHED_REQUESTS_TOTAL,
                "Requests for no known path, or a wrong method.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(unmatched.clone()))?;
        let plugin_calls = IntCounterVec::new(
            Opts::new(PLUGIN_CALLS_TOTAL, "Plugin calls, by plugin and result."),
            &["plugin", "result"],
        )?;
        let plugin_duration = HistogramVec::new(
            HistogramOpts::new(
                PLUGIN_DURATION,
                "Time per plugin call (instantiate + call + verdict).",
            )
            .buckets(PLUGIN_BUCKETS.to_vec()),
            &["plugin"],
        )?;
        let plugin_unhealthy = IntGaugeVec::new(
            Opts::new(
                PLUGIN_UNHEALTHY,
                "1 while the plugin is marked unhealthy (consecutive traps/timeouts) and not called.",
            ),
            &["plugin"],
        )?;
        let plugin_skipped = IntCounterVec::new(
            Opts::new(
                PLUGIN_SKIPPED_TOTAL,
                "Events answered `retry` without calling the plugin because it is unhealthy.",
            ),
            &["plugin"],
        )?;
        registry.register(Box::new(plugin_calls.clone()))?;
        registry.register(Box::new(plugin_duration.clone()))?;
        registry.register(Box::new(plugin_unhealthy.clone()))?;
        registry.register(Box::new(plugin_skipped.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(ack_duration.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(unknown_fields.clone()))?;
        registry.register(Box::new(quarantined.clone()))?;
        registry.register(Box::new(store_batch_size.clone()))?;
        registry.register(Box::new(store_commit_duration.clone()))?;
        registry.register(Box::new(store_failures.clone()))?;
        registry.register(Box::new(dedup_pruned.clone()))?;
        registry.register(Box::new(claims_lost.clone()))?;
        registry.register(Box::new(events_expired.clone()))?;
        registry.register(Box::new(quarantine_expired.clone()))?;
        let flow = flow::Flow::register(&registry)?;
        let capacity = Capacity::register(&registry)?;
        Ok(Self(Arc::new(Inner {
            flow,
            capacity,
            registry,
            requests,
            ack_duration,
            events,
            unknown_fields,
            quarantined,
            store_batch_size,
            store_commit_duration,
            store_failures,
            store_pool: ["idle", "busy"].map(|state| store_pool.with_label_values(&[state])),
            store_pool_waiting,
            store_replicas,
            store_ack_writers,
            dedup_pruned,
            claims_lost,
            events_expired,
            quarantine_expired,
            unmatched,
            plugin_calls,
            plugin_duration,
            plugin_unhealthy,
            plugin_skipped,
        })))
    }

    /// Handles for one source, resolved once so the request path does no label lookups.
    /// Every series is created up front (at zero), so dashboards see them before traffic.
    pub fn for_source(&self, source: &str, catalogue: &'static [&'static str]) -> SourceMetrics {
        let i = &self.0;
        SourceMetrics {
            outcomes: Outcome::ALL.map(|o| i.requests.with_label_values(&[source, o.as_str()])),
            ack: i.ack_duration.with_label_values(&[source]),
            events: catalogue
                .iter()
                .map(|t| (*t, i.events.with_label_values(&[source, t])))
                .collect(),
            unknown_fields: i.unknown_fields.with_label_values(&[source]),
            quarantined: i.quarantined.with_label_values(&[source]),
            source: source.to_owned(),
        }
    }

    /// Handles for one plugin, every result series created up front.
    pub fn for_plugin(&self, plugin: &str) -> PluginMetrics {
        let i = &self.0;
        PluginMetrics {
            calls: crate::plugins::PluginOutcome::LABELS
                .map(|r| i.plugin_calls.with_label_values(&[plugin, r])),
            duration: i.plugin_duration.with_label_values(&[plugin]),
            unhealthy: i.plugin_unhealthy.with_label_values(&[plugin]),
            skipped: i.plugin_skipped.with_label_values(&[plugin]),
        }
    }

    /// Handles for one destination, every result series created up front.
    pub fn for_destination(&self, destination: &str) -> DestinationMetrics {
        self.0.flow.for_destination(destination)
    }

    /// Every metric's current value, for the console's overview.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.registry.gather()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.0.registry.gather())
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}

/// Pre-resolved metric handles for one source.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    source: String,
    outcomes: [IntCounter; Outcome::ALL.len()],
    ack: Histogram,
    events: HashMap<&'static str, IntCounter>,
    unknown_fields: IntCounter,
    quarantined: IntCounter,
}

impl SourceMetrics {
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Pre-resolved metric handles for one plugin.
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    calls: [IntCounter; 7],
    duration: Histogram,
    unhealthy: IntGauge,
    skipped: IntCounter,
}
