//! The shipped systemd unit (`contrib/systemd/gateway.service`) as systemd itself reads it:
//! `systemd-analyze verify` prints nothing about it (unknown or misspelled directives, bad
//! values, an ExecStart that is not executable), and `systemd-analyze security --offline`
//! rates its sandbox at most [`MAX_EXPOSURE`]. The unit is checked as a copy whose ExecStart
//! names the gateway binary this test run built, since verify wants an executable there. Each
//! check is also run on a damaged copy, which it must reject, so neither can pass by looking
//! at nothing.

use crate::harness::gateway_bin;
use std::path::Path;
use std::process::Command;

/// The unit as shipped.
const UNIT: &str = include_str!("../../contrib/systemd/gateway.service");
/// Where the shipped unit expects the binary.
const INSTALLED_BIN: &str = "/usr/local/bin/gateway";
/// systemd's exposure score in tenths (0 = fully sandboxed, 100 = nothing), the form
/// `--threshold` takes: the unit scores 1.5 (15) in systemd 252; past 2.0 a sandboxing
/// directive has been lost.
const MAX_EXPOSURE: &str = "20";

fn systemd_analyze() -> &'static str {
    let path = "/usr/bin/systemd-analyze";
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the `systemd` package (.ci/run does)"
    );
    path
}

/// Writes `text` as `gateway.service` in a fresh directory.
fn unit_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.service");
    std::fs::write(&path, text).expect("write the unit");
    (dir, path)
}

fn rendered() -> String {
    assert!(
        UNIT.contains(INSTALLED_BIN),
        "ExecStart names {INSTALLED_BIN}"
    );
    UNIT.replace(INSTALLED_BIN, gateway_bin())
}

/// What `systemd-analyze verify` says about the unit: its lines that name the unit file (it
/// may also report on units of the host that the unit's dependencies load).
fn verify(text: &str) -> Vec<String> {
    let (_dir, path) = unit_file(text);
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut about_unit: Vec<String> = said
        .lines()
        .filter(|l| l.contains("gateway.service") || l.contains(&*path.to_string_lossy()))
        .map(str::to_owned)
        .collect();
    if !out.status.success() && about_unit.is_empty() {
        about_unit.push(format!("exit {:?}: {said}", out.status.code()));
    }
    about_unit
}

/// (passed the threshold, report) of `systemd-analyze security --offline`.
fn security(text: &str) -> (bool, String) {
    let (_dir, path) = unit_file(text);
    let out = Command::new(systemd_analyze())
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(&path)
        .output()
        .expect("run systemd-analyze security");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
fn the_shipped_unit_verifies_without_a_warning() {
    let said = verify(&rendered());
    assert!(said.is_empty(), "systemd-analyze verify: {said:#?}");

    let damaged = rendered().replace("ProtectSystem=strict", "ProtectSystem=strictly");
    let said = verify(&damaged);
    assert!(
        said.iter().any(|l| l.contains("strictly")),
        "a bad value must be reported: {said:#?}"
    );
    let missing_bin = UNIT.replace(INSTALLED_BIN, "/nonexistent/gateway");
    assert!(
        !verify(&missing_bin).is_empty(),
        "an ExecStart that does not exist must be reported"
    );
}

#[test]
fn the_shipped_unit_is_sandboxed() {
    let (passed, report) = security(&rendered());
    assert!(passed, "exposure above {MAX_EXPOSURE}:\n{report}");

    let unsandboxed: String = rendered()
        .lines()
        .filter(|l| !l.starts_with("SystemCallFilter=") && !l.starts_with("ProtectSystem="))
        .map(|l| format!("{l}\n"))
        .collect();
    let (passed, report) = security(&unsandboxed);
    assert!(
        !passed,
        "without its system call filter and read-only system the unit must score above \
         {MAX_EXPOSURE}:\n{report}"
    );
}
