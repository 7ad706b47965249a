//! What the admin API keeps across config generations, in memory only: signed-out sessions,
//! the last few hundred refused requests, the counter samples the overview's rates come
//! from, and the result of the last config reload. Nothing here is stored or shared between
//! replicas; every entry is bounded, and none holds a secret.

use super::session::Revocations;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refused requests kept for the console.
pub const REJECTED_KEPT: usize = 300;
/// Longest reason kept with a refusal (they are the gateway's own messages, cut anyway).
const REASON_CHARS: usize = 200;
/// The overview's rates span about this much time (the oldest sample younger than it).
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Samples are at least this far apart, however often the overview is asked for.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How often the overview's charts get a point, and how many they keep (the last hour).
pub const HISTORY_EVERY: Duration = Duration::from_secs(10);
const HISTORY_KEPT: usize = 360;

/// Shared by every generation's admin API (one per process).
#[derive(Debug, Default)]
pub struct AdminState {
    pub(crate) revoked: Revocations,
    rejected: Mutex<VecDeque<Rejection>>,
    samples: Mutex<VecDeque<(Instant, HashMap<String, f64>)>>,
    last_reload: Mutex<Option<ReloadRecord>>,
    history: Mutex<VecDeque<HistoryPoint>>,
}

/// One point of the overview's charts: counters since the start and gauges, at `at`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryPoint {
    pub at: i64,
    /// Webhook requests accepted (stored or duplicate), and refused (any other outcome).
    pub accepted: f64,
    pub refused: f64,
    /// Delivery attempts that succeeded, and deliveries that became dead letters.
    pub delivered: f64,
    pub dead: f64,
    pub queue_depth: f64,
    pub dead_letters: f64,
}

/// One refused request, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub at: i64,
    /// The source's name, `admin`, or `-` for a path nobody serves.
    pub source: String,
    pub client: String,
    pub reason: String,
}

/// The last reload's result.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    pub at: i64,
    pub ok: bool,
    /// The generation now running.
    pub generation: Option<u64>,
    /// `file:line:col: key: message` per problem of a refused config (never a value of a key
    /// that holds a secret: the config layer does not write those).
    pub problems: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AdminState {
    /// Remembers one refusal (the oldest is forgotten past [`REJECTED_KEPT`]).
    pub fn record_rejection(&self, source: &str, client: IpAddr, reason: &str) {
        let rejection = Rejection {
            at: crate::store::unix_ms(),
            source: source.chars().take(64).collect(),
            client: client.to_canonical().to_string(),
            reason: reason.chars().take(REASON_CHARS).collect(),
        };
        let mut ring = lock(&self.rejected);
        if ring.len() >= REJECTED_KEPT {
            ring.pop_front();
        }
        ring.push_back(rejection);
    }

    /// The refusals kept, newest first.
    pub fn rejections(&self) -> Vec<Rejection> {
        lock(&self.rejected).iter().rev().cloned().collect()
    }

    /// Adds a point to the charts (the oldest is forgotten past an hour's worth).
    pub fn record_history(&self, point: HistoryPoint) {
        let mut history = lock(&self.history);
        if history.len() >= HISTORY_KEPT {
            history.pop_front();
        }
        history.push_back(point);
    }

    pub fn history(&self) -> Vec<HistoryPoint> {
        lock(&self.history).iter().cloned().collect()
    }

    pub fn record_reload(&self, record: ReloadRecord) {
        *lock(&self.last_reload) = Some(record);
    }

    pub fn last_reload(&self) -> Option<ReloadRecord> {
        lock(&self.last_reload).clone()
    }

    /// Rates per second of the counters in `now` (keyed by series), over the time since the
    /// oldest kept sample (`None` until two samples are a second apart), and that time.
    pub(crate) fn rates(&self, now: HashMap<String, f64>) -> (HashMap<String, f64>, Option<f64>) {
        let at = Instant::now();
        let mut samples = lock(&self.samples);
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|(t, _)| at.duration_since(*t) >= RATE_WINDOW)
        {
            samples.pop_front();
        }
        let mut rates = HashMap::new();
        let mut span = None;
        if let Some((then, old)) = samples.front() {
            let secs = at.duration_since(*then).as_secs_f64();
            if secs >= 1.0 {
                span = Some(secs);
                for (k, v) in &now {
                    let before = old.get(k).copied().unwrap_or(0.0);
                    rates.insert(k.clone(), ((v - before) / secs).max(0.0));
                }
            }
        }
        if samples
            .back()
            .is_none_or(|(t, _)| at.duration_since(*t) >= SAMPLE_EVERY)
        {
            samples.push_back((at, now));
        }
        (rates, span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_ring_keeps_the_newest_and_cuts_reasons() {
        let state = AdminState::default();
        let client: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        for i in 0..REJECTED_KEPT + 5 {
            state.record_rejection("ledger", client, &format!("r{i}{}", "x".repeat(500)));
        }
        let kept = state.rejections();
        assert_eq!(kept.len(), REJECTED_KEPT);
        assert!(
            kept[0]
                .reason
                .starts_with(&format!("r{}", REJECTED_KEPT + 4))
        );
        assert_eq!(kept[0].reason.chars().count(), REASON_CHARS);
        assert_eq!(kept[0].client, "10.0.0.1");
    }
}
