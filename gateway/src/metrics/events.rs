//! Typed telemetry events: one struct per thing that happens, whose `emit()` writes the log line
//! and updates the metric together, so the two never drift apart.
//!
//! Log fields that come from requests, plugins or remote servers go through
//! [`log_text::bounded`](super::log_text::bounded): escaped like `{:?}` (so a request cannot
//! forge log lines) and cut to a fixed length, so no input makes a line large. Lines any client
//! can cause (refusals, failed accepts) pass the rate limit of [`super::log_limit`]; their
//! metrics count every one. Nothing here ever receives a secret.

use super::log_limit::{LineKind, REFUSALS};
use super::log_text::{self, bounded, bounded_list};
use super::{Metrics, Outcome, PluginMetrics, SourceMetrics};
use std::time::Duration;

/// Whether a refusal line of this kind is written now (see [`super::log_limit`]).
fn refusal_line(what: &'static str, scope: &str, reason: String, level: tracing::Level) -> bool {
    REFUSALS.admit(LineKind {
        what,
        scope: scope.to_owned(),
        reason,
        level,
    })
}

/// A request on a webhook path got its answer.
#[derive(Debug)]
pub struct RequestHandled<'a> {
    pub metrics: &'a SourceMetrics,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

impl RequestHandled<'_> {
    pub fn emit(self) {
        let m = self.metrics;
        if let Some(c) = Outcome::ALL.iter().position(|o| *o == self.outcome) {
            m.outcomes[c].inc();
        }
        m.ack.observe(self.elapsed.as_secs_f64());
        tracing::debug!(
            source = %m.source,
            outcome = self.outcome.as_str(),
            elapsed_us = u64::try_from(self.elapsed.as_micros()).unwrap_or(u64::MAX),
            "request handled"
        );
    }
}

/// A new event was durably stored.
#[derive(Debug)]
pub struct EventStored<'a> {
    pub metrics: &'a SourceMetrics,
    pub catalogue_type: &'static str,
    pub event_type: &'a str,
    pub id: &'a str,
    pub seq: i64,
}

impl EventStored<'_> {
    pub fn emit(self) {
        if let Some(c) = self.metrics.events.get(self.catalogue_type) {
            c.inc();
        }
        tracing::debug!(
            source = %self.metrics.source,
            event_type = ?bounded(self.event_type, log_text::ID),
            id = ?bounded(self.id, log_text::ID),
            seq = self.seq,
            "event stored"
        );
    }
}

/// A delivery failed authentication.
#[derive(Debug)]
pub struct AuthRejected<'a> {
    pub metrics: &'a SourceMetrics,
    pub reason: &'a crate::providers::AuthError,
    pub peer: std::net::IpAddr,
}

impl AuthRejected<'_> {
    const WHAT: &'static str = "webhook rejected: not authenticated";

    pub fn emit(self) {
        let source = &self.metrics.source;
        let (reason, info) = (self.reason.to_string(), tracing::Level::INFO);
        if refusal_line(Self::WHAT, source, reason, info) {
            tracing::info!(
                source = %source,
                peer = %self.peer,
                reason = %self.reason,
                "webhook rejected: not authenticated"
            );
        }
    }
}

/// A request was refused because its body is compressed (`Content-Encoding` not `identity`).
/// Logged because a provider that starts compressing would otherwise fail quietly; the count is
/// the `unsupported_encoding` outcome of [`RequestHandled`].
#[derive(Debug)]
pub struct EncodingRefused<'a> {
    pub metrics: &'a SourceMetrics,
    pub encoding: &'a str,
    pub peer: std::net::IpAddr,
}

impl EncodingRefused<'_> {
    const WHAT: &'static str = "webhook refused: compressed body (Content-Encoding)";

    pub fn emit(self) {
        let source = &self.metrics.source;
        // The coding is the client's text: the reason of the rate limit is fixed.
        let reason = "unsupported coding".to_owned();
        if refusal_line(Self::WHAT, source, reason, tracing::Level::INFO) {
            tracing::info!(
                source = %source,
                peer = %self.peer,
                encoding = ?bounded(self.encoding, log_text::NAME),
                "webhook refused: compressed body (Content-Encoding)"
            );
        }
    }
}

/// A request was answered 503 because the request bodies held in memory were at
/// `server.max_body_buffer` (its body was not read, or not to its end).
#[derive(Debug)]
pub struct BodyBufferFull<'a> {
    pub metrics: &'a Metrics,
    pub source: &'a str,
    pub peer: std::net::IpAddr,
    pub limit: u64,
}

