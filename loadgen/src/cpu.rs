//! CPU time of processes (all their threads), read from `/proc/<pid>/stat`, so the report can say
//! how many cores the generator, the server(s) under test and, for gateways on PostgreSQL, the
//! database server used in each phase: a generator near one full core means the generator, not
//! the server, may be the limit; and a gateway that hands its work to PostgreSQL looks cheap
//! unless the database's share is counted too. Linux only; elsewhere the figures are absent.

use std::time::{Duration, Instant};

/// `/proc/<pid>/stat` counts in USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SEC: u64 = 100;

/// The fields of `/proc/<pid>/stat` after the command name, parsed as numbers where they are.
struct Stat {
    ppid: u32,
    /// utime + stime: this process's own threads.
    own: u64,
    /// cutime + cstime: its children that exited and were reaped.
    reaped: u64,
}

fn stat(pid: Option<u32>) -> Option<Stat> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start at field 3.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(number(1)?).ok()?,
        own: number(11)? + number(12)?,
        reaped: number(13)? + number(14)?,
    })
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 1000 / TICKS_PER_SEC)
}

/// User + system CPU time of `pid` (`None`: this process).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    stat(pid).map(|s| ticks(s.own))
}

/// Summed CPU time of several processes; `None` if any of them cannot be read.
fn cpu_time_of(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|&pid| cpu_time(Some(pid))).sum()
}

/// CPU time of a PostgreSQL server: the postmaster, its live children (backends, WAL writer,
/// checkpointer, ...), and the children it has already reaped, so a backend that exits during
/// a phase keeps counting.
fn tree_time(postmaster: u32) -> Option<Duration> {
    let root = stat(Some(postmaster))?;
    let mut total = root.own + root.reaped;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(child) = stat(Some(pid)).filter(|s| s.ppid == postmaster) {
            total += child.own;
        }
    }
    Some(ticks(total))
}

/// Cores used by the generator, the server(s) and the database over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) generator: Option<f64>,
    /// The server under test; with several replicas, their sum.
    pub(crate) server: Option<f64>,
    /// The PostgreSQL server the gateways use (`None` for the bare server and SQLite).
    pub(crate) database: Option<f64>,
}

impl Usage {
    /// CPU microseconds per answered request: server(s) plus database, over `per_sec`.
    pub(crate) fn us_per_event(&self, per_sec: f64) -> Option<f64> {
        self.per_event(per_sec).map(|cpu| cpu.total())
    }

    /// CPU per answered request at `per_sec`, split between the server(s) and the database.
    pub(crate) fn per_event(&self, per_sec: f64) -> Option<EventCpu> {
        let servers = self.server?;
        let database = self.database.unwrap_or(0.0);
        (per_sec >= 1.0).then(|| EventCpu {
            servers_us: servers * 1e6 / per_sec,
            database_us: database * 1e6 / per_sec,
        })
    }
}

/// CPU microseconds per answered request: the server(s)' and the database's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EventCpu {
    pub(crate) servers_us: f64,
    pub(crate) database_us: f64,
}

impl EventCpu {
    pub(crate) fn total(&self) -> f64 {
        self.servers_us + self.database_us
    }
}

impl std::fmt::Display for EventCpu {
    /// `91 us/event (gateways 40 + PostgreSQL 51)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} us/event (gateways {:.0} + PostgreSQL {:.0})",
            self.total(),
            self.servers_us,
            self.database_us
        )
    }
}

/// Started before a phase, read after it.
#[derive(Debug)]
pub(crate) struct Meter {
    servers: Vec<u32>,
    postmaster: Option<u32>,
    at: Instant,
    generator: Option<Duration>,
    server: Option<Duration>,
    database: Option<Duration>,
}

impl Meter {
    /// Meters the servers `servers` (summed) and, if given, the PostgreSQL server whose
    /// postmaster is `postmaster`.
    pub(crate) fn of(servers: &[u32], postmaster: Option<u32>) -> Self {
        Self {
            servers: servers.to_vec(),
            postmaster,
            at: Instant::now(),
            generator: cpu_time(None),
            server: cpu_time_of(servers),
            database: postmaster.and_then(tree_time),
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let cores = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.saturating_sub(before?).as_secs_f64() / wall)
        };
        Usage {
            generator: cores(self.generator, cpu_time(None)),
            server: cores(self.server, cpu_time_of(&self.servers)),
            database: cores(self.database, self.postmaster.and_then(tree_time)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_event_is_split_between_servers_and_database() {
        let usage = Usage {
            generator: Some(0.4),
            server: Some(0.5),
            database: Some(1.0),
        };
        let cpu = usage.per_event(10_000.0);
        assert_eq!(
            cpu,
            Some(EventCpu {
                servers_us: 50.0,
                database_us: 100.0
            })
        );
        assert_eq!(usage.us_per_event(10_000.0), Some(150.0));
        assert_eq!(
            cpu.map(|c| c.to_string()).as_deref(),
            Some("150 us/event (gateways 50 + PostgreSQL 100)")
        );
        // Nothing answered: no figure rather than an infinite one.
        assert_eq!(usage.per_event(0.0), None);
        // The bare server and SQLite have no database: all of it is the server's.
        let alone = Usage {
            database: None,
            ..usage
        };
        assert_eq!(alone.us_per_event(10_000.0), Some(50.0));
    }

    #[test]
    fn a_parent_counts_its_children() -> anyhow::Result<()> {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()?;
        let me = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Until the child has burnt a few ticks, its parent's tree must show them.
        let (own, tree) = loop {
            let own = cpu_time(None).unwrap_or_default();
            let tree = tree_time(me).unwrap_or_default();
            if tree > own + Duration::from_millis(50) || Instant::now() > deadline {
                break (own, tree);
            }
            // A poll interval, not a wait for an outcome: the deadline bounds the test.
            std::thread::sleep(Duration::from_millis(10));
        };
        child.kill()?;
        child.wait()?;
        assert!(tree > own + Duration::from_millis(50), "{own:?} {tree:?}");
        Ok(())
    }
}
