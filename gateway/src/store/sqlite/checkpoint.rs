//! The checkpoint thread: copies committed WAL frames into the database file, off the commit
//! path, then lets the kernel forget the database pages that checkpoint made durable
//! (drop-behind), but for the file's newest part.
//!
//! Why drop-behind: an event row is written once and then read from memory (`recent`) or,
//! rarely, by the admin API; the WAL file is rewound and reuses its pages, but the database file
//! grows with every event, so without advice each checkpointed page occupies a page of the OS
//! cache of its own. Allocating those pages is what made checkpoints expensive on the 2-core VM
//! the benchmark runs on (guest memory is backed lazily and handed back when free, so a page
//! cache that only grows pays a host fault per new page); dropped pages are reused at once.
//! It must never make anything less durable: the advice only ever concerns clean pages (the
//! kernel skips dirty ones) and is given after a checkpoint that fsynced the file.

use rusqlite::Connection;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How often committed WAL frames are copied into the database file. Often, so each
/// checkpoint's fsync of the database file is small: at 50 ms a checkpoint flushed ~1 MB at
/// ~20k events/s and the WAL fsyncs queued behind it for 10-25 ms (the ack p99 at half rate);
/// at 5 ms the server-side ack p99 stays under 3 ms and throughput rose ~10%.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(5);
/// The longest wait between checkpoints while nothing is committed. Short, because the first
/// checkpoint after a quiet spell copies (and fsyncs) everything committed since it began.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_millis(40);
/// The newest part of the database file, kept cached: the B-trees' rightmost pages (the ones
/// the next inserts rewrite, and whose parents every read walks through) were allocated last.
const HOT_TAIL: u64 = 8 << 20;
/// Advice is given once at least this much has left the hot tail (a syscall per ~1 MiB).
const ADVISE_STEP: u64 = 1 << 20;

/// Copies committed WAL frames into the database file with passive checkpoints (they never
/// block the writer; SQLite rewinds the WAL at the next commit once a checkpoint has caught
/// up, which under steady load is the writer's own backstop checkpoint, see
/// `schema::WAL_BACKSTOP_BYTES`). A truncating checkpoint at shutdown leaves an empty WAL.
pub(super) fn run(conn: &Connection, db_path: &Path, stop: &Receiver<()>) {
    let mut drop_behind = DropBehind::open(db_path);
    let mut pace = Pace::default();
    let mut failing = false;
    loop {
        let mode = match stop.recv_timeout(pace.wait) {
            Err(RecvTimeoutError::Timeout) => "PASSIVE",
            Ok(()) | Err(RecvTimeoutError::Disconnected) => "TRUNCATE",
        };
        let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match result {
            Ok(frames) => {
                if failing {
                    failing = false;
                    tracing::info!("WAL checkpoints succeed again");
                }
                pace.after(frames);
                drop_behind.advise();
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
            }
            Err(_) => {}
        }
        if mode == "TRUNCATE" {
            return;
        }
    }
}

/// How long to wait before the next checkpoint: [`CHECKPOINT_EVERY`] while commits come in,
/// doubling up to [`IDLE_CHECKPOINT_EVERY`] while the WAL does not change, so an idle gateway
/// does not wake 200 times a second for nothing.
#[derive(Debug)]
struct Pace {
    wait: Duration,
    /// The WAL's (frames, frames checkpointed) after the last checkpoint.
    last: Option<(i64, i64)>,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            wait: CHECKPOINT_EVERY,
            last: None,
        }
    }
}

impl Pace {
    fn after(&mut self, frames: (i64, i64)) {
        self.wait = if self.last == Some(frames) {
            (self.wait * 2).min(IDLE_CHECKPOINT_EVERY)
        } else {
            CHECKPOINT_EVERY
        };
        self.last = Some(frames);
    }
}

/// The part of the database file already advised away, and the file to advise on.
#[derive(Debug)]
struct DropBehind {
    /// `None` where the advice is unavailable (not Linux, or the file could not be opened):
    /// checkpoints go on without it.
    file: Option<File>,
    /// Bytes of the file before this offset were advised (or were there at start: a start
    /// leaves the cache as it found it).
    advised_to: u64,
}

impl DropBehind {
    fn open(db_path: &Path) -> Self {
        let file = File::open(db_path)
            .inspect_err(|e| {
                tracing::debug!(error = %e, "no drop-behind for the database file");
            })
            .ok();
        let advised_to = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len().saturating_sub(HOT_TAIL));
        Self { file, advised_to }
    }

    /// Advises away what left the hot tail since the last advice.
    fn advise(&mut self) {
        let Some(file) = &self.file else { return };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        // Retention may shrink the file (it does not: SQLite keeps freed pages for reuse), and
        // reused pages in front of the mark stay cached: only growth is advised.
        let cold_end = len.saturating_sub(HOT_TAIL);
        if cold_end < self.advised_to.saturating_add(ADVISE_STEP) {
            return;
        }
        if let Err(e) = advise_dont_need(file, self.advised_to, cold_end - self.advised_to) {
            tracing::debug!(error = %e, "drop-behind advice failed; not advising again");
            self.file = None;
            return;
        }
        self.advised_to = cold_end;
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn advise_dont_need(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let Some(len) = std::num::NonZeroU64::new(len) else {
        return Ok(());
    };
    rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed)
        .map_err(std::io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn advise_dont_need(_file: &File, _offset: u64, _len: u64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grow(file: &Path, len: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .expect("open");
        f.set_len(len).expect("grow");
    }

    #[test]
    fn checkpoints_slow_down_while_the_wal_is_unchanged_and_speed_up_at_once() {
        let mut pace = Pace::default();
        pace.after((10, 10));
        assert_eq!(pace.wait, CHECKPOINT_EVERY, "the first result is news");
        let mut waits = Vec::new();
        for _ in 0..5 {
            pace.after((10, 10));
            waits.push(pace.wait.as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 40, 40]);
        pace.after((12, 12));
        assert_eq!(pace.wait, CHECKPOINT_EVERY, "a commit came in");
    }

    #[test]
    fn only_growth_past_the_hot_tail_is_advised_in_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::write(&path, vec![1u8; 4096]).expect("write");
        grow(&path, 20 << 20);
        let mut drop_behind = DropBehind::open(&path);
        // What was there at start stays as it was, but for the hot tail.
        assert_eq!(drop_behind.advised_to, (20 << 20) - HOT_TAIL);
        grow(&path, (20 << 20) + ADVISE_STEP - 1);
        drop_behind.advise();
        assert_eq!(
            drop_behind.advised_to,
            (20 << 20) - HOT_TAIL,
            "less than a step"
        );
        grow(&path, 30 << 20);
        drop_behind.advise();
        assert_eq!(drop_behind.advised_to, (30 << 20) - HOT_TAIL);
        assert!(drop_behind.file.is_some(), "the advice was taken");
        // A file smaller than the hot tail is never advised.
        let small = dir.path().join("small");
        std::fs::write(&small, vec![1u8; 4096]).expect("write");
        let mut drop_behind = DropBehind::open(&small);
        grow(&small, HOT_TAIL);
        drop_behind.advise();
        assert_eq!(drop_behind.advised_to, 0);
    }
}
