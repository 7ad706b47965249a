//! Limits and the documented answers: 413 with and without Content-Length, 408 for a body
//! that does not arrive, 400 + quarantine for authenticated non-JSON, 404, 405, health checks.

use crate::harness::*;
use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

#[test]
fn oversized_body_with_content_length_is_refused_before_reading() {
    let gw = Gateway::start();
    let mut s = connect(&gw);
    // Only the head is sent: the answer must come without the server waiting for the body.
    let head = format!(
        "POST /webhooks/ledger HTTP/1.1\r\nHost: g\r\nContent-Length: {}\r\n{}\r\n",
        1024 * 1024 + 1,
        ""
    );
    s.write_all(head.as_bytes()).expect("write");
    let r = read_response(&mut s);
    r.assert_error(413);
    assert_eq!(r.header("connection"), Some("close"));
    let m = gw.metrics();
    assert!(
        m.contains("gateway_requests_total{outcome=\"too_large\",source=\"ledger\"} 1"),
        "{m}"
    );
}

#[test]
fn oversized_chunked_body_is_refused_at_the_limit() {
    let gw = Gateway::start_with("max_body = \"64KiB\"");
    let mut s = connect(&gw);
    s.write_all(b"POST /webhooks/ledig HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("head");
    let chunk = vec![b'a'; 16 * 1024];
    for _ in 0..5 {
        // 80 KiB in total, never terminated: the server must answer at 64 KiB on its own.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    read_response(&mut s).assert_error(413);
    // A body under the limit on the same source is fine.
    gw.post_ledig(br#"{"event":"crypto_received","data":{"id":"d1","status":"ok"}}"#)
        .assert_accepted();
}

#[test]
fn a_body_that_never_arrives_gets_408() {
    let gw = Gateway::start_with("request_timeout = \"1s\"");
    let mut s = connect(&gw);
    s.write_all(
        b"POST /webhooks/ledig HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n{\"event\"",
    )
    .expect("write");
    let started = Instant::now();
    read_response(&mut s).assert_error(408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn authenticated_non_json_is_quarantined_and_answered_400() {
    let gw = Gateway::start();
    let body = b"not json at all {";
    gw.post_ledger(body).assert_error(400);
    gw.post_ledig(b"<xml/>").assert_error(400);
    // Unauthenticated garbage is refused as unauthorized, not quarantined.
    gw.post("/webhooks/ledig", &[], b"garbage")
        .assert_error(401);
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 2);
    let (raw, reason): (Vec<u8>, String) = db
        .query_row(
            "SELECT raw_body, reason FROM quarantine WHERE source = 'ledger'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("quarantined row");
    assert_eq!(raw, body);
    assert!(reason.contains("not valid JSON"), "{reason}");
}

#[test]
fn unknown_paths_wrong_methods_and_health_checks() {
    let gw = Gateway::start();
    gw.post("/webhooks/nope", &[], b"{}").assert_error(404);
    gw.request("GET", "/", &[], b"").assert_error(404);
    let r = gw.request("GET", "/webhooks/ledger", &[], b"");
    r.assert_error(405);
    assert_eq!(r.header("allow"), Some("POST"));
    gw.request("PUT", "/webhooks/ledig", &[], b"{}")
        .assert_error(405);
    gw.request("POST", "/metrics", &[], b"").assert_error(405);
    let h = gw.request("GET", "/healthz", &[], b"");
    assert_eq!((h.status, h.body.as_str()), (200, r#"{"ok":true}"#));
    let r = gw.request("GET", "/readyz", &[], b"");
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"ok":true}"#));
}
