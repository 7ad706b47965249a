//! `gateway backup` against a gateway that is serving: signed Ledger events stream in from
//! several connections while the backup copies the store one page per step (so the writer
//! commits between its steps); the gateway keeps acknowledging during the copy, the copy passes
//! `PRAGMA integrity_check`, and a second gateway started on it knows every event that was
//! acknowledged before the backup began (each is a duplicate there). The command refuses to
//! overwrite a file.

use crate::ack_stream::{AckStream, ledger_event};
use crate::harness::*;
use std::collections::HashSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SENDERS: usize = 4;
const ACKS_BEFORE_BACKUP: usize = 300;

/// Runs `gateway backup`; fails the test if it has not finished within [`PATIENCE`] (a copy
/// that restarts whenever the gateway commits would never finish).
fn gateway_backup(config: &std::path::Path, to: &std::path::Path, extra: &[&str]) -> Output {
    let mut child = Command::new(gateway_bin())
        .arg("backup")
        .arg("--config")
        .arg(config)
        .arg("--to")
        .arg(to)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gateway backup");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("poll gateway backup").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap gateway backup");
            panic!(
                "gateway backup did not finish within {PATIENCE:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
        .wait_with_output()
        .expect("collect gateway backup's output")
}

/// The number before ` events` in the backup's summary line.
fn events_in_summary(line: &str) -> i64 {
    line.split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {line:?}"))
}

#[test]
fn a_backup_taken_mid_stream_holds_every_event_acked_before_it() {
    let gw = Gateway::start();
    let stream = AckStream::start(gw.addr, SENDERS, "evt_backup");
    // Every ack already in the channel was received before the backup starts.
    let acked_before = stream.acked(ACKS_BEFORE_BACKUP, || gw.stderr());

    let out_dir = tempfile::tempdir().expect("temp dir");
    let copy = out_dir.path().join("backup.db");
    let config_file = gw.dir().join("gateway.toml");
    let out = gateway_backup(&config_file, &copy, &["--pages-per-step", "1"]);
    let acked_during = stream.more().len();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "backup failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The writer was never held: acks kept coming while the copy ran.
    assert!(
        acked_during > 0,
        "no event was acknowledged while the backup ran: {stdout}"
    );
    stream.stop();

    let line = stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "backed up {} to {}: ",
            gw.db.display(),
            copy.display()
        )),
        "{line}"
    );
    let steps: i64 = line
        .split(" pages in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step count in {line:?}"));
    assert!(steps > 10, "one page per step takes many steps: {line}");
    assert!(!out_dir.path().join("backup.db.partial").exists());

    let conn = open_db(&copy);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let in_copy = count(&conn, "SELECT count(*) FROM events");
    assert_eq!(in_copy, events_in_summary(line), "{line}");
    let mut stmt = conn
        .prepare("SELECT dedup_key FROM events WHERE source = 'ledger'")
        .expect("prepare");
    let keys: HashSet<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query stored keys")
        .map(|r| r.expect("a stored key"))
        .collect();
    drop(stmt);
    drop(conn);
    let missing: Vec<&String> = acked_before
        .iter()
        .filter(|id| !keys.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events acked before the backup are not in it: {missing:?}",
        missing.len(),
        acked_before.len()
    );

    // Refuses to overwrite, through the binary too, and leaves the copy as it was.
    let before = std::fs::read(&copy).expect("read the copy");
    let again = gateway_backup(&config_file, &copy, &[]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&copy).expect("read the copy"), before);

    // A gateway started on the copy knows every event acked before the backup began.
    drop(gw);
    std::fs::write(
        out_dir.path().join("gateway.toml"),
        config(&copy, &Settings::default()),
    )
    .expect("write config");
    let restored = Gateway::start_in(out_dir, copy);
    for id in &acked_before {
        restored.post_ledger(&ledger_event(id)).assert_duplicate();
    }
    restored
        .post_ledger(&ledger_event("evt_after_restore"))
        .assert_accepted();
}
