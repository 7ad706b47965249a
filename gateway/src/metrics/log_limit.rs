//! Rate limits for the log lines anyone can cause: refused webhooks (authentication, content
//! coding, a full body buffer), refused admin tokens, failed accepts. Each kind of line, per
//! scope (the source, `admin`, `listener`) and reason, gets the first [`BURST`] lines of every
//! [`INTERVAL`]; the rest are counted, and when the interval ends one summary line says how
//! many were left out (`similar log lines suppressed`, `suppressed=N`). So one client refused
//! 5,000 times a second writes a few lines per interval, not 5,000 a second, and the metric of
//! each refusal still counts every one.
//!
//! Keys come from config names and fixed texts only (never the client's address or its
//! data), so the number of windows is bounded; a window is forgotten when its interval ends.
//! This module decides and writes the summaries; the telemetry events write the lines.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Lines of one kind written in full per interval.
pub const BURST: u32 = 5;
/// How long a window lasts.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The limiter of every refusal line in the process.
pub static REFUSALS: LazyLock<LogLimiter> = LazyLock::new(|| LogLimiter::new(BURST, INTERVAL));

/// The limiter of the workers' store failures: while the database is down the workers retry
/// every few hundred milliseconds, and each retry would otherwise be a line. The first line of
/// each kind per minute is written, then a count.
pub static WORK_FAILURES: LazyLock<LogLimiter> =
    LazyLock::new(|| LogLimiter::new(1, Duration::from_secs(60)));

/// One kind of line: what it says, where (source name, `admin`, `listener`) and why (a fixed
/// text such as an authentication error's message). Never request data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LineKind {
    /// The log line's message.
    pub what: &'static str,
    pub scope: String,
    pub reason: String,
    /// The level the lines and their summary are written at.
    pub level: tracing::Level,
}

/// Lines of one kind that were left out of a window that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub kind: LineKind,
    pub count: u64,
    pub window: Duration,
}

impl Suppressed {
    fn emit(&self) {
        let k = &self.kind;
        let (scope, reason) = (k.scope.as_str(), k.reason.as_str());
        let (count, window_s) = (self.count, self.window.as_secs());
        if k.level == tracing::Level::WARN {
            tracing::warn!(
                what = k.what,
                scope,
                reason,
                suppressed = count,
                window_s,
                "similar log lines suppressed"
            );
        } else {
            tracing::info!(
                what = k.what,
                scope,
                reason,
                suppressed = count,
                window_s,
                "similar log lines suppressed"
            );
        }
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
}

/// The windows and the counting, without a clock or a runtime (so tests can drive it).
#[derive(Debug)]
pub struct Windows {
    burst: u32,
    interval: Duration,
    open: HashMap<LineKind, Window>,
    /// A task is waiting to write the summaries of the windows that suppress lines.
    flushing: bool,
}

impl Windows {
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst,
            interval,
            open: HashMap::new(),
            flushing: false,
        }
    }

    /// Whether one more line of `kind` may be written at `now`; and, when this starts a new
    /// window for `kind`, the summary of its previous one if that one left lines out.
    pub fn admit(&mut self, kind: &LineKind, now: Instant) -> (bool, Option<Suppressed>) {
        let mut ended = None;
        if let Some(w) = self.open.get(kind)
            && now.saturating_duration_since(w.started) >= self.interval
        {
            ended = self
                .open
                .remove(kind)
                .and_then(|w| self.summary(kind.clone(), &w));
        }
        let w = self.open.entry(kind.clone()).or_insert(Window {
            started: now,
            written: 0,
            suppressed: 0,
        });
        if w.written < self.burst {
            w.written += 1;
            (true, ended)
        } else {
            w.suppressed += 1;
            (false, ended)
        }
    }

    /// Ends every window whose interval is over at `now`; the summaries of those that left
    /// lines out.
    pub fn expire(&mut self, now: Instant) -> Vec<Suppressed> {
        let interval = self.interval;
        let over: Vec<LineKind> = self
            .open
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.started) >= interval)
            .map(|(k, _)| k.clone())
            .collect();
        over.into_iter()
            .filter_map(|k| {
                let w = self.open.remove(&k)?;
                self.summary(k, &w)
            })
            .collect()
    }

    /// When the first window that is leaving lines out ends.
    pub fn next_summary_due(&self) -> Option<Instant> {
        self.open
            .values()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.started + self.interval)
            .min()
    }

    fn summary(&self, kind: LineKind, w: &Window) -> Option<Suppressed> {
        (w.suppressed > 0).then_some(Suppressed {
            kind,
            count: w.suppressed,
            window: self.interval,
        })
    }
}

