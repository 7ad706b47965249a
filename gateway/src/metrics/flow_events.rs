//! Typed telemetry events of the work after the ack (see [`super::events`] for the idea: the
//! log line and the metric are written together). Values that come from requests, plugins or
//! remote servers (event ids, plugin reasons, error texts from destinations, admin paths) are
//! logged through [`bounded`]: escaped and cut to a fixed length. A refused admin token, which
//! anyone can cause, is logged under the rate limit of [`super::log_limit`].

use super::log_limit::{LineKind, REFUSALS};
use super::log_text::{self, bounded};
use super::{DestinationMetrics, Metrics};
use std::time::Duration;

/// One delivery attempt ended.
#[derive(Debug)]
pub struct DeliveryAttempted<'a> {
    pub metrics: &'a DestinationMetrics,
    pub destination: &'a str,
    pub webhook_id: &'a str,
    /// ok, retry or dead (see `DELIVERY_RESULTS`).
    pub result: &'static str,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub elapsed: Duration,
}

impl DeliveryAttempted<'_> {
    pub fn emit(self) {
        if let Some(i) = super::DELIVERY_RESULTS
            .iter()
            .position(|r| *r == self.result)
        {
            self.metrics.results[i].inc();
        }
        self.metrics.duration.observe(self.elapsed.as_secs_f64());
        let elapsed_ms = u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX);
        match self.result {
            "ok" => tracing::debug!(
                destination = self.destination,
                webhook_id = ?bounded(self.webhook_id, log_text::ID),
                attempt = self.attempt,
                elapsed_ms,
                "delivered"
            ),
            "retry" => tracing::info!(
                destination = self.destination,
                webhook_id = ?bounded(self.webhook_id, log_text::ID),
                attempt = self.attempt,
                status = ?self.status,
                error = ?self.error.map(|e| bounded(e, log_text::REASON)),
                "delivery attempt failed; will retry"
            ),
            _ => tracing::warn!(
                destination = self.destination,
                webhook_id = ?bounded(self.webhook_id, log_text::ID),
                attempt = self.attempt,
                status = ?self.status,
                error = ?self.error.map(|e| bounded(e, log_text::REASON)),
                "delivery is a dead letter"
            ),
        }
    }
}

/// Routing one event (or retrying one route on it) ended.
#[derive(Debug)]
pub struct EventRouted<'a> {
    pub metrics: &'a Metrics,
    pub seq: i64,
    pub event_id: &'a str,
    /// One of `ROUTING_RESULTS`.
    pub result: &'static str,
    pub deliveries: usize,
    /// Why a plugin stage failed or will be retried, if it did.
    pub reason: Option<&'a str>,
}

impl EventRouted<'_> {
    pub fn emit(self) {
        let flow = &self.metrics.0.flow;
        if let Some(i) = super::ROUTING_RESULTS
            .iter()
            .position(|r| *r == self.result)
        {
            flow.routed[i].inc();
        }
        match self.result {
            "failed" => tracing::warn!(
                seq = self.seq,
                event_id = ?bounded(self.event_id, log_text::ID),
                reason = ?self.reason.map(|r| bounded(r, log_text::REASON)),
                "plugin stage failed; the event is a dead letter for that route"
            ),
            "retrying" => tracing::info!(
                seq = self.seq,
                event_id = ?bounded(self.event_id, log_text::ID),
                reason = ?self.reason.map(|r| bounded(r, log_text::REASON)),
                "plugin stage will be retried"
            ),
            "unrouted" => tracing::info!(
                seq = self.seq,
                event_id = ?bounded(self.event_id, log_text::ID),
                "no route matches the event"
            ),
            _ => tracing::debug!(
                seq = self.seq,
                event_id = ?bounded(self.event_id, log_text::ID),
                result = self.result,
                deliveries = self.deliveries,
                "event routed"
            ),
        }
    }
}

/// The backlog was measured.
#[derive(Debug)]
pub struct BacklogMeasured<'a> {
    pub metrics: &'a Metrics,
    pub queue_depth: u64,
    pub dead_letters: u64,
    /// How long the oldest due work has waited (zero when nothing is due).
    pub oldest_due_age: Duration,
}

impl BacklogMeasured<'_> {
    pub fn emit(self) {
        let flow = &self.metrics.0.flow;
        flow.queue_depth
            .set(i64::try_from(self.queue_depth).unwrap_or(i64::MAX));
        flow.dead_letters
            .set(i64::try_from(self.dead_letters).unwrap_or(i64::MAX));
        flow.queue_oldest_age.set(self.oldest_due_age.as_secs_f64());
    }
}

/// The blocked subjects of one ordered destination, measured (by the replica that runs the
/// cluster's jobs).
#[derive(Debug)]
pub struct OrderingMeasured<'a> {
    pub metrics: &'a Metrics,
    /// A configured destination's name.
    pub destination: &'a str,
    /// Subjects whose next delivery failed.
    pub blocked_subjects: u64,
    /// Subjects whose next delivery waits behind an earlier event not routed yet.
    pub unrouted_holds: u64,
    /// How long the oldest delivery held behind a failed one, or an unrouted event, has waited
    /// (zero: none).
    pub oldest_held_age: Duration,
}

