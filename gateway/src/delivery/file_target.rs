//! The file destination: each event is one JSON line appended to a file.
//!
//! Owns the append and its durability: an attempt is `Delivered` only after `sync_data`, so an
//! acknowledged line survives a crash. Appends are group-committed: attempts that arrive while
//! a write is running queue their lines, and the next writer appends everything queued with
//! one write and one `sync_data` (one fsync per line would cap a destination at a few thousand
//! lines per second and compete with the store's own fsyncs). Lines never interleave. It never
//! truncates, rewrites or reads the file, and it reopens the file on every write so that log
//! rotation (rename + new file) just works.
//!
//! A line is exactly one JSON value: the envelope's `data` is the provider's body verbatim, and
//! a pretty-printed body brings its line breaks along. In valid JSON a raw CR or LF can only be
//! whitespace between tokens (inside strings they must be escaped), so each becomes a space; the
//! characters some line readers also split at (U+0085, U+2028, U+2029; legal raw only inside
//! strings) are written as `\u` escapes. The value is unchanged; a compact envelope is written
//! byte for byte as stored.

use super::{AttemptVerdict, Outcome};
use crate::config::FileDestinationSettings;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Mutex, oneshot};

/// A line waiting for the next write, and where its result goes.
type Queued = (Vec<u8>, oneshot::Sender<Result<(), String>>);

#[derive(Debug)]
pub(super) struct FileTarget {
    path: PathBuf,
    /// Lines waiting for the next write.
    queue: Arc<std::sync::Mutex<Vec<Queued>>>,
    /// Held by the one writer; the owned guard moves into the blocking task so a cancelled
    /// attempt cannot let a second writer in while the first is still writing.
    writer: Arc<Mutex<()>>,
    /// Writes made (each one `sync_data`), for the tests to see the grouping.
    #[cfg(test)]
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl FileTarget {
    pub(super) fn new(settings: &FileDestinationSettings) -> Self {
        Self {
            path: settings.path.clone(),
            queue: Arc::default(),
            writer: Arc::new(Mutex::new(())),
            #[cfg(test)]
            writes: Arc::default(),
        }
    }

    pub(super) async fn append(&self, envelope_json: &str) -> Outcome {
        let mut line = one_line(envelope_json);
        line.push(b'\n');
        let (done, result) = oneshot::channel();
        if let Ok(mut queue) = self.queue.lock() {
            queue.push((line, done));
        }
        let guard = Arc::clone(&self.writer).lock_owned().await;
        // Whoever holds the lock writes everything queued, ours included unless an earlier
        // writer already took it.
        let batch = self
            .queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        if !batch.is_empty() {
            #[cfg(test)]
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.path.clone();
            // std::fs in a blocking task: the file system has no async API worth the name, and
            // sync_data can take milliseconds we must not steal from the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || {
                let (lines, waiters): (Vec<Vec<u8>>, Vec<_>) = batch.into_iter().unzip();
                let result = append_durably(&path, &lines.concat()).map_err(|e| e.to_string());
                drop(guard);
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            })
            .await;
        } else {
            drop(guard);
        }
        match result.await {
            Ok(Ok(())) => Outcome {
                verdict: AttemptVerdict::Delivered,
                status: None,
                error: None,
                retry_after: None,
            },
            Ok(Err(e)) => Outcome::retry(format!("cannot append to {}: {e}", self.path.display())),
            Err(_) => Outcome::retry("file write task failed".to_owned()),
        }
    }
}

/// The JSON text `json` on one line, the same value (see the module doc).
fn one_line(json: &str) -> Vec<u8> {
    // A byte scan first: CR, LF, and the last UTF-8 byte of U+0085, U+2028 and U+2029 (other
    // characters share those last bytes; they only cost the slower pass below).
    if !json
        .bytes()
        .any(|b| matches!(b, b'\n' | b'\r' | 0x85 | 0xA8 | 0xA9))
    {
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        return line;
    }
    let mut line = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '\n' | '\r' => line.push(' '),
            '\u{85}' => line.push_str("\\u0085"),
            '\u{2028}' => line.push_str("\\u2028"),
            '\u{2029}' => line.push_str("\\u2029"),
            c => line.push(c),
        }
    }
    line.into_bytes()
}

/// Appends `lines` with one write and syncs them. A file created here also gets its directory
/// entry synced, or a crash could lose the whole new file.
fn append_durably(path: &Path, lines: &[u8]) -> io::Result<()> {
    let (mut file, created) = match open_append(path, false) {
        Ok(file) => (file, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            (open_append(path, true)?, true)
        }
        Err(e) => return Err(e),
    };
    file.write_all(lines)?;
    file.sync_data()?;
    if created {
        sync_parent(path)?;
    }
    Ok(())
}

