//! Delivery: sends ONE attempt of one event to one destination and classifies the result
//! ([`AttemptVerdict`]), plus the wait before the next attempt ([`next_wait`]).
//!
//! Owns the outbound side: one pooled HTTP(S) client per destination with Standard Webhooks
//! signing (`http_target`, `signature`), the append-only file sink (`file_target`), the
//! per-destination concurrency cap, the backoff formula (`backoff`), and the SSRF guard
//! (`address_policy`: loopback, private, link-local and metadata addresses are refused unless
//! the destination allows them).
//!
//! It must never touch the store, routes, attempt bookkeeping or metrics: the caller decides
//! what an [`AttemptReport`] means for the event and records it. It never follows redirects,
//! never reads proxy settings from the environment, and never puts a signing key into an error
//! text or a `Debug` output.

pub mod address_policy;
mod backoff;
mod file_target;
mod http_target;
mod signature;

#[cfg(test)]
mod http_tests;

pub use backoff::next_wait;

use crate::config::{DestinationKind, DestinationSettings};
use file_target::FileTarget;
use http_target::HttpTarget;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Why a destination could not be built from its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("destination `{destination}`: URL scheme must be http or https, got `{scheme}`")]
    UnsupportedScheme { destination: String, scheme: String },
    #[error("destination `{destination}`: URL has no host")]
    MissingHost { destination: String },
    #[error(
        "destination `{destination}`: cannot load the system's root certificates for https: {reason}"
    )]
    TlsRoots { destination: String, reason: String },
    #[error(
        "destination `{destination}`: the URL's address is {range}; set `allow_private_network = true` to deliver to it"
    )]
    DeniedAddress {
        destination: String,
        range: &'static str,
    },
}

/// One configured destination, ready to send. Cloning is cheap and shares the connection pool
/// and the concurrency cap.
#[derive(Debug, Clone)]
pub struct Destination {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// Attempts in flight to this destination (settings.concurrency).
    permits: Semaphore,
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// Boxed: the client and signer dwarf the file target.
    Http(Box<HttpTarget>),
    File(FileTarget),
}

/// The delivery id (`webhook-id`) of an event that arrived on `source`: `<source>:<event id>`.
///
/// CloudEvents ids are unique within their source only: two sources (two Ledig accounts, say)
/// can send the same payout id, and a receiver that drops copies by `webhook-id` would drop the
/// second one. Source names hold no `:` (config checks them), so the pair is unambiguous. It is
/// stored with the delivery and made the same way on a replay, so it is stable across attempts
/// and replays; [`Outgoing::webhook_id`] says how it goes on the wire.
pub fn delivery_id(source: &str, event_id: &str) -> String {
    format!("{source}:{event_id}")
}

/// What one attempt sends.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// `webhook-id`: the same for every attempt of one delivery, so the receiver can dedup
    /// ([`delivery_id`]). Sent as given when it is a plain token: 1 to 128 bytes of
    /// `A-Z a-z 0-9 _ - :` not starting with `hashed-`; anything else (a `.`, which the spec
    /// forbids, a byte a header cannot carry, a longer id, or one that starts with `hashed-`)
    /// as `hashed-<hex of the first 16 bytes of its SHA-256>`, the same on every attempt.
    pub webhook_id: &'a str,
    /// The envelope as CloudEvents structured JSON; sent byte-for-byte (it is what is signed).
    pub envelope_json: &'a str,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub verdict: AttemptVerdict,
    /// The HTTP status, when the destination answered.
    pub status: Option<u16>,
    /// What went wrong, for logs and dead letters; `None` when delivered. Never holds a secret.
    pub error: Option<String>,
    /// Time spent on the attempt itself, not counting the wait for a concurrency permit.
    pub elapsed: Duration,
    /// What a `Retry-After` header asked for (any non-2xx answer), for [`next_wait`].
    pub retry_after: Option<Duration>,
}

/// How the caller should treat the delivery after this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    /// Accepted (2xx, or written and synced to the file).
    Delivered,
    /// Failed; another attempt may succeed (if attempts remain).
    Retry,
    /// Failed for good (410 Gone, or a request that cannot be built): never retry.
    Stop,
}

/// What a target returns; `Destination::attempt` adds the timing.
#[derive(Debug)]
struct Outcome {
    verdict: AttemptVerdict,
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

impl Outcome {
    fn retry(error: String) -> Self {
        Self {
            verdict: AttemptVerdict::Retry,
            status: None,
            error: Some(error),
            retry_after: None,
        }
    }
}

impl Destination {
    pub fn new(settings: &DestinationSettings) -> Result<Self, DeliveryError> {
        let target = match &settings.kind {
            DestinationKind::Http(http) => {
                Target::Http(Box::new(HttpTarget::new(&settings.name, http)?))
            }
            DestinationKind::File(file) => Target::File(FileTarget::new(file)),
        };
        // A cap of 0 would block every attempt forever; the semaphore panics above MAX_PERMITS.
        let cap = settings.concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Ok(Self {
            inner: Arc::new(Inner {
                name: settings.name.clone(),
                permits: Semaphore::new(cap),
                target,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// One attempt. Waits for a concurrency permit first; the permit is held until the attempt
    /// is classified (for HTTP that includes discarding the response body).
    pub async fn attempt(&self, delivery: &Outgoing<'_>) -> AttemptReport {
        let Ok(_permit) = self.inner.permits.acquire().await else {
            // The semaphore is never closed; answer sensibly rather than panic if it ever is.
            return report(
                Outcome::retry("destination is shut down".into()),
                Instant::now(),
            );
        };
        let started = Instant::now();
        let outcome = match &self.inner.target {
            Target::Http(http) => http.send(delivery).await,
            Target::File(file) => file.append(delivery.envelope_json).await,
        };
        report(outcome, started)
    }
}

fn report(outcome: Outcome, started: Instant) -> AttemptReport {
    AttemptReport {
        verdict: outcome.verdict,
        status: outcome.status,
        error: outcome.error,
        elapsed: started.elapsed(),
        retry_after: outcome.retry_after,
    }
}
