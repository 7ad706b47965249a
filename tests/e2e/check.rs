//! `gateway check`: a valid config exits 0; a bad one exits 1 and names the file, the line and
//! the key of each problem (`FILE:LINE:COL: KEY: MESSAGE`): an unknown key, a secret whose
//! environment variable is not set, a key that does not apply to the provider. A Ledig source
//! without any protection is refused unless it says `unprotected = true`, which then warns.

use crate::harness::*;
use std::process::Command;

pub(crate) struct Checked {
    pub(crate) code: Option<i32>,
    pub(crate) stderr: String,
    path: String,
}

impl Checked {
    /// The checked file's path, as messages print it.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Asserts exit code 1 and a problem line naming this file, this line and this key.
    pub(crate) fn assert_problem(&self, line: usize, key: &str) -> &str {
        assert_eq!(self.code, Some(1), "exit code; stderr:\n{}", self.stderr);
        let prefix = format!("{}:{line}:", self.path);
        self.stderr
            .lines()
            .find(|l| {
                l.starts_with(&prefix)
                    && l[prefix.len()..]
                        .split_once(": ")
                        .is_some_and(|(_, rest)| rest.starts_with(&format!("{key}: ")))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no line `{prefix}COL: {key}: ...` in stderr:\n{}",
                    self.stderr
                )
            })
    }
}

pub(crate) fn check(text: &str) -> Checked {
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
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        path: path.display().to_string(),
    }
}

/// The line (1-based) of the first line of `text` that starts with `start`.
pub(crate) fn line_of(text: &str, start: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?}"))
        + 1
}

#[test]
fn the_standard_test_config_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = check(&config(&dir.path().join("g.db"), &Settings::default()));
    assert_eq!(c.code, Some(0), "stderr:\n{}", c.stderr);
}

// The shipped config/gateway.toml is checked (from a working directory where its relative
// plugin path resolves) by send::the_shipped_config_passes_check_and_routes_a_sent_event_...

#[test]
fn unknown_key_is_named_with_file_and_line() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"127.0.0.1:1\"\n";
    let c = check(text);
    let line = c.assert_problem(3, "server.lisen");
    assert!(line.contains("unknown key"), "{line}");
}

#[test]
fn missing_secret_variable_is_named_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(&dir.path().join("g.db"), &Settings::default()).replacen(
        "env:E2E_LEDGER_SECRET\"",
        "env:E2E_SURELY_MISSING_SECRET\"",
        1,
    );
    let c = check(&text);
    let line = c.assert_problem(
        line_of(&text, "secrets = [\"env:E2E_SURELY_MISSING_SECRET\""),
        "sources.ledger.secrets[0]",
    );
    assert!(
        line.contains("E2E_SURELY_MISSING_SECRET") && line.contains("not set"),
        "{line}"
    );
}

#[test]
fn keys_that_do_not_apply_to_the_provider_are_errors() {
    let text = "\
[server]
listen = \"127.0.0.1:0\"

[sources.ledger]
provider = \"ledger\"
path = \"/webhooks/ledger\"
secrets = [\"env:E2E_LEDGER_SECRET\"]
token = \"env:E2E_LEDIG_TOKEN\"

[sources.ledig]
provider = \"ledig\"
path = \"/webhooks/ledig\"
token = \"env:E2E_LEDIG_TOKEN\"
tolerance = \"5m\"
";
    let c = check(text);
    c.assert_problem(8, "sources.ledger.token");
    c.assert_problem(14, "sources.ledig.tolerance");
}

#[test]
fn unprotected_ledig_source_must_be_declared_and_warns() {
    let base = "\
[server]
listen = \"127.0.0.1:0\"

[sources.ledig]
provider = \"ledig\"
path = \"/webhooks/ledig\"
";
    let c = check(base);
    c.assert_problem(4, "sources.ledig");

    let c = check(&format!("{base}unprotected = true\n"));
    assert_eq!(c.code, Some(0), "stderr:\n{}", c.stderr);
    assert!(
        c.stderr.to_lowercase().contains("warn") && c.stderr.contains("sources.ledig"),
        "a warning naming the source on stderr:\n{}",
        c.stderr
    );
}

/// Secrets written inline with the wrong type (issue 20): `check` refuses each with the file,
/// line and key, and the value appears nowhere in what it prints.
#[test]
fn a_secret_written_with_the_wrong_type_is_never_printed() {
    const SECRET: &str = "whsec_bm90LXRvLWJlLXByaW50ZWQtYW55d2hlcmU=";
    let dir = tempfile::tempdir().expect("temp dir");
    let base = config(&dir.path().join("g.db"), &Settings::default());
    let ledger_secrets = "secrets = [\"env:E2E_LEDGER_SECRET\", \"env:E2E_LEDGER_SECRET_OLD\"]";
    let ledig_token = "token = \"env:E2E_LEDIG_TOKEN\"\ntoken_header";
    let basic =
        "basic_auth = { username = \"env:E2E_LEDIG_USER\", password = \"env:E2E_LEDIG_PASS\" }";
    for (written, line_start, key) in [
        (
            base.replacen(ledger_secrets, &format!("secrets = \"{SECRET}\""), 1),
            "secrets = \"whsec_",
            "sources.ledger.secrets",
        ),
        (
            base.replacen(
                ledig_token,
                &format!("token = {{ value = \"{SECRET}\" }}\ntoken_header"),
                1,
            ),
            "token = { value",
            "sources.ledig.token",
        ),
        (
            base.replacen(
                basic,
                &format!("basic_auth = {{ username = \"ops\", password = [\"{SECRET}\"] }}"),
                1,
            ),
            "basic_auth = { username = \"ops\"",
            "sources.ledig-basic.basic_auth.password",
        ),
        (
            // A syntax error: the parser stops at the unquoted value.
            base.replacen(ledig_token, &format!("token = {SECRET}\ntoken_header"), 1),
            "token = whsec_",
            "sources.ledig.token",
        ),
        (
            format!("{base}\n[admin]\ntoken = [\"{SECRET}\"]\n"),
            "token = [",
            "admin.token",
        ),
    ] {
        assert_ne!(written, base, "{key}: the case changed the config");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &written).expect("write config");
        let out = Command::new(gateway_bin())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .envs(env_vars())
            .output()
            .expect("run gateway check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: stderr:\n{stderr}");
        let checked = Checked {
            code: out.status.code(),
            stderr: stderr.clone().into_owned(),
            path: path.display().to_string(),
        };
        for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(
                !text.contains(SECRET) && !text.contains(&SECRET[6..20]),
                "{key}: the secret is in {what}:\n{text}"
            );
        }
        checked.assert_problem(line_of(&written, line_start), key);
    }
}
