//! Limits and the documented answers off the happy path: 413 for a body past `max_body` with
//! `Content-Length` (answered without waiting for the body) and without it (chunked, cut off at
//! the limit), a body of exactly `max_body` accepted; 408 for a body that never arrives; a
//! connection whose headers never finish is cut off after `header_timeout`; 400 plus a
//! quarantine row for an authenticated body that is not JSON (unauthenticated garbage is a 401
//! and not kept); 404 for an unknown path, 405 for a wrong method; health checks.

use crate::harness::*;
use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn small_body_gateway() -> Gateway {
    Gateway::start_with(&Settings {
        max_body: "64KiB",
        ..Settings::default()
    })
}

fn nothing_stored(gw: &Gateway) {
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 0);
}

#[test]
fn oversized_content_length_is_refused_without_reading_the_body() {
    let gw = Gateway::start();
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    // Only the head: the answer must come without the server waiting for 1 MiB + 1 bytes.
    let head = format!(
        "POST /webhooks/ledger HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        1024 * 1024 + 1
    );
    s.write_all(head.as_bytes()).expect("write head");
    read_response(&mut s).assert_error(413);
    nothing_stored(&gw);
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="too_large",source="ledger"}"#
        ),
        1.0
    );
}

/// A signed Ledger body of exactly `len` bytes (padding inside `data`).
fn ledger_body_of(len: usize, id: &str) -> Vec<u8> {
    let frame = format!(
        r#"{{"id":"{id}","type":"webhook.test","createdAt":1763856000000,"data":{{"message":"hello","pad":""}}}}"#
    );
    let pad = "x".repeat(len - frame.len());
    let body = frame.replace(r#""pad":"""#, &format!(r#""pad":"{pad}""#));
    assert_eq!(body.len(), len);
    body.into_bytes()
}

#[test]
fn max_body_is_inclusive() {
    let gw = small_body_gateway();
    gw.post_ledger(&ledger_body_of(64 * 1024, "evt_exact"))
        .assert_accepted();
    gw.post_ledger(&ledger_body_of(64 * 1024 + 1, "evt_over"))
        .assert_error(413);
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 1);
    stored(&db, "ledger", "evt_exact");
}

#[test]
fn oversized_chunked_body_is_refused_at_the_limit() {
    let gw = small_body_gateway();
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.write_all(
        b"POST /webhooks/ledig HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
          X-Ledig-Token: ledig-e2e-token-8c1f\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .expect("write head");
    // 80 KiB in 16 KiB chunks, never terminated: the server must answer at 64 KiB on its own.
    // Writes may fail once the server has answered and closed: that is allowed.
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        let sent = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| s.write_all(&chunk))
            .and_then(|()| s.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    read_response(&mut s).assert_error(413);
    nothing_stored(&gw);
    // A small chunked body on the same source is fine.
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    let body = br#"{"event":"crypto_received","data":{"id":"d1","status":"completed"}}"#;
    let mut req = format!(
        "POST /webhooks/ledig HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\
         X-Ledig-Token: {LEDIG_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    s.write_all(&req).expect("write chunked request");
    read_response(&mut s).assert_accepted();
    stored_with_prefix(&gw.db(), "ledig", &ledig_id_prefix("crypto_received", "d1"));
}

#[test]
fn a_body_that_never_arrives_gets_408() {
    let gw = Gateway::start_with(&Settings {
        request_timeout: "1s",
        ..Settings::default()
    });
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    let started = Instant::now();
    s.write_all(
        format!(
            "POST /webhooks/ledig HTTP/1.1\r\nHost: g\r\nX-Ledig-Token: {LEDIG_TOKEN}\r\n\
             Content-Length: 100\r\n\r\n{{\"event\""
        )
        .as_bytes(),
    )
    .expect("write");
    read_response(&mut s).assert_error(408);
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "408 after {waited:?}, request_timeout is 1s"
    );
    nothing_stored(&gw);
}

#[test]
fn headers_that_never_finish_are_cut_off() {
    let gw = Gateway::start_with(&Settings {
        header_timeout: "1s",
        ..Settings::default()
    });
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    let started = Instant::now();
    s.write_all(b"POST /webhooks/ledig HTTP/1.1\r\nHost: g\r\nX-Slow")
        .expect("write");
    s.set_read_timeout(Some(PATIENCE))
        .expect("set read timeout");
    let mut raw = Vec::new();
    // The server may answer 408 or just close; either way it must not wait for us.
    let _ = std::io::Read::read_to_end(&mut s, &mut raw);
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "connection closed after {waited:?}, header_timeout is 1s"
    );
    if !raw.is_empty() {
        let r = parse_response(&raw).expect("a complete answer if any");
        assert_eq!(r.status, 408, "{}", r.body);
    }
    // The server still serves everyone else.
    assert_eq!(gw.get("/healthz").status, 200);
}

#[test]
fn authenticated_non_json_is_quarantined_and_answered_400() {
    let gw = Gateway::start();
    let body = b"not json";
    let signature = ledger_signature(LEDGER_SECRET, now(), body);
    let before = now_ms();
    gw.post(
        "/webhooks/ledger",
        &[("X-Ledger-Signature", signature.clone())],
        body,
    )
    .assert_error(400);
    gw.post_ledig(b"<xml/>").assert_error(400);
    let after = now_ms();
    // Unauthenticated garbage is refused as unauthorized, and not kept.
    gw.post("/webhooks/ledig", &[], b"garbage")
        .assert_error(401);
    gw.post("/webhooks/ledger", &[], b"garbage")
        .assert_error(401);

    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 2);
    let (raw, reason, headers, at): (Vec<u8>, String, String, i64) = db
        .query_row(
            "SELECT raw_body, reason, headers, received_at FROM quarantine \
             WHERE source = 'ledger'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("the Ledger body is quarantined");
    assert_eq!(raw, body);
    assert!(!reason.trim().is_empty(), "a reason is recorded");
    let headers: serde_json::Value = serde_json::from_str(&headers).expect("headers are JSON");
    assert_eq!(headers["x-ledger-signature"], signature);
    assert!((before..=after).contains(&at), "received_at {at}");
    let raw: Vec<u8> = db
        .query_row(
            "SELECT raw_body FROM quarantine WHERE source = 'ledig'",
            [],
            |r| r.get(0),
        )
        .expect("the Ledig body is quarantined");
    assert_eq!(raw, b"<xml/>");
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="malformed",source="ledger"}"#
        ),
        1.0
    );
}

#[test]
fn unknown_paths_wrong_methods_and_health_checks() {
    let gw = Gateway::start();
    gw.post("/webhooks/nope", &[], b"{}").assert_error(404);
    gw.post("/webhooks", &[], b"{}").assert_error(404);
    gw.get("/").assert_error(404);
    let r = gw.get("/webhooks/ledger");
    r.assert_error(405);
    // RFC 9110 §15.5.6: a 405 must say which methods are allowed.
    assert_eq!(r.header("allow"), Some("POST"), "{:?}", r.headers);
    gw.get("/webhooks/ledig").assert_error(405);
    gw.request("PUT", "/webhooks/ledig", &[], b"{}")
        .assert_error(405);
    nothing_stored(&gw);

    assert_eq!(gw.get("/healthz").status, 200);
    assert_eq!(gw.get("/readyz").status, 200);
}