/// [`Windows`] behind a lock, on the real clock, writing the summaries: at the next line of the
/// same kind, or, inside a tokio runtime, from a task that wakes when a window that left lines
/// out ends (and exits when none is left, so an idle gateway does not wake for it).
#[derive(Debug)]
pub struct LogLimiter {
    windows: Mutex<Windows>,
}

impl LogLimiter {
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            windows: Mutex::new(Windows::new(burst, interval)),
        }
    }

    /// True when the line of `kind` should be written now.
    pub fn admit(&'static self, kind: LineKind) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            // A panic while holding the lock (there is no code that could) must not silence
            // the log.
            return true;
        };
        let (write, ended) = windows.admit(&kind, Instant::now());
        let runtime = tokio::runtime::Handle::try_current().ok();
        let flush = !write && !windows.flushing && runtime.is_some();
        if flush {
            windows.flushing = true;
        }
        drop(windows);
        if let Some(s) = ended {
            s.emit();
        }
        if let (true, Some(runtime)) = (flush, runtime) {
            runtime.spawn(self.write_summaries());
        }
        write
    }

    async fn write_summaries(&'static self) {
        loop {
            let due = {
                let Ok(mut windows) = self.windows.lock() else {
                    return;
                };
                match windows.next_summary_due() {
                    Some(due) => due,
                    None => {
                        windows.flushing = false;
                        return;
                    }
                }
            };
            tokio::time::sleep_until(due.into()).await;
            let ended = match self.windows.lock() {
                Ok(mut windows) => windows.expire(Instant::now()),
                Err(_) => return,
            };
            for s in &ended {
                s.emit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(scope: &str, reason: &str) -> LineKind {
        LineKind {
            what: "webhook rejected: not authenticated",
            scope: scope.to_owned(),
            reason: reason.to_owned(),
            level: tracing::Level::INFO,
        }
    }

    #[test]
    fn the_first_lines_of_a_window_are_written_the_rest_counted_and_summarized() {
        let mut w = Windows::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        let k = kind("ledig", "invalid token");
        let written = (0..5_000)
            .filter(|i| w.admit(&k, t0 + Duration::from_micros(*i)).0)
            .count();
        assert_eq!(written, 5);
        assert_eq!(w.next_summary_due(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(w.expire(t0 + Duration::from_secs(9)), vec![]);
        let ended = w.expire(t0 + Duration::from_secs(10));
        assert_eq!(
            ended,
            vec![Suppressed {
                kind: k.clone(),
                count: 4_995,
                window: Duration::from_secs(10)
            }]
        );
        // A new window starts with the next line; nothing is due until it suppresses.
        assert_eq!(w.next_summary_due(), None);
        assert_eq!(w.admit(&k, t0 + Duration::from_secs(11)), (true, None));
    }

    #[test]
    fn each_scope_and_reason_has_its_own_window() {
        let mut w = Windows::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let kinds = [
            kind("ledig", "invalid token"),
            kind("ledig", "missing token"),
            kind("ledger", "invalid token"),
        ];
        for k in &kinds {
            let written: Vec<bool> = (0..4).map(|_| w.admit(k, t0).0).collect();
            assert_eq!(written, [true, true, false, false], "{k:?}");
        }
        assert_eq!(w.expire(t0 + Duration::from_secs(10)).len(), 3);
    }

    #[test]
    fn a_window_that_ended_is_summarized_by_the_next_line_if_no_task_did() {
        let mut w = Windows::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        let k = kind("ledger", "missing signature headers");
        assert_eq!(w.admit(&k, t0), (true, None));
        assert_eq!(w.admit(&k, t0), (false, None));
        assert_eq!(w.admit(&k, t0), (false, None));
        let (write, ended) = w.admit(&k, t0 + Duration::from_secs(30));
        assert!(write);
        assert_eq!(ended.map(|s| s.count), Some(2));
        // A window that wrote everything ends without a summary.
        assert!(w.expire(t0 + Duration::from_secs(60)).is_empty());
        assert!(w.open.is_empty(), "ended windows are forgotten");
    }
}
