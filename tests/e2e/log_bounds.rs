//! The log cannot be flooded or blown up from outside: 2,000 refused requests write a few lines
//! and a summary of how many were left out (the metric counts all 2,000), and an authenticated
//! Ledig body whose unknown field names are huge writes one short line.

use crate::harness::*;
use std::time::Instant;

/// The refusal lines written in full, and the count the summary lines say they left out.
fn refusal_lines(gw: &Gateway) -> (Vec<String>, u64) {
    let lines = gw.log_lines("webhook rejected: not authenticated");
    let (summaries, written): (Vec<String>, Vec<String>) =
        lines.into_iter().partition(|l| l.contains("suppressed="));
    let suppressed = summaries
        .iter()
        .map(|l| {
            l.split("suppressed=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a count in {l}"))
        })
        .sum();
    (written, suppressed)
}

#[test]
fn two_thousand_refused_requests_write_a_few_lines_and_a_summary_and_are_all_counted() {
    const REFUSED: u64 = 2_000;
    let gw = Gateway::start();
    let body = fixture("ledig/crypto_received.json");
    let wrong = [("X-Ledig-Token", "wrong".to_owned())];
    let started = Instant::now();
    for _ in 0..REFUSED {
        assert_eq!(gw.post("/webhooks/ledig", &wrong, &body).status, 401);
    }
    let took = started.elapsed();
    let m = gw.metrics();
    #[allow(clippy::cast_precision_loss)] // 2,000
    let all = REFUSED as f64;
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="unauthorized",source="ledig"}"#
        ),
        all
    );
    // At most 5 lines per 10 s window (plus one window begun while they were sent).
    let windows = took.as_secs() / 10 + 2;
    let (written, _) = refusal_lines(&gw);
    assert!(
        (1..=5 * windows).contains(&u64::try_from(written.len()).expect("few")),
        "{} lines for {REFUSED} refusals in {took:?}:\n{}",
        written.len(),
        gw.stderr()
    );
    // Once the window ends, a summary says how many were left out: none goes unaccounted.
    let (written, suppressed) = wait_until(&gw, "the summary of the suppressed lines", || {
        let (written, suppressed) = refusal_lines(&gw);
        (written.len() as u64 + suppressed == REFUSED).then_some((written, suppressed))
    });
    eprintln!(
        "{REFUSED} refusals in {took:?}: {} lines written, {suppressed} summarized",
        written.len()
    );
    let summary = gw.log_lines("suppressed=");
    assert!(
        summary
            .iter()
            .all(|l| l.contains(r#"reason="invalid token""#) || l.contains("reason=invalid token")),
        "{summary:#?}"
    );
    assert!(
        gw.stderr().lines().all(|l| l.len() < 1024),
        "{}",
        gw.stderr()
    );
}

#[test]
fn huge_unknown_field_names_in_an_authenticated_ledig_body_make_one_short_line() {
    let gw = Gateway::start();
    // 15 unknown fields of 60,000-character names: ~900 KB, under max_body.
    let mut data = serde_json::Map::new();
    data.insert("id".into(), "dep_huge_names".into());
    data.insert("status".into(), "completed".into());
    for i in 0..15 {
        data.insert(format!("{i:02}{}", "n".repeat(60_000)), i.into());
    }
    let body = serde_json::json!({"event": "crypto_received", "data": data}).to_string();
    assert!(
        body.len() > 900_000 && body.len() < 1024 * 1024,
        "{}",
        body.len()
    );
    gw.post_ledig(body.as_bytes()).assert_accepted();

    let lines = gw.log_lines("fields the provider's docs do not list");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    eprintln!(
        "a {}-byte body wrote a {}-byte line",
        body.len(),
        line.len()
    );
    assert!(
        line.len() < 4096,
        "a {}-byte line: {}…",
        line.len(),
        &line[..300]
    );
    assert!(line.contains("count=15"), "{line}");
    assert!(line.contains("…(+"), "the cut is said: {line}");
    assert_eq!(
        metric(
            &gw.metrics(),
            r#"gateway_unknown_fields_total{source="ledig"}"#
        ),
        15.0
    );
    // The names are kept whole where they belong: in the stored event.
    let row = gw
        .db()
        .query_row("SELECT length(raw_body) FROM events", [], |r| {
            r.get::<_, i64>(0)
        });
    assert_eq!(
        row.expect("one event"),
        i64::try_from(body.len()).expect("fits")
    );
}

/// Out of file descriptors, the accept loop fails every 50 ms for as long as it lasts: it
/// writes a few lines and then a summary per interval, not 20 lines a second, and serves the
/// waiting connection once descriptors are back.
#[test]
fn a_failing_accept_loop_writes_a_few_lines_and_a_summary_then_recovers() {
    use std::io::Write as _;
    let gw = Gateway::start();
    let nofile = |limit: &str| {
        let out = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(gw.pid().to_string())
            .arg(format!("--nofile={limit}"))
            .output()
            .expect("prlimit (util-linux) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let hard = std::fs::read_to_string(format!("/proc/{}/limits", gw.pid()))
        .expect("limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .expect("a hard limit");
    // No descriptor to spare (0-2 are stdin, stdout and stderr, and stay open): every accept
    // fails with EMFILE, again and again, while a connection waits in the kernel's queue.
    nofile(&format!("3:{hard}"));
    let started = std::time::Instant::now();
    let mut waiting = std::net::TcpStream::connect(gw.addr).expect("the kernel queues it");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
        .expect("send");
    let summary = wait_until(&gw, "a summary of the failed accepts", || {
        gw.log_lines("similar log lines suppressed")
            .into_iter()
            .find(|l| l.contains(r#"what="accept failed""#))
    });
    let failing = started.elapsed();
    let written: Vec<String> = gw
        .log_lines("accept failed")
        .into_iter()
        .filter(|l| !l.contains("suppressed="))
        .collect();
    eprintln!(
        "accepts failing for {failing:?}: {} lines, then {summary}",
        written.len()
    );
    let windows = failing.as_secs() / 10 + 2;
    assert!(
        (1..=5 * windows).contains(&u64::try_from(written.len()).expect("few")),
        "{} lines in {failing:?}:\n{}",
        written.len(),
        gw.stderr()
    );
    assert!(
        written.iter().all(|l| l.contains("os error 24")),
        "{written:#?}"
    );

    nofile(&format!("{hard}:{hard}"));
    assert_eq!(
        read_response(&mut waiting).status,
        200,
        "served once descriptors are back"
    );
    assert_eq!(gw.get("/healthz").status, 200);
}