impl BodyBufferFull<'_> {
    const WHAT: &'static str =
        "webhook refused: request bodies in memory at server.max_body_buffer";

    pub fn emit(self) {
        if let Some(c) = self.metrics.0.capacity.reached("body_buffer") {
            c.inc();
        }
        let reason = "body buffer full".to_owned();
        if refusal_line(Self::WHAT, self.source, reason, tracing::Level::WARN) {
            tracing::warn!(
                source = %self.source,
                peer = %self.peer,
                limit = self.limit,
                "webhook refused: request bodies in memory at server.max_body_buffer"
            );
        }
    }
}

/// Request body bytes were taken into memory (positive) or let go (negative).
#[derive(Debug)]
pub struct BodyBytesHeld<'a> {
    pub metrics: &'a Metrics,
    pub bytes: i64,
}

impl BodyBytesHeld<'_> {
    pub fn emit(self) {
        self.metrics.0.capacity.body_buffer_bytes.add(self.bytes);
    }
}

/// A client connection was accepted (`opened`) or ended.
#[derive(Debug)]
pub struct ConnectionCounted<'a> {
    pub metrics: &'a Metrics,
    pub opened: bool,
}

impl ConnectionCounted<'_> {
    pub fn emit(self) {
        let gauge = &self.metrics.0.capacity.open_connections;
        if self.opened {
            gauge.inc()
        } else {
            gauge.dec()
        }
    }
}

/// `server.max_connections` connections are open: the listener accepts no other until one
/// closes (new ones wait in the kernel's accept queue).
#[derive(Debug)]
pub struct ConnectionCapReached<'a> {
    pub metrics: &'a Metrics,
    pub limit: usize,
}

impl ConnectionCapReached<'_> {
    const WHAT: &'static str = "connection cap reached: not accepting until a connection closes";

    pub fn emit(self) {
        if let Some(c) = self.metrics.0.capacity.reached("connections") {
            c.inc();
        }
        let reason = "server.max_connections".to_owned();
        if refusal_line(Self::WHAT, "listener", reason, tracing::Level::WARN) {
            tracing::warn!(
                limit = self.limit,
                "connection cap reached: not accepting until a connection closes"
            );
        }
    }
}

/// Accepting a connection failed (e.g. out of file descriptors); the listener pauses and
/// tries again, so this repeats as long as the cause lasts.
#[derive(Debug)]
pub struct AcceptFailed<'a> {
    pub error: &'a std::io::Error,
}

impl AcceptFailed<'_> {
    const WHAT: &'static str = "accept failed";

    pub fn emit(self) {
        // The OS's message for the error number: a fixed text per cause.
        let error = self.error.to_string();
        if refusal_line(Self::WHAT, "listener", error.clone(), tracing::Level::WARN) {
            tracing::warn!(error = %bounded(&error, log_text::REASON), "accept failed");
        }
    }
}

/// A payload carried fields its provider's docs do not list (kept in `data` all the same).
#[derive(Debug)]
pub struct UnknownFieldsSeen<'a> {
    pub metrics: &'a SourceMetrics,
    pub event_type: &'a str,
    pub fields: &'a [String],
}

impl UnknownFieldsSeen<'_> {
    pub fn emit(self) {
        if self.fields.is_empty() {
            return;
        }
        self.metrics
            .unknown_fields
            .inc_by(u64::try_from(self.fields.len()).unwrap_or(u64::MAX));
        tracing::info!(
            source = %self.metrics.source,
            event_type = ?bounded(self.event_type, log_text::ID),
            fields = ?bounded_list(self.fields, log_text::NAME),
            count = self.fields.len(),
            "payload has fields the provider's docs do not list"
        );
    }
}

/// An authenticated body that could not be normalized was kept in quarantine.
#[derive(Debug)]
pub struct BodyQuarantined<'a> {
    pub metrics: &'a SourceMetrics,
    pub reason: &'a str,
}

impl BodyQuarantined<'_> {
    pub fn emit(self) {
        self.metrics.quarantined.inc();
        tracing::warn!(
            source = %self.metrics.source,
            reason = ?bounded(self.reason, log_text::REASON),
            "authenticated body is not JSON: quarantined"
        );
    }
}

/// The store could not take a request's write; the request is answered 503.
#[derive(Debug)]
pub struct StoreUnavailable<'a> {
    pub source: &'a str,
    pub error: &'a dyn std::error::Error,
}

impl StoreUnavailable<'_> {
    pub fn emit(self) {
        let error = self.error.to_string();
        tracing::error!(
            source = %self.source,
            error = %bounded(&error, log_text::REASON),
            "store unavailable: answered 503"
        );
    }
}

/// The writer applied one batch (committed or rolled back).
#[derive(Debug)]
pub struct StoreBatchCommitted<'a> {
    pub metrics: &'a Metrics,
    pub size: usize,
    pub elapsed: Duration,
    pub error: Option<&'a str>,
}

