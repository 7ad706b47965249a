//! Plugin health: a plugin that traps or times out on event after event is marked unhealthy
//! and no longer called, instead of burning a thread up to its deadline for every event.
//!
//! A circuit breaker per plugin. `unhealthy_after` consecutive traps or timeouts (any other
//! outcome, even `fatal` or `retry`, is the plugin working as written) open it: calls are then
//! answered `retry` at once without running the plugin, so the events wait in their route's
//! retry schedule (nothing is lost, nothing is dead-lettered for the plugin's sake). Once
//! `unhealthy_cooldown` has passed, ONE call is let through as a probe; its success closes the
//! breaker, its failure starts a new cool-down. Health survives a config reload that keeps the
//! plugin as it was (same component bytes, same settings) and starts afresh otherwise.
//!
//! This module only decides and remembers; the caller emits the log lines and metrics for the
//! transitions it returns.

use crate::config::HealthPolicy;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Whether a call may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Healthy: run it.
    Call,
    /// Unhealthy, cool-down over: run it as the one probe.
    Probe,
    /// Unhealthy: do not run it; the text says why (for the event's retry reason), and the
    /// wait until the next probe may run (no point in retrying the event before).
    Skip { reason: String, probe_in: Duration },
}

/// A change of state the caller reports (log line + gauge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    BecameUnhealthy { failures: u32, last_failure: String },
    Recovered,
}

/// A plugin's health as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub healthy: bool,
    pub consecutive_failures: u32,
    /// Unix milliseconds.
    pub unhealthy_since: Option<u64>,
    pub last_failure: Option<String>,
    pub unhealthy_after: u32,
}

#[derive(Debug)]
pub struct PluginHealth {
    policy: HealthPolicy,
    /// The fast path reads only these two.
    open: AtomicBool,
    failures: AtomicU32,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default)]
struct Detail {
    last_failure: Option<String>,
    since: Option<SystemTime>,
    probe_after: Option<Instant>,
    probing: bool,
}

impl PluginHealth {
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            detail: Mutex::new(Detail::default()),
        }
    }

    pub fn policy(&self) -> HealthPolicy {
        self.policy
    }

    pub fn is_healthy(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        // The data stays consistent even if a holder panicked: every write is a plain store.
        self.detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides whether the next call runs.
    pub fn admit(&self) -> Admission {
        if self.is_healthy() {
            return Admission::Call;
        }
        let mut d = self.detail();
        if self.is_healthy() {
            return Admission::Call;
        }
        let now = Instant::now();
        if !d.probing && d.probe_after.is_none_or(|at| now >= at) {
            d.probing = true;
            return Admission::Probe;
        }
        let wait = d
            .probe_after
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        Admission::Skip {
            reason: format!(
                "plugin is unhealthy after {} consecutive failures (last: {}); not called, next \
                 probe in {}",
                self.failures.load(Ordering::Relaxed),
                d.last_failure.as_deref().unwrap_or("unknown"),
                humantime::format_duration(Duration::from_secs(wait.as_secs()))
            ),
            probe_in: wait,
        }
    }

    /// Records the result of an admitted call: `failure` is the reason of a trap or timeout.
    pub fn record(&self, admission: &Admission, failure: Option<&str>) -> Option<Transition> {
        let Some(reason) = failure else {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if self.is_healthy() && *admission != Admission::Probe {
                return None;
            }
            // Any success closes the breaker: the plugin works for at least some events.
            let mut d = self.detail();
            d.probing = false;
            d.since = None;
            d.probe_after = None;
            return self
                .open
                .swap(false, Ordering::AcqRel)
                .then_some(Transition::Recovered);
        };
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let mut d = self.detail();
        d.last_failure = Some(reason.to_owned());
        if *admission == Admission::Probe {
            d.probing = false;
            d.probe_after = Some(Instant::now() + self.policy.cooldown);
            return None;
        }
        let limit = self.policy.unhealthy_after;
        if limit == 0 || failures < limit || !self.is_healthy() {
            return None;
        }
        d.since = Some(SystemTime::now());
        d.probe_after = Some(Instant::now() + self.policy.cooldown);
        self.open.store(true, Ordering::Release);
        Some(Transition::BecameUnhealthy {
            failures,
            last_failure: reason.to_owned(),
        })
    }

    pub fn report(&self) -> HealthReport {
        let d = self.detail();
        HealthReport {
            healthy: self.is_healthy(),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            unhealthy_since: d.since.and_then(|t| {
                let ms = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis();
                u64::try_from(ms).ok()
            }),
            last_failure: d.last_failure.clone(),
            unhealthy_after: self.policy.unhealthy_after,
        }
    }
}

