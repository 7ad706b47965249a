//! The file destination: each event is one JSON line appended to a file.
//!
//! Owns the append and its durability: an attempt is `Delivered` only after `sync_data`, so an
//! acknowledged line survives a crash. Writers of one destination are serialized so lines never
//! interleave. It never truncates, rewrites or reads the file, and it reopens the file on every
//! attempt so that log rotation (rename + new file) just works.

use super::{AttemptVerdict, Outcome};
use crate::config::FileDestinationSettings;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug)]
pub(super) struct FileTarget {
    path: PathBuf,
    /// Held across the blocking write; the owned guard moves into the blocking task so a
    /// cancelled attempt cannot let a second writer in while the first is still writing.
    writer: Arc<Mutex<()>>,
}

impl FileTarget {
    pub(super) fn new(settings: &FileDestinationSettings) -> Self {
        Self {
            path: settings.path.clone(),
            writer: Arc::new(Mutex::new(())),
        }
    }

    pub(super) async fn append(&self, envelope_json: &str) -> Outcome {
        let mut line = Vec::with_capacity(envelope_json.len() + 1);
        line.extend_from_slice(envelope_json.as_bytes());
        line.push(b'\n');
        let path = self.path.clone();
        let guard = Arc::clone(&self.writer).lock_owned().await;
        // std::fs in a blocking task: the file system has no async API worth the name, and
        // sync_data can take milliseconds we must not steal from the runtime's workers.
        let written = tokio::task::spawn_blocking(move || {
            let result = append_durably(&path, &line);
            drop(guard);
            result
        })
        .await;
        match written {
            Ok(Ok(())) => Outcome {
                verdict: AttemptVerdict::Delivered,
                status: None,
                error: None,
                retry_after: None,
            },
            Ok(Err(e)) => Outcome::retry(format!("cannot append to {}: {e}", self.path.display())),
            Err(e) => Outcome::retry(format!("file write task failed: {e}")),
        }
    }
}

/// Appends `line` with one write and syncs it. A file created here also gets its directory
/// entry synced, or a crash could lose the whole new file.
fn append_durably(path: &Path, line: &[u8]) -> io::Result<()> {
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
    file.write_all(line)?;
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