fn open_append(path: &Path, create: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(create);
    // Events carry payment data: a new file is readable by the gateway's user only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(unix)]
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => File::open(parent)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

#[cfg(not(unix))]
fn sync_parent(_path: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing on this platform.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backoff, DestinationKind, DestinationSettings};
    use crate::delivery::{Destination, Outgoing};
    use std::time::Duration;

    fn destination(path: PathBuf, concurrency: usize) -> Destination {
        let settings = DestinationSettings {
            name: "archive".into(),
            kind: DestinationKind::File(FileDestinationSettings { path }),
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(10),
            },
            concurrency,
            ordering: None,
        };
        Destination::new(&settings).expect("file destination")
    }

    fn outgoing(json: &str) -> Outgoing<'_> {
        Outgoing {
            webhook_id: "msg_1",
            envelope_json: json,
        }
    }

    #[tokio::test]
    async fn appends_lines_and_creates_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/events.jsonl");
        let dest = destination(path.clone(), 1);
        assert_eq!(dest.name(), "archive");
        for json in [r#"{"id":"1"}"#, r#"{"id":"2"}"#] {
            let report = dest.attempt(&outgoing(json)).await;
            assert_eq!(report.verdict, AttemptVerdict::Delivered, "{report:?}");
            assert_eq!(report.error, None);
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"id\":\"1\"}\n{\"id\":\"2\"}\n");
    }

    #[tokio::test]
    async fn a_pretty_printed_envelope_is_one_line_with_the_same_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let dest = destination(path.clone(), 1);
        // CRLF and LF between tokens, and the three characters some readers split lines at,
        // raw inside strings (legal JSON).
        let pretty = "{\"id\":\"1\",\"data\":{\r\n  \"memo\": \"a\u{2028}b\u{2029}c\u{85}d\",\n  \
                      \"n\": [\n    1,\n    2.50\n  ]\n}\n}";
        let report = dest.attempt(&outgoing(pretty)).await;
        assert_eq!(report.verdict, AttemptVerdict::Delivered, "{report:?}");
        let text = std::fs::read_to_string(&path).expect("read");
        let line = text.strip_suffix('\n').expect("terminated");
        assert!(
            !line.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']),
            "{line:?}"
        );
        let written: serde_json::Value = serde_json::from_str(line).expect("the line is JSON");
        let sent: serde_json::Value = serde_json::from_str(pretty).expect("the input is JSON");
        assert_eq!(written, sent);
        // Only what had to change changed: the number keeps its spelling.
        assert!(line.contains("2.50"), "{line}");
    }

    #[tokio::test]
    async fn concurrent_writers_never_interleave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let dest = destination(path.clone(), 8);
        let lines: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"id":"{i}","pad":"{}"}}"#, "x".repeat(5000)))
            .collect();
        let attempts = lines.iter().map(|l| {
            let dest = dest.clone();
            async move { dest.attempt(&outgoing(l)).await }
        });
        for report in futures::future::join_all(attempts).await {
            assert_eq!(report.verdict, AttemptVerdict::Delivered, "{report:?}");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let mut written: Vec<&str> = text.lines().collect();
        let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
        written.sort_unstable();
        expected.sort_unstable();
        assert_eq!(written, expected);
    }

    #[tokio::test]
    async fn concurrent_appends_share_a_write_and_its_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let target = FileTarget::new(&FileDestinationSettings { path: path.clone() });
        let lines: Vec<String> = (0..100).map(|i| format!(r#"{{"id":"{i}"}}"#)).collect();
        let outcomes = futures::future::join_all(lines.iter().map(|l| target.append(l))).await;
        for outcome in outcomes {
            assert_eq!(outcome.verdict, AttemptVerdict::Delivered, "{outcome:?}");
        }
        let writes = target.writes.load(std::sync::atomic::Ordering::Relaxed);
        // The first append writes alone; the 99 that queued meanwhile go in one more write.
        assert!(writes <= 3, "{writes} writes for 100 concurrent lines");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 100);
    }

    #[tokio::test]
    async fn io_errors_are_retried_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The path is a directory: opening it for append fails.
        let dest = destination(dir.path().to_path_buf(), 1);
        let report = dest.attempt(&outgoing("{}")).await;
        assert_eq!(report.verdict, AttemptVerdict::Retry);
        let error = report.error.expect("error text");
        assert!(error.starts_with("cannot append to "), "{error}");
    }
}