impl StoreBatchCommitted<'_> {
    pub fn emit(self) {
        let m = &self.metrics.0;
        #[allow(clippy::cast_precision_loss)] // batch sizes are far below 2^52
        m.store_batch_size.observe(self.size as f64);
        m.store_commit_duration.observe(self.elapsed.as_secs_f64());
        if let Some(error) = self.error {
            m.store_failures.inc();
            tracing::error!(
                batch = self.size,
                error = %bounded(error, log_text::REASON),
                "store batch failed and was rolled back"
            );
        }
    }
}

/// Routing results or attempts this replica could not record: its claim had run out (it could
/// not renew it for a whole lease) and another replica took the work over, whose result stands.
/// The work itself was done twice (deliveries were sent twice, with the same webhook-id).
#[derive(Debug)]
pub struct ClaimsLost<'a> {
    pub metrics: &'a Metrics,
    /// event or delivery.
    pub kind: &'static str,
    pub count: usize,
}

impl ClaimsLost<'_> {
    pub fn emit(self) {
        self.metrics
            .0
            .claims_lost
            .with_label_values(&[self.kind])
            .inc_by(u64::try_from(self.count).unwrap_or(u64::MAX));
        tracing::warn!(
            kind = self.kind,
            count = self.count,
            "claims ran out before their results were recorded; another replica's results stand"
        );
    }
}

/// The PostgreSQL store's connection pool as it stands (refreshed about once a second).
#[derive(Debug)]
pub struct StorePoolState<'a> {
    pub metrics: &'a Metrics,
    pub idle: usize,
    pub busy: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

impl StorePoolState<'_> {
    pub fn emit(self) {
        let m = &self.metrics.0;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let [idle, busy] = &m.store_pool;
        idle.set(gauge(self.idle));
        busy.set(gauge(self.busy));
        m.store_pool_waiting.set(gauge(self.waiting));
    }
}

/// The replicas sharing the PostgreSQL database were counted (every couple of seconds, by the
/// control connection); logged when the count changed.
#[derive(Debug)]
pub struct StoreReplicasCounted<'a> {
    pub metrics: &'a Metrics,
    pub replicas: usize,
    /// This replica's writers allowed to commit at once now.
    pub writers: usize,
    /// Least time between the starts of this replica's batches of routing results now.
    pub results_spacing: std::time::Duration,
}

impl StoreReplicasCounted<'_> {
    pub fn emit(self) {
        let m = &self.metrics.0;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let (replicas, writers) = (gauge(self.replicas), gauge(self.writers));
        let changed = m.store_replicas.get() != replicas || m.store_ack_writers.get() != writers;
        m.store_replicas.set(replicas);
        m.store_ack_writers.set(writers);
        if changed {
            tracing::info!(
                replicas = self.replicas,
                ack_writers = self.writers,
                results_spacing_ms = self.results_spacing.as_millis(),
                "replicas sharing the store changed; this replica's share of the commits follows"
            );
        }
    }
}

/// The store's database stopped answering (first time, then a reminder now and then while it
/// stays so). `place` names hosts and database, never a password.
#[derive(Debug)]
pub struct StoreUnreachable<'a> {
    pub place: &'a str,
    pub error: &'a str,
    /// How long it has been unreachable (zero on the first line).
    pub down_for: Duration,
}

impl StoreUnreachable<'_> {
    pub fn emit(self) {
        tracing::error!(
            store = %self.place,
            error = %bounded(self.error, log_text::REASON),
            down_for_s = self.down_for.as_secs(),
            "store database unreachable: webhooks are answered 503 until it is back"
        );
    }
}

/// The store's database answers again.
#[derive(Debug)]
pub struct StoreReachable<'a> {
    pub place: &'a str,
    pub down_for: Duration,
}

impl StoreReachable<'_> {
    pub fn emit(self) {
        tracing::info!(
            store = %self.place,
            down_for_s = self.down_for.as_secs(),
            "store database reachable again"
        );
    }
}

/// Dedup keys older than the window were forgotten.
#[derive(Debug)]
pub struct DedupPruned {
    pub metrics: Metrics,
    pub count: u64,
}

impl DedupPruned {
    pub fn emit(self) {
        self.metrics.0.dedup_pruned.inc_by(self.count);
        tracing::info!(
            count = self.count,
            "pruned dedup keys older than the window"
        );
    }
}

/// A retention pass deleted finished events older than `store.retention`.
#[derive(Debug)]
pub struct EventsExpired {
    pub metrics: Metrics,
    pub count: u64,
}

impl EventsExpired {
    pub fn emit(self) {
        self.metrics.0.events_expired.inc_by(self.count);
        tracing::info!(
            count = self.count,
            "deleted finished events older than the retention"
        );
    }
}

