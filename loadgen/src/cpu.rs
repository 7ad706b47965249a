//! CPU time of a process (all its threads), read from `/proc/<pid>/stat`, so the report can say
//! how many cores the generator and the server under test used in each phase: a generator near
//! one full core means the generator, not the server, may be the limit. Linux only; elsewhere
//! the figures are simply absent.

use std::time::{Duration, Instant};

/// `/proc/<pid>/stat` counts in USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SEC: u64 = 100;

/// User + system CPU time of `pid` (`None`: this process).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start at field 3.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

/// Cores used by the generator and the server over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) generator: Option<f64>,
    pub(crate) server: Option<f64>,
}

/// Started before a phase, read after it.
#[derive(Debug)]
pub(crate) struct Meter {
    server_pid: u32,
    at: Instant,
    generator: Option<Duration>,
    server: Option<Duration>,
}

impl Meter {
    pub(crate) fn start(server_pid: u32) -> Self {
        Self {
            server_pid,
            at: Instant::now(),
            generator: cpu_time(None),
            server: cpu_time(Some(server_pid)),
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let cores = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.saturating_sub(before?).as_secs_f64() / wall)
        };
        Usage {
            generator: cores(self.generator, cpu_time(None)),
            server: cores(self.server, cpu_time(Some(self.server_pid))),
        }
    }
}
