//! Typed telemetry events: one struct per thing that happens, whose `emit()` writes the log line
//! and updates the metric together, so the two never drift apart.
//!
//! Log fields that come from requests are formatted with `{:?}`, which escapes CR/LF and control
//! characters, so a request cannot forge log lines. Nothing here ever receives a secret.

use super::{Metrics, Outcome, PluginMetrics, SourceMetrics};
use std::time::Duration;

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
            event_type = ?self.event_type,
            id = ?self.id,
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
    pub fn emit(self) {
        tracing::info!(
            source = %self.metrics.source,
            peer = %self.peer,
            reason = %self.reason,
            "webhook rejected: not authenticated"
        );
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
    pub fn emit(self) {
        tracing::info!(
            source = %self.metrics.source,
            peer = %self.peer,
            encoding = ?self.encoding,
            "webhook refused: compressed body (Content-Encoding)"
        );
    }
}

/// A payload carried fields its provider's docs do not list (kept in `data` all the same).
#[derive(Debug)]
pub struct UnknownFieldsSeen<'a> {
    pub metrics: &'a SourceMetrics,
    pub event_type: &'a str,
    pub fields: &'a [String],
}

/// At most this many field names go into one log line.
const MAX_LOGGED_FIELDS: usize = 16;

impl UnknownFieldsSeen<'_> {
    pub fn emit(self) {
        if self.fields.is_empty() {
            return;
        }
        self.metrics
            .unknown_fields
            .inc_by(u64::try_from(self.fields.len()).unwrap_or(u64::MAX));
        let shown = &self.fields[..self.fields.len().min(MAX_LOGGED_FIELDS)];
        tracing::info!(
            source = %self.metrics.source,
            event_type = ?self.event_type,
            fields = ?shown,
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
            reason = ?self.reason,
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
        tracing::error!(source = %self.source, error = %self.error, "store unavailable: answered 503");
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
            tracing::error!(batch = self.size, %error, "store batch failed and was rolled back");
        }
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
        for line in self.logs {
            let (plugin, id, msg) = (self.plugin, self.event_id, &line.message);
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
                event_id = ?self.event_id,
                result = label,
                reason = ?r,
                "plugin call failed"
            ),
            _ => tracing::debug!(
                plugin = self.plugin,
                event_id = ?self.event_id,
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
                    last_failure = ?last_failure,
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
        tracing::debug!(plugin = self.plugin, event_id = ?self.event_id, "unhealthy plugin skipped");
    }
}

/// Sets a plugin's unhealthy gauge to the state of the health it starts a generation with
/// (a reload may carry an unhealthy plugin over, or start it afresh).
pub fn plugin_health_gauge(metrics: &PluginMetrics, healthy: bool) {
    metrics.unhealthy.set(i64::from(!healthy));
}
