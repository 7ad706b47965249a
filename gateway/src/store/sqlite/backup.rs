//! `gateway backup`: a consistent copy of a SQLite store that a gateway may be writing to,
//! taken with SQLite's online backup API from a separate read connection.
//!
//! The copy is one snapshot: the source connection opens a read transaction before the first
//! page is copied and keeps it until the last, so every step copies pages of the same database
//! state. Without it SQLite starts a new read transaction per step and, finding that another
//! connection (the gateway's writer) committed in between, restarts the copy from page one: a
//! store that commits every few milliseconds would never finish. In WAL mode that read
//! transaction never blocks the writer; it only keeps the WAL from being rewound until the
//! copy ends (the WAL grows by what the gateway commits meanwhile). The copy is made in steps,
//! with a short pause between them, to leave the disk to the gateway's commits.
//!
//! It must never change what the store holds, and never leave anything at the destination path but a
//! complete, fsynced copy: pages go to a `.partial` file beside it, which is fsynced, checked
//! (`PRAGMA quick_check`) and then hard-linked to the destination, a link that fails if the
//! destination exists (so two backups, or a file created meanwhile, are never overwritten).

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Pages copied per step: 1 MiB with the store's 8 KiB pages. Measured on a 2-core VM with a
/// 300 MiB store under a stream of ~1,000 acks/s: steps of 128 pages copied it in 3.0-3.7 s
/// with the ack rate during the copy at 80-127% of the rate before (3 runs); steps of 1,024
/// took 1.5-2.1 s with the ack rate down to 40-55%.
pub const DEFAULT_PAGES_PER_STEP: u32 = 128;
/// Copied bytes are flushed to disk every this many bytes, so the final fsync is short and
/// does not hold the gateway's own fsyncs behind a flush of the whole copy.
const SYNC_EVERY_BYTES: u64 = 32 << 20;
/// The pause between steps: the gateway's commits get the disk to themselves for it.
const PAUSE_BETWEEN_STEPS: Duration = Duration::from_millis(5);
/// How long a step waits for a lock before retrying (the destination is ours; the source's
/// locks are only contended by a checkpoint that is resetting the WAL, which is short).
const BUSY_RETRY: Duration = Duration::from_millis(20);
/// Busy steps in a row after which the backup gives up rather than wait for ever.
const BUSY_RETRIES: u32 = 500;

/// Why a backup failed. The destination path then holds nothing new.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; a backup never overwrites a file (choose another path)")]
    DestinationExists(PathBuf),
    #[error(
        "{0} exists: an earlier backup to this path was interrupted, or one is running now; \
         remove it if none is"
    )]
    PartialExists(PathBuf),
    #[error("no store at {0}")]
    NoStore(PathBuf),
    #[error("{0} is not a gateway store (it has no `events` table)")]
    NotAStore(PathBuf),
    #[error("cannot read the store {path}: {source}")]
    Source {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot write the copy {path}: {source}")]
    Destination {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("copying {store} to {path}: {source}")]
    Copy {
        store: PathBuf,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("copying {0}: still locked after {BUSY_RETRIES} tries, 20 ms apart")]
    Busy(PathBuf),
    #[error("the copy {path} failed its check: {report}")]
    CheckFailed { path: PathBuf, report: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Rows of `events` in the copy.
    pub events: u64,
    /// The highest event `seq` in the copy (0 when it holds no event).
    pub last_seq: i64,
    /// Size of the copy in bytes.
    pub bytes: u64,
    /// Database pages copied.
    pub pages: u64,
    /// Steps the copy took.
    pub steps: u64,
    pub elapsed: Duration,
}

/// Copies the store at `store` to `to` (which must not exist), `pages_per_step` pages at a time.
pub fn backup(store: &Path, to: &Path, pages_per_step: u32) -> Result<BackupSummary, BackupError> {
    let started = Instant::now();
    if to.symlink_metadata().is_ok() {
        return Err(BackupError::DestinationExists(to.to_path_buf()));
    }
    if !store.is_file() {
        return Err(BackupError::NoStore(store.to_path_buf()));
    }
    let partial = partial_path(to);
    // Claim the partial file first: an interrupted or concurrent backup is reported, not
    // clobbered. SQLite takes the empty file as a new database.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::PartialExists(partial.clone()),
            _ => io_err("cannot create", &partial, e),
        })?;
    let copied = copy_and_check(store, &partial, pages_per_step.max(1));
    let summary = match copied {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let published = publish(&partial, to);
    let _ = std::fs::remove_file(&partial);
    published?;
    Ok(BackupSummary {
        elapsed: started.elapsed(),
        ..summary
    })
}

