//! What a client that cannot authenticate, or many clients at once, can make the gateway hold:
//! a delivery refused by its headers (a wrong Ledig token, a stale Ledger timestamp, no
//! signature header) is answered 401 before its body is sent, so no body memory is spent on it;
//! request bodies in memory across all requests are capped by `server.max_body_buffer` (past
//! it: 503 + `Retry-After`, counted, and genuine requests succeed again once the holders are
//! gone); open connections are capped by `server.max_connections` (past it the next one waits,
//! unanswered, until one closes).

use crate::harness::*;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The standard config with `server_extra` added to `[server]`.
fn start_with_server(settings: &Settings, server_extra: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let text = config_with_server(&db, settings, server_extra);
    std::fs::write(dir.path().join("gateway.toml"), text).expect("write config");
    Gateway::start_in(dir, db)
}

/// A request head declaring a body of `declared` bytes, and the connection it was sent on.
fn send_head(gw: &Gateway, path: &str, headers: &[(&str, String)], declared: usize) -> TcpStream {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nContent-Length: {declared}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(gw.addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("send the head");
    stream
}

/// A `X-Ledger-Signature` that reads well and is current, but is no one's signature: what
/// anyone without the secret can send.
fn made_up_signature() -> String {
    format!("t={},v1={}", now(), "ab".repeat(32))
}

/// (case, path, headers, the error answered).
type RefusedHead<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, &'a str);

#[test]
fn deliveries_refused_by_their_headers_are_answered_before_the_body_is_sent() {
    // A long request timeout: without the early refusal, the answer would wait for it (408).
    let gw = Gateway::start_with(&Settings {
        request_timeout: "20s",
        ..Settings::default()
    });
    let ledig_token = |t: &str| vec![("X-Ledig-Token", t.to_owned())];
    let stale_standard = standard_headers("webhook", LEDGER_SECRET, "msg_1", now() + 3600, b"{}");
    let cases: Vec<RefusedHead> = vec![
        (
            "wrong Ledig token",
            "/webhooks/ledig",
            ledig_token("wrong"),
            "invalid token",
        ),
        ("no Ledig token", "/webhooks/ledig", vec![], "missing token"),
        (
            "Ledig address not allowed",
            "/webhooks/ledig-remote-only",
            vec![],
            "client address not allowed",
        ),
        (
            "wrong basic auth",
            "/webhooks/ledig-basic",
            vec![("Authorization", "Basic b3BzOm5vcGU=".into())],
            "invalid basic auth credentials",
        ),
        (
            "no signature header",
            "/webhooks/ledger",
            vec![],
            "missing signature headers",
        ),
        (
            "stale Ledger timestamp",
            "/webhooks/ledger",
            vec![(
                "X-Ledger-Signature",
                format!("t={},v1={}", now() - 3600, "ab".repeat(32)),
            )],
            "signature timestamp outside the tolerance window",
        ),
        (
            "malformed signature header",
            "/webhooks/ledger",
            vec![("X-Ledger-Signature", "v1=00".into())],
            "malformed signature header: signature header has no timestamp",
        ),
        (
            "stale Standard Webhooks timestamp",
            "/webhooks/ledger-std",
            borrowed(&stale_standard),
            "signature timestamp outside the tolerance window",
        ),
    ];
    for (case, path, headers, error) in &cases {
        let started = Instant::now();
        let mut stream = send_head(&gw, path, headers, 1_000_000);
        let r = read_response(&mut stream);
        let took = started.elapsed();
        r.assert_error(401);
        assert_eq!(r.json()["error"], *error, "{case}");
        assert_eq!(
            r.header("connection"),
            Some("close"),
            "{case}: the body was never read"
        );
        assert!(
            took < Duration::from_secs(10),
            "{case}: answered after {took:?}"
        );
    }
    let m = gw.metrics();
    for (source, n) in [
        ("ledig", 2.0),
        ("ledig-remote-only", 1.0),
        ("ledig-basic", 1.0),
        ("ledger", 3.0),
        ("ledger-std", 1.0),
    ] {
        let series =
            format!(r#"gateway_requests_total{{outcome="unauthorized",source="{source}"}}"#);
        assert_eq!(metric(&m, &series), n, "{series}");
    }
    assert_eq!(metric(&m, "gateway_body_buffer_bytes"), 0.0);
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 0);

    // A genuine delivery passes the head check: its body, sent after the head, is read.
    let body = br#"{"id":"evt_after_head","type":"webhook.test","data":{}}"#;
    let mut stream = send_head(
        &gw,
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET, now(), body),
        body.len(),
    );
    stream.write_all(body).expect("send the body");
    read_response(&mut stream).assert_accepted();
    let mut stream = send_head(
        &gw,
        "/webhooks/ledig",
        &ledig_token(LEDIG_TOKEN),
        body.len(),
    );
    stream.write_all(body).expect("send the body");
    read_response(&mut stream).assert_accepted();
}

