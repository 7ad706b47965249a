//! What one phase against one target measured: answers by kind, failures with a sample of each,
//! and ack latency in an HDR histogram (microseconds). Each connection records into its own
//! `Stats`, merged at the end of the phase, so recording takes no lock. For `loadgen e2e` it
//! can also keep the id and send time of every accepted event ([`Stats::tracking`]), to follow
//! each one to the sink.

use crate::client::Answer;
use crate::cpu::Usage;
use hdrhistogram::Histogram;
use http::HeaderValue;
use std::time::{Duration, Instant};

/// Latencies are recorded in microseconds, clamped to this (one minute).
const MAX_US: u64 = 60_000_000;

#[derive(Debug)]
pub(crate) struct Stats {
    /// 200 answers that are not duplicates.
    pub(crate) accepted: u64,
    /// 200 answers saying `"duplicate":true`.
    pub(crate) duplicate: u64,
    /// Requests sent as exact repeats of an earlier one.
    pub(crate) repeats_sent: u64,
    pub(crate) non_200: u64,
    /// Transport failures (connect, write, read), each counted once.
    pub(crate) errors: u64,
    pub(crate) sample_non_200: Option<String>,
    pub(crate) sample_error: Option<String>,
    /// Ack latency in microseconds.
    pub(crate) latency: Histogram<u64>,
    pub(crate) elapsed: Duration,
    /// Cores the generator and the server used during the phase.
    pub(crate) usage: Usage,
    /// Accepted events: (event id, send time; the intended one in the open loop). `None`
    /// unless made by [`Stats::tracking`].
    pub(crate) acked: Option<Vec<(HeaderValue, Instant)>>,
}

impl Stats {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            accepted: 0,
            duplicate: 0,
            repeats_sent: 0,
            non_200: 0,
            errors: 0,
            sample_non_200: None,
            sample_error: None,
            latency: Histogram::new_with_bounds(1, MAX_US, 3)?,
            elapsed: Duration::ZERO,
            usage: Usage::default(),
            acked: None,
        })
    }

    /// Like [`Stats::new`], and keeps the id and send time of every accepted event.
    pub(crate) fn tracking(track: bool) -> anyhow::Result<Self> {
        let mut stats = Self::new()?;
        if track {
            stats.acked = Some(Vec::new());
        }
        Ok(stats)
    }

    /// One answered request of event `id` sent at `sent`; kept if accepted and tracking.
    pub(crate) fn record_sent(
        &mut self,
        answer: Answer,
        repeat: bool,
        id: &HeaderValue,
        sent: Instant,
        latency: Duration,
    ) {
        if let (Some(acked), Answer::Accepted) = (self.acked.as_mut(), &answer) {
            acked.push((id.clone(), sent));
        }
        self.record(answer, repeat, latency);
    }

    /// One answered request; `repeat` says whether it was sent as a duplicate.
    pub(crate) fn record(&mut self, answer: Answer, repeat: bool, latency: Duration) {
        self.repeats_sent += u64::from(repeat);
        match answer {
            Answer::Accepted => self.accepted += 1,
            Answer::Duplicate => self.duplicate += 1,
            Answer::Other(status, body) => {
                self.non_200 += 1;
                if self.sample_non_200.is_none() {
                    self.sample_non_200 = Some(format!("{status} {body}"));
                }
            }
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_US);
        self.latency.saturating_record(us.clamp(1, MAX_US));
    }

    pub(crate) fn error(&mut self, what: &str, err: &anyhow::Error) {
        self.errors += 1;
        if self.sample_error.is_none() {
            self.sample_error = Some(format!("{what}: {err:#}"));
        }
    }

    pub(crate) fn merge(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.duplicate += other.duplicate;
        self.repeats_sent += other.repeats_sent;
        self.non_200 += other.non_200;
        self.errors += other.errors;
        self.sample_non_200 = self.sample_non_200.take().or(other.sample_non_200);
        self.sample_error = self.sample_error.take().or(other.sample_error);
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        match (&mut self.acked, other.acked) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            (mine @ None, theirs @ Some(_)) => *mine = theirs,
            _ => {}
        }
    }

    /// Requests answered 200 (accepted or duplicate) per second.
    pub(crate) fn acked_per_sec(&self) -> f64 {
        (self.accepted + self.duplicate) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in milliseconds.
    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(crate) fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}