/// `<to>.partial`, beside the destination so the final link stays on one file system.
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Copies every page into `partial` from one snapshot of `store`, checks it and fsyncs it.
/// The summary's `elapsed` is left to the caller.
fn copy_and_check(
    store: &Path,
    partial: &Path,
    pages_per_step: u32,
) -> Result<BackupSummary, BackupError> {
    let src_err = |source| BackupError::Source {
        path: store.to_path_buf(),
        source,
    };
    let dst_err = |source| BackupError::Destination {
        path: partial.to_path_buf(),
        source,
    };
    // Read-write, though nothing is written: a read-only connection to a store no gateway has
    // open creates its `-wal` and `-shm` files and leaves them behind, owned by whoever ran
    // the backup (root, say), and a gateway started later as its own user cannot open them.
    // As the last connection this one removes them at close (after folding a WAL left by a
    // crash into the database, which is what the gateway's next start would do).
    let source = Connection::open_with_flags(
        store,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(src_err)?;
    source
        .execute_batch("PRAGMA busy_timeout = 5000; BEGIN")
        .map_err(src_err)?;
    // The first read opens the read transaction that every step then copies from.
    let tables: i64 = source
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )
        .map_err(src_err)?;
    if tables == 0 {
        return Err(BackupError::NotAStore(store.to_path_buf()));
    }
    let mut dest = Connection::open(partial).map_err(dst_err)?;
    let (pages, steps) = {
        let backup = Backup::new(&source, &mut dest).map_err(dst_err)?;
        let per_step = i32::try_from(pages_per_step).unwrap_or(i32::MAX);
        let copy_err = |source| BackupError::Copy {
            store: store.to_path_buf(),
            path: partial.to_path_buf(),
            source,
        };
        let flush = std::fs::File::open(partial).map_err(|e| io_err("cannot open", partial, e))?;
        let sync_every = (SYNC_EVERY_BYTES / 8192 / u64::from(pages_per_step)).max(1);
        let (mut steps, mut busy) = (0u64, 0u32);
        loop {
            match backup.step(per_step).map_err(copy_err)? {
                StepResult::Done => break,
                StepResult::More => {
                    (steps, busy) = (steps + 1, 0);
                    if steps % sync_every == 0 {
                        flush
                            .sync_data()
                            .map_err(|e| io_err("cannot fsync", partial, e))?;
                    }
                    std::thread::sleep(PAUSE_BETWEEN_STEPS);
                }
                // Busy, Locked, and whatever a later rusqlite adds (`StepResult` is
                // non-exhaustive): transient by SQLite's documentation, so try again.
                _ => {
                    busy += 1;
                    if busy >= BUSY_RETRIES {
                        return Err(BackupError::Busy(store.to_path_buf()));
                    }
                    std::thread::sleep(BUSY_RETRY);
                }
            }
        }
        steps += 1;
        let pages = u64::try_from(backup.progress().pagecount).unwrap_or(0);
        (pages, steps)
    };
    source.execute_batch("COMMIT").map_err(src_err)?;
    drop(source);
    let report: String = dest
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(dst_err)?;
    if report != "ok" {
        return Err(BackupError::CheckFailed {
            path: partial.to_path_buf(),
            report,
        });
    }
    let (events, last_seq) = dest
        .query_row(
            "SELECT count(*), coalesce(max(seq), 0) FROM events",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .map_err(dst_err)?;
    dest.close().map_err(|(_, e)| dst_err(e))?;
    let file = std::fs::File::open(partial).map_err(|e| io_err("cannot open", partial, e))?;
    file.sync_all()
        .map_err(|e| io_err("cannot fsync", partial, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| io_err("cannot stat", partial, e))?
        .len();
    Ok(BackupSummary {
        events: u64::try_from(events).unwrap_or(0),
        last_seq,
        bytes,
        pages,
        steps,
        elapsed: Duration::ZERO,
    })
}

/// Gives the finished copy its name (a hard link: fails if `to` exists) and makes the name
/// durable by fsyncing the directory.
fn publish(partial: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::hard_link(partial, to).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => BackupError::DestinationExists(to.to_path_buf()),
        _ => io_err("cannot create", to, e),
    })?;
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot fsync the directory", dir, e))
}

fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> BackupError {
    BackupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_events(path: &Path, n: i64) {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch(
            "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL;
             CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .expect("schema");
        for _ in 0..n {
            conn.execute("INSERT INTO events (body) VALUES (zeroblob(3000))", [])
                .expect("insert");
        }
    }

    #[test]
    fn copies_every_event_in_steps_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("gateway.db");
        store_with_events(&store, 200);
        let to = dir.path().join("copy.db");
        let summary = backup(&store, &to, 4).expect("backup");
        assert_eq!((summary.events, summary.last_seq), (200, 200));
        assert!(summary.steps > 10, "{summary:?}");
        assert_eq!(
            summary.bytes,
            std::fs::metadata(&to).expect("copy exists").len()
        );
        assert!(!partial_path(&to).exists());
        // Nothing of the copy's or the store's own is left beside them.
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["copy.db", "gateway.db"]);

        let before = std::fs::read(&to).expect("read copy");
        let again = backup(&store, &to, 4);
        assert!(
            matches!(again, Err(BackupError::DestinationExists(_))),
            "{again:?}"
        );
        assert_eq!(std::fs::read(&to).expect("read copy"), before);
    }

    #[test]
    fn events_still_in_the_wal_are_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("gateway.db");
        store_with_events(&store, 10);
        // A writer that keeps its commits in the WAL (no checkpoint), as a running gateway's
        // newest ones are: a copy of the database file alone would miss them.
        let writer = Connection::open(&store).expect("open");
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .expect("no checkpoints");
        for _ in 0..50 {
            writer
                .execute("INSERT INTO events (body) VALUES (zeroblob(3000))", [])
                .expect("insert");
        }
        let wal = std::fs::metadata(dir.path().join("gateway.db-wal")).expect("a WAL");
        assert!(wal.len() > 50 * 3000, "the new events are in the WAL");
        let to = dir.path().join("copy.db");
        let summary = backup(&store, &to, 4).expect("backup");
        assert_eq!((summary.events, summary.last_seq), (60, 60));
        drop(writer);
    }

    #[test]
    fn an_interrupted_backup_is_reported_not_clobbered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("gateway.db");
        store_with_events(&store, 1);
        let to = dir.path().join("copy.db");
        std::fs::write(partial_path(&to), b"left over").expect("write");
        let result = backup(&store, &to, 4);
        assert!(
            matches!(result, Err(BackupError::PartialExists(_))),
            "{result:?}"
        );
        assert!(!to.exists());
        assert_eq!(
            std::fs::read(partial_path(&to)).expect("kept"),
            b"left over"
        );
    }

    #[test]
    fn refuses_what_is_not_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = backup(&dir.path().join("none.db"), &dir.path().join("a.db"), 4);
        assert!(
            matches!(missing, Err(BackupError::NoStore(_))),
            "{missing:?}"
        );
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
            .expect("other db");
        let to = dir.path().join("b.db");
        let result = backup(&other, &to, 4);
        assert!(
            matches!(result, Err(BackupError::NotAStore(_))),
            "{result:?}"
        );
        assert!(!to.exists() && !partial_path(&to).exists());
    }
}