/// A retention pass deleted quarantined bodies not seen for `store.quarantine_retention`.
#[derive(Debug)]
pub struct QuarantineExpired {
    pub metrics: Metrics,
    pub count: u64,
}

impl QuarantineExpired {
    pub fn emit(self) {
        self.metrics.0.quarantine_expired.inc_by(self.count);
        tracing::info!(
            count = self.count,
            "deleted quarantined bodies not seen for the quarantine retention"
        );
    }
}

/// A request for no known path (404) or with the wrong method (405).
#[derive(Debug)]
pub struct UnmatchedRequest<'a> {
    pub metrics: &'a Metrics,
    pub reason: &'static str,
}

impl UnmatchedRequest<'_> {
    pub fn emit(self) {
        self.metrics
            .0
            .unmatched
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// A plugin was called on an event.
#[derive(Debug)]
pub struct PluginCalled<'a> {
    pub metrics: Option<&'a PluginMetrics>,
    pub plugin: &'a str,
    pub event_id: &'a str,
    pub outcome: &'a crate::plugins::PluginOutcome,
    pub logs: &'a [crate::plugins::PluginLog],
    pub elapsed: Duration,
}

impl PluginCalled<'_> {
    pub fn emit(self) {
        use crate::plugins::PluginOutcome as O;
        let label = self.outcome.label();
        if let Some(m) = self.metrics {
            if let Some(i) = O::LABELS.iter().position(|l| *l == label) {
                m.calls[i].inc();
            }
            m.duration.observe(self.elapsed.as_secs_f64());
        }
        let id = bounded(self.event_id, log_text::ID);
        for line in self.logs {
            let (plugin, msg) = (self.plugin, bounded(&line.message, log_text::PLUGIN_LINE));
            match line.level {
                "error" => tracing::error!(plugin, event_id = ?id, message = ?msg, "plugin log"),
                "warn" => tracing::warn!(plugin, event_id = ?id, message = ?msg, "plugin log"),
                "info" => tracing::info!(plugin, event_id = ?id, message = ?msg, "plugin log"),
                _ => tracing::debug!(plugin, event_id = ?id, message = ?msg, "plugin log"),
            }
        }
        match self.outcome {
            O::Retry(r) | O::Fatal(r) | O::Trap(r) | O::Timeout(r) => tracing::warn!(
                plugin = self.plugin,
                event_id = ?id,
                result = label,
                reason = ?bounded(r, log_text::REASON),
                "plugin call failed"
            ),
            _ => tracing::debug!(
                plugin = self.plugin,
                event_id = ?id,
                result = label,
                elapsed_us = u64::try_from(self.elapsed.as_micros()).unwrap_or(u64::MAX),
                "plugin call"
            ),
        }
    }
}

/// A plugin was marked unhealthy, or recovered (its probe call succeeded).
#[derive(Debug)]
pub struct PluginHealthChanged<'a> {
    pub metrics: Option<&'a PluginMetrics>,
    pub plugin: &'a str,
    pub transition: &'a crate::plugins::Transition,
}

impl PluginHealthChanged<'_> {
    pub fn emit(self) {
        use crate::plugins::Transition;
        match self.transition {
            Transition::BecameUnhealthy {
                failures,
                last_failure,
            } => {
                tracing::error!(
                    plugin = self.plugin,
                    consecutive_failures = failures,
                    last_failure = ?bounded(last_failure, log_text::REASON),
                    "plugin marked unhealthy: not called until a probe call succeeds"
                );
                if let Some(m) = self.metrics {
                    m.unhealthy.set(1);
                }
            }
            Transition::Recovered => {
                tracing::info!(
                    plugin = self.plugin,
                    "plugin healthy again: its probe call succeeded"
                );
                if let Some(m) = self.metrics {
                    m.unhealthy.set(0);
                }
            }
        }
    }
}

/// An event was not given to an unhealthy plugin; its route stage waits for a retry.
#[derive(Debug)]
pub struct PluginSkipped<'a> {
    pub metrics: Option<&'a PluginMetrics>,
    pub plugin: &'a str,
    pub event_id: &'a str,
}

impl PluginSkipped<'_> {
    pub fn emit(self) {
        if let Some(m) = self.metrics {
            m.skipped.inc();
        }
        tracing::debug!(
            plugin = self.plugin,
            event_id = ?bounded(self.event_id, log_text::ID),
            "unhealthy plugin skipped"
        );
    }
}

/// Sets a plugin's unhealthy gauge to the state of the health it starts a generation with
/// (a reload may carry an unhealthy plugin over, or start it afresh).
pub fn plugin_health_gauge(metrics: &PluginMetrics, healthy: bool) {
    metrics.unhealthy.set(i64::from(!healthy));
}