/// The plugins of the running config generation, for the admin API's health view.
#[derive(Debug, Default)]
pub struct PluginBoard(arc_swap::ArcSwap<Vec<std::sync::Arc<super::LoadedPlugin>>>);

impl PluginBoard {
    /// Shows `plugins` (a new generation's, going live) from now on, also in
    /// `gateway_plugin_unhealthy`.
    pub fn publish<'a>(
        &self,
        plugins: impl IntoIterator<Item = &'a std::sync::Arc<super::LoadedPlugin>>,
    ) {
        let mut list: Vec<_> = plugins.into_iter().cloned().collect();
        for p in &list {
            p.show_health();
        }
        list.sort_by(|a, b| a.name().cmp(b.name()));
        self.0.store(std::sync::Arc::new(list));
    }

    /// Every plugin's name and health, by name.
    pub fn reports(&self) -> Vec<(String, HealthReport)> {
        self.0
            .load()
            .iter()
            .map(|p| (p.name().to_owned(), p.health().report()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(after: u32, cooldown: Duration) -> PluginHealth {
        PluginHealth::new(HealthPolicy {
            unhealthy_after: after,
            cooldown,
        })
    }

    /// One admitted call that fails (or not), as the plugin host does it.
    fn call(h: &PluginHealth, fails: bool) -> (Admission, Option<Transition>) {
        let a = h.admit();
        let t = match a {
            Admission::Skip { .. } => None,
            _ => h.record(&a, fails.then_some("trapped: boom")),
        };
        (a, t)
    }

    #[test]
    fn consecutive_failures_open_the_breaker_and_a_success_in_between_resets_them() {
        let h = health(3, Duration::from_secs(3600));
        assert_eq!(call(&h, true).1, None);
        assert_eq!(call(&h, true).1, None);
        assert_eq!(call(&h, false).1, None, "a success resets the count");
        assert_eq!(h.report().consecutive_failures, 0);
        assert_eq!(call(&h, true).1, None);
        assert_eq!(call(&h, true).1, None);
        assert_eq!(
            call(&h, true).1,
            Some(Transition::BecameUnhealthy {
                failures: 3,
                last_failure: "trapped: boom".into()
            })
        );
        let report = h.report();
        assert!(
            !report.healthy && report.unhealthy_since.is_some(),
            "{report:?}"
        );
        match h.admit() {
            Admission::Skip {
                reason: why,
                probe_in,
            } => assert!(
                probe_in > Duration::from_secs(3500)
                    && why.starts_with(
                        "plugin is unhealthy after 3 consecutive failures (last: trapped: boom)"
                    ),
                "{why}"
            ),
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn after_the_cooldown_one_probe_runs_and_its_result_decides() {
        let h = health(1, Duration::ZERO);
        assert!(matches!(
            call(&h, true).1,
            Some(Transition::BecameUnhealthy { .. })
        ));
        // Cool-down over: exactly one probe at a time.
        assert_eq!(h.admit(), Admission::Probe);
        assert!(matches!(h.admit(), Admission::Skip { .. }));
        assert_eq!(h.record(&Admission::Probe, Some("timed out")), None);
        assert!(!h.is_healthy(), "a failed probe keeps it unhealthy");
        assert_eq!(h.report().last_failure.as_deref(), Some("timed out"));
        assert_eq!(h.admit(), Admission::Probe);
        assert_eq!(
            h.record(&Admission::Probe, None),
            Some(Transition::Recovered)
        );
        assert!(h.is_healthy());
        assert_eq!(h.report().unhealthy_since, None);
        assert_eq!(h.admit(), Admission::Call);
    }

    #[test]
    fn zero_never_marks_a_plugin_unhealthy() {
        let h = health(0, Duration::ZERO);
        for _ in 0..1000 {
            assert_eq!(call(&h, true), (Admission::Call, None));
        }
        assert!(h.is_healthy());
        assert_eq!(h.report().consecutive_failures, 1000);
    }
}
