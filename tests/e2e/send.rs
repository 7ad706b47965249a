//! `gateway send` against a running gateway, both real binaries: every built-in sample of both
//! providers is accepted and stored with its type, through each way a source authenticates
//! (either Ledger scheme, a Ledig token in a header or the path, basic auth); `--duplicate`
//! gets the duplicate answer; a wrong secret or token gets 401 and a non-zero exit; `--count`
//! and `--rate` send that many. And the first run: the shipped `config/gateway.toml` passes
//! `gateway check` and routes a sent event through its plugin into the audit file.

use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What one `gateway send` run did.
struct Sent {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Sent {
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The answer lines (`STATUS BODY`), in order.
    fn answers(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .collect()
    }
}

fn run_send(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Sent {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(gateway_bin())
        .arg("send")
        .args(args)
        .current_dir(dir)
        .envs(env_vars())
        .envs(env.iter().copied())
        .output()
        .expect("run gateway send");
    Sent {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// `gateway send` to one source of the harness's gateway, with its config for the credentials.
fn send(gw: &Gateway, source: &str, args: &[&str]) -> Sent {
    let config = gw.dir().join("gateway.toml");
    let url = format!("http://{}/webhooks/{source}", gw.addr);
    let config = config.to_str().expect("UTF-8 path");
    let mut all = vec!["--config", config, "--source", source, "--url", &url];
    all.extend_from_slice(args);
    run_send(gw.dir(), &all, &[])
}

fn list_types() -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let listed = run_send(dir.path(), &["--list"], &[]);
    listed.assert_code(0);
    listed.stdout.lines().map(str::to_owned).collect()
}

fn events_of(gw: &Gateway, source: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM events WHERE source = '{source}'");
    count(&gw.db(), &sql)
}

#[test]
fn every_sample_type_is_accepted_and_stored_with_its_type() {
    let gw = Gateway::start();
    let types = list_types();
    assert_eq!(types.len(), 16 + 7, "{types:?}");
    for stored_type in &types {
        let (source, bare) = match stored_type.split_once('.') {
            Some(("ledger", rest)) => ("ledger", rest),
            Some(("ledig", rest)) => ("ledig", rest),
            _ => panic!("{stored_type} names no provider"),
        };
        // The bare name as the provider spells it, to show both spellings are taken.
        let sent = send(&gw, source, &[bare]);
        sent.assert_code(0);
        assert_eq!(sent.answers(), [r#"200 {"ok":true}"#], "{}", sent.stdout);
        let event = stored_by_type(&gw.db(), source, stored_type);
        assert_eq!(event.envelope["type"], stored_type.as_str());
    }
}

#[test]
fn each_way_of_authenticating_is_followed_from_the_source() {
    let gw = Gateway::start();
    let cases: [(&str, &[&str]); 5] = [
        (
            "ledger",
            &["transaction.completed", "--scheme", "standard-webhooks"],
        ),
        ("ledger-std", &["ledger.card.created"]),
        ("ledig-path", &["crypto_received"]),
        ("ledig-basic", &["admin_funding"]),
        ("ledig-local", &["ledig.crypto_payout_update"]),
    ];
    for (source, args) in cases {
        let sent = send(&gw, source, args);
        sent.assert_code(0);
        assert_eq!(sent.answers(), [r#"200 {"ok":true}"#], "{source}");
        assert_eq!(events_of(&gw, source), 1, "{source}");
    }
    // The token in the path is never printed.
    let sent = send(&gw, "ledig-path", &["crypto_received"]);
    assert!(!sent.stdout.contains(LEDIG_TOKEN), "{}", sent.stdout);
    assert!(
        sent.stdout.contains("/webhooks/ledig-path/<token>"),
        "{}",
        sent.stdout
    );
}

#[test]
fn duplicate_sends_the_same_request_again_and_gets_the_duplicate_answer() {
    let gw = Gateway::start();
    for (source, event_type) in [
        ("ledger", "transaction.created"),
        ("ledig", "crypto_received"),
    ] {
        let sent = send(&gw, source, &[event_type, "--duplicate"]);
        sent.assert_code(0);
        assert_eq!(
            sent.answers(),
            [r#"200 {"ok":true}"#, r#"200 {"ok":true,"duplicate":true}"#],
            "{source}"
        );
        assert_eq!(events_of(&gw, source), 1, "{source}");
    }
    // The same --id across two runs is the same event too.
    for round in 0..2 {
        let sent = send(&gw, "ledger", &["webhook.test", "--id", "demo1"]);
        let expected = if round == 0 {
            r#"200 {"ok":true}"#
        } else {
            r#"200 {"ok":true,"duplicate":true}"#
        };
        assert_eq!(sent.assert_code(0).answers(), [expected]);
    }
}

#[test]
fn a_wrong_secret_or_token_is_refused_with_401_and_a_non_zero_exit() {
    let gw = Gateway::start();
    let wrong = [
        ("E2E_WRONG_SECRET", LEDGER_SECRET_WRONG),
        ("E2E_WRONG_TOKEN", "not-it"),
    ];
    let config = gw.dir().join("gateway.toml");
    let config = config.to_str().expect("UTF-8 path");
    for (source, args) in [
        (
            "ledger",
            ["webhook.test", "--secret", "env:E2E_WRONG_SECRET"],
        ),
        (
            "ledig",
            ["crypto_received", "--token", "env:E2E_WRONG_TOKEN"],
        ),
    ] {
        let url = format!("http://{}/webhooks/{source}", gw.addr);
        let mut all = vec!["--config", config, "--source", source, "--url", &url];
        all.extend_from_slice(&args);
        let sent = run_send(gw.dir(), &all, &wrong);
        sent.assert_code(1);
        let answers = sent.answers();
        assert_eq!(answers.len(), 1, "{}", sent.stdout);
        assert!(
            answers[0].starts_with(r#"401 {"ok":false"#),
            "{}",
            sent.stdout
        );
        assert_eq!(events_of(&gw, source), 0);
    }
    // A literal secret is refused before anything is sent, and not echoed.
    let url = format!("http://{}/webhooks/ledger", gw.addr);
    let literal = "whsec_bGl0ZXJhbC1zZWNyZXQ=";
    let sent = run_send(
        gw.dir(),
        &[
            "webhook.test",
            "--config",
            config,
            "--source",
            "ledger",
            "--url",
            &url,
            "--secret",
            literal,
        ],
        &[],
    );
    sent.assert_code(2);
    assert!(!sent.stderr.contains(literal) && !sent.stdout.contains(literal));
}

#[test]
fn count_and_rate_send_that_many_distinct_events() {
    let gw = Gateway::start();
    let sent = send(&gw, "ledger", &["transaction.completed", "--count", "4"]);
    sent.assert_code(0);
    assert_eq!(sent.answers(), [r#"200 {"ok":true}"#; 4]);
    assert!(sent.stdout.contains("sent 4 request(s)"), "{}", sent.stdout);
    assert_eq!(events_of(&gw, "ledger"), 4);

    let sent = send(
        &gw,
        "ledig",
        &[
            "crypto_received",
            "--count",
            "6",
            "--rate",
            "200/s",
            "--duplicate",
        ],
    );
    sent.assert_code(0);
    let answers = sent.answers();
    assert_eq!(answers.len(), 12, "{}", sent.stdout);
    let duplicates = answers.iter().filter(|a| a.contains("duplicate")).count();
    assert_eq!(duplicates, 6, "{}", sent.stdout);
    assert!(
        sent.stdout.contains("sent 12 request(s)") && sent.stdout.contains("12 x 200"),
        "{}",
        sent.stdout
    );
    assert_eq!(events_of(&gw, "ledig"), 6);
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The demo secrets of the README's run command.
const DEMO_ENV: [(&str, &str); 2] = [
    (
        "LEDGER_SECRET",
        "whsec_ZGVtby1zZWNyZXQtZG8tbm90LXVzZS1pbi1wcm9k",
    ),
    ("LEDIG_TOKEN", "demo-ledig-token"),
];

/// A working directory for the shipped config: its relative `data/` paths land here, and
/// `target` leads to the repository's, where the gateway's build put the plugin.
fn shipped_config_workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(repo_root().join("target"), dir.path().join("target"))
        .expect("link target/");
    dir
}

#[test]
fn the_shipped_config_passes_check_and_routes_a_sent_event_through_its_plugin() {
    let shipped = repo_root().join("config").join("gateway.toml");
    let workdir = shipped_config_workdir();
    let checked = Command::new(gateway_bin())
        .arg("check")
        .arg("--config")
        .arg(&shipped)
        .current_dir(workdir.path())
        .envs(DEMO_ENV)
        .output()
        .expect("run gateway check");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("OK (2 source(s), 1 plugin(s), 1 destination(s), 1 route(s))"),
        "{stdout}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");

    // The shipped file with one change: a free port instead of 8080.
    let text = std::fs::read_to_string(&shipped).expect("read the shipped config");
    let fixed = r#"listen = "127.0.0.1:8080""#;
    assert_eq!(
        text.matches(fixed).count(),
        1,
        "the shipped listen line moved"
    );
    let text = text.replace(fixed, r#"listen = "127.0.0.1:0""#);
    std::fs::write(workdir.path().join("gateway.toml"), text).expect("write config");
    let db = workdir.path().join("data").join("gateway.db");
    let cwd = workdir.path().to_path_buf();
    let gw = Gateway::start_in_with(workdir, db, |c| {
        c.current_dir(&cwd).envs(DEMO_ENV);
    });
    let config = gw.dir().join("gateway.toml");
    let config = config.to_str().expect("UTF-8 path");
    let sends: [(&str, &str); 3] = [
        ("ledig", "crypto_received"),
        ("ledger", "transaction.completed"),
        ("ledger", "webhook.test"),
    ];
    for (source, event_type) in sends {
        let url = format!("http://{}/webhooks/{source}", gw.addr);
        let sent = run_send(
            gw.dir(),
            &[event_type, "--config", config, "--url", &url],
            &DEMO_ENV,
        );
        assert_eq!(sent.assert_code(0).answers(), [r#"200 {"ok":true}"#]);
    }

    let audit = gw.dir().join("data").join("events.jsonl");
    let lines: Vec<Value> = wait_until(&gw, "3 lines in data/events.jsonl", || {
        let text = std::fs::read_to_string(&audit).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        (lines.len() == 3).then_some(lines)
    });
    let of = |original: &str| {
        lines
            .iter()
            .find(|l| l["data"]["original_type"] == original || l["type"] == original)
            .unwrap_or_else(|| panic!("no line for {original}: {lines:?}"))
    };
    // Deposits of both providers became one shape; the test event passed unchanged.
    let ledig = of("ledig.crypto_received");
    assert_eq!(ledig["type"], "payment.received");
    assert_eq!(ledig["data"]["amount"], "150.25");
    assert_eq!(ledig["data"]["currency"], "USDT");
    let ledger = of("ledger.transaction.completed");
    assert_eq!(ledger["type"], "payment.received");
    assert_eq!(ledger["data"]["amount"], "250.00");
    assert_eq!(ledger["data"]["status"], "completed");
    let test = of("ledger.webhook.test");
    assert_eq!(test["data"], serde_json::json!({"message": "hello"}));
}