impl OrderingMeasured<'_> {
    pub fn emit(self) {
        let flow = &self.metrics.0.flow;
        flow.blocked_subjects
            .with_label_values(&[self.destination])
            .set(i64::try_from(self.blocked_subjects).unwrap_or(i64::MAX));
        flow.unrouted_holds
            .with_label_values(&[self.destination])
            .set(i64::try_from(self.unrouted_holds).unwrap_or(i64::MAX));
        flow.oldest_held_age
            .with_label_values(&[self.destination])
            .set(self.oldest_held_age.as_secs_f64());
    }
}

/// A config generation went live (at start or by a reload).
#[derive(Debug)]
pub struct ConfigApplied<'a> {
    pub metrics: &'a Metrics,
    pub generation: u64,
    pub file: &'a std::path::Path,
    pub reload: bool,
    /// Changed settings that only take effect after a restart.
    pub needs_restart: &'a [String],
}

impl ConfigApplied<'_> {
    pub fn emit(self) {
        let flow = &self.metrics.0.flow;
        flow.generation
            .set(i64::try_from(self.generation).unwrap_or(i64::MAX));
        if self.reload {
            flow.reloads[0].inc();
            tracing::info!(
                generation = self.generation,
                file = %self.file.display(),
                "config reloaded"
            );
        }
        for key in self.needs_restart {
            tracing::warn!(
                key = %key,
                file = %self.file.display(),
                "changed, but takes effect only after a restart; the running value is kept"
            );
        }
    }
}

/// A reload was refused; the running config stays.
#[derive(Debug)]
pub struct ConfigRejected<'a> {
    pub metrics: &'a Metrics,
    /// One line per problem, `file:line:col: key: message`.
    pub problems: &'a [String],
}

impl ConfigRejected<'_> {
    pub fn emit(self) {
        self.metrics.0.flow.reloads[1].inc();
        for p in self.problems {
            tracing::error!(problem = %p, "config reload refused; the running config is kept");
        }
    }
}

/// An admin API request was answered. Refused authentications are logged (with the client
/// and the path) so that someone guessing the token shows up.
#[derive(Debug)]
pub struct AdminRequestHandled<'a> {
    pub metrics: &'a Metrics,
    /// One of [`super::flow::ADMIN_ACTIONS`].
    pub action: &'static str,
    pub status: u16,
    pub client: std::net::IpAddr,
    pub path: &'a str,
}

impl AdminRequestHandled<'_> {
    pub fn emit(self) {
        let result = match self.status {
            200..=299 => "ok",
            401 => "unauthorized",
            500..=599 => "error",
            _ => "rejected",
        };
        self.metrics
            .0
            .flow
            .admin_requests
            .with_label_values(&[self.action, result])
            .inc();
        if result == "unauthorized" && self.refusal_line() {
            tracing::warn!(
                client = %self.client,
                path = ?bounded(self.path, log_text::PATH),
                action = self.action,
                "admin request refused: missing or wrong bearer token"
            );
        }
    }
}

impl AdminRequestHandled<'_> {
    /// Whether this refusal's line is written now (anyone can send a wrong token).
    fn refusal_line(&self) -> bool {
        REFUSALS.admit(LineKind {
            what: "admin request refused: missing or wrong bearer token",
            scope: "admin".to_owned(),
            reason: self.action.to_owned(),
            level: tracing::Level::WARN,
        })
    }
}

/// A console sign-in (`POST /admin/session`): counted, and a failure logged with the client's
/// address (rate-limited: anyone can send a wrong token). The token tried is never logged.
#[derive(Debug)]
pub struct SignInAttempted<'a> {
    pub metrics: &'a Metrics,
    /// The name of the token that signed in; `None`: no configured token matched.
    pub name: Option<&'a str>,
    pub client: std::net::IpAddr,
}

impl SignInAttempted<'_> {
    pub fn emit(self) {
        let sign_ins = &self.metrics.0.flow.sign_ins;
        match self.name {
            Some(name) => {
                sign_ins[0].inc();
                tracing::info!(name, client = %self.client, "console sign-in");
            }
            None => {
                sign_ins[1].inc();
                let line = LineKind {
                    what: "console sign-in refused: no such token",
                    scope: "admin".to_owned(),
                    reason: "sign-in".to_owned(),
                    level: tracing::Level::WARN,
                };
                if REFUSALS.admit(line) {
                    tracing::warn!(
                        client = %self.client,
                        "console sign-in refused: no such token"
                    );
                }
            }
        }
    }
}

/// An operator changed what the workers will do: events marked for replay (new deliveries
/// follow) or dead letters redriven. One audit line each.
#[derive(Debug)]
pub struct AdminActionTaken<'a> {
    /// `replay` or `redrive`.
    pub action: &'static str,
    /// What was asked for, e.g. the filter or the id.
    pub selection: &'a str,
    /// How many events or dead letters it marked.
    pub count: u64,
    pub client: std::net::IpAddr,
    /// The name of the admin token that asked.
    pub actor: &'a str,
}

impl AdminActionTaken<'_> {
    pub fn emit(self) {
        tracing::info!(
            action = self.action,
            actor = self.actor,
            selection = ?bounded(self.selection, log_text::PATH),
            count = self.count,
            client = %self.client,
            "admin action"
        );
    }
}
