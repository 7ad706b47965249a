//! `gateway check`: a bad config exits 1 and names the file, the line and the key; a good one
//! exits 0; an unprotected Ledig source must be declared so, and then warns.

use crate::harness::*;
use std::process::Command;

struct Checked {
    code: i32,
    stderr: String,
    path: String,
}

fn check(text: &str) -> Checked {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(gateway_bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .envs(env_vars())
        .env_remove("E2E_SURELY_MISSING_SECRET")
        .output()
        .expect("run gateway check");
    Checked {
        code: out.status.code().expect("exit code"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        path: path.display().to_string(),
    }
}

#[test]
fn unknown_key_is_named_with_file_and_line() {
    let c = check("[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"127.0.0.1:1\"\n");
    assert_eq!(c.code, 1, "{}", c.stderr);
    let expected = format!(
        "{}:3:1: server.lisen: unknown key `lisen` in [server]",
        c.path
    );
    assert!(c.stderr.contains(&expected), "{}", c.stderr);
}

#[test]
fn missing_secret_variable_is_named_with_file_line_and_key() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[sources.ledger]\nprovider = \"ledger\"\nsecrets = [\"env:E2E_SURELY_MISSING_SECRET\"]\n";
    let c = check(text);
    assert_eq!(c.code, 1, "{}", c.stderr);
    let expected = format!(
        "{}:6:12: sources.ledger.secrets[0]: environment variable E2E_SURELY_MISSING_SECRET is not set",
        c.path
    );
    assert!(c.stderr.contains(&expected), "{}", c.stderr);
}

#[test]
fn valid_config_passes_and_the_shipped_config_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = check(&config(&dir.path().join("g.db"), ""));
    assert_eq!(c.code, 0, "{}", c.stderr);
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
    let out = Command::new(gateway_bin())
        .args(["check", "--config", shipped])
        .env("LEDGER_SECRET", LEDGER_SECRET)
        .env("LEDIG_TOKEN", LEDIG_TOKEN)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unprotected_ledig_source_must_be_declared_and_warns() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[sources.ledig]\nprovider = \"ledig\"\n";
    let c = check(base);
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(
        c.stderr.contains(&format!("{}:3:1: sources.ledig", c.path)),
        "{}",
        c.stderr
    );
    let c = check(&format!("{base}unprotected = true\n"));
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(
        c.stderr.contains("warning:") && c.stderr.contains("sources.ledig.unprotected"),
        "{}",
        c.stderr
    );
}