/// A client that sent a head and part of a body and stalls.
fn stalled_body(gw: &Gateway, declared: usize, sent: usize) -> TcpStream {
    let headers = [("X-Ledger-Signature", made_up_signature())];
    let mut stream = send_head(gw, "/webhooks/ledger", &headers, declared);
    stream
        .write_all(&vec![b' '; sent])
        .expect("send part of the body");
    stream
}

fn ledger_body(len: usize, id: &str) -> Vec<u8> {
    let mut body = format!(r#"{{"id":"{id}","type":"webhook.test","data":{{"pad":""#).into_bytes();
    body.resize(len - 3, b'x');
    body.extend_from_slice(br#""}}"#);
    body
}

#[test]
fn request_bodies_in_memory_are_capped_and_requests_past_the_cap_are_told_to_retry() {
    let gw = start_with_server(
        &Settings {
            max_body: "64KiB",
            ..Settings::default()
        },
        "max_body_buffer = \"128KiB\"",
    );
    // Two clients hold 50,000 bytes each of bodies they never finish (anyone can: the
    // signature header reads well, it is checked when the body is complete).
    let holders: Vec<TcpStream> = (0..2).map(|_| stalled_body(&gw, 60_000, 50_000)).collect();
    wait_until(&gw, "the held bodies are in memory", || {
        (metric(&gw.metrics(), "gateway_body_buffer_bytes") == 100_000.0).then_some(())
    });

    // 40,000 more do not fit in 131,072: refused from the declared length, before the body is
    // sent...
    let body = ledger_body(40_000, "evt_busy");
    let headers = ledger_headers(LEDGER_SECRET, now(), &body);
    let r = read_response(&mut send_head(
        &gw,
        "/webhooks/ledger",
        &headers,
        body.len(),
    ));
    r.assert_error(503);
    assert_eq!(
        r.json()["error"],
        "server busy: request bodies in memory at the limit, retry later"
    );
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.header("connection"), Some("close"));
    // ...and refused where the budget ends when chunked (no length to judge by).
    let mut stream = TcpStream::connect(gw.addr).expect("connect");
    let mut chunked =
        b"POST /webhooks/ledger HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n".to_vec();
    for (k, v) in ledger_headers(LEDGER_SECRET, now(), &body) {
        chunked.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    chunked.extend_from_slice(b"\r\n");
    for part in body.chunks(4096) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // The gateway may close while we still write: its answer is what counts.
    let _ = stream.write_all(&chunked);
    let r = read_response(&mut stream);
    r.assert_error(503);
    assert_eq!(r.header("retry-after"), Some("5"));

    let m = gw.metrics();
    assert_eq!(
        metric(&m, r#"gateway_limit_reached_total{limit="body_buffer"}"#),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="overloaded",source="ledger"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(&m, "gateway_body_buffer_bytes"),
        100_000.0,
        "the refused gave theirs back"
    );
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 0);
    assert!(
        !gw.log_lines("request bodies in memory at server.max_body_buffer")
            .is_empty(),
        "{}",
        gw.stderr()
    );

    // Once the holders are gone, the same delivery is accepted.
    drop(holders);
    wait_until(&gw, "the held bodies are let go", || {
        (metric(&gw.metrics(), "gateway_body_buffer_bytes") == 0.0).then_some(())
    });
    gw.post(
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET, now(), &body),
        &body,
    )
    .assert_accepted();
    stored(&gw.db(), "ledger", "evt_busy");
}

#[test]
fn at_the_connection_cap_the_next_connection_waits_until_one_closes() {
    let gw = start_with_server(
        &Settings {
            header_timeout: "30s",
            ..Settings::default()
        },
        "max_connections = 4",
    );
    // Three idle connections; the fourth is each /metrics request.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(gw.addr).expect("connect"))
        .collect();
    wait_until(&gw, "the idle connections are served", || {
        (metric(&gw.metrics(), "gateway_open_connections") == 4.0).then_some(())
    });
    // The fourth slot taken by an idle connection, a genuine delivery on a fifth waits.
    idle.push(TcpStream::connect(gw.addr).expect("connect"));
    let body = br#"{"id":"evt_after_cap","type":"webhook.test","data":{}}"#;
    let mut waiting = TcpStream::connect(gw.addr).expect("the kernel still queues it");
    waiting
        .write_all(&request_bytes(
            "POST",
            "/webhooks/ledger",
            &ledger_headers(LEDGER_SECRET, now(), body),
            body,
        ))
        .expect("send the request");
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    match waiting.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("answered at the cap: {other:?}"),
    }
    // One closes: the waiting one is served.
    drop(idle.remove(0));
    read_response(&mut waiting).assert_accepted();
    drop(idle);
    let m = wait_until(&gw, "the idle connections are gone", || {
        let m = gw.metrics();
        (metric(&m, "gateway_open_connections") == 1.0).then_some(m)
    });
    // At least this wait (the idle connection before it may have waited a moment too, for
    // the slot of a /metrics request that had just closed).
    assert!(metric(&m, r#"gateway_limit_reached_total{limit="connections"}"#) >= 1.0);
    assert!(
        !gw.log_lines("connection cap reached").is_empty(),
        "{}",
        gw.stderr()
    );
}
