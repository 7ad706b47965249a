//! Body bombs: a 1 GiB body, with `Content-Length` and chunked without it, is refused 413 at the
//! limit while the gateway's memory stays flat and the sender is stopped after a few MiB (the
//! server reads no further than `max_body`); a compressed body (gzip, deflate: a 10 MB zero
//! bomb in a few KB) is refused 415 from its headers, before it is read, authenticated or
//! inflated, so nothing is stored or quarantined; `Content-Encoding: identity` is accepted.
//!
//! The 1 GiB is generated on the fly from one 64 KiB block; the test never holds it.

use crate::harness::*;
use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// How much the gateway's peak RSS may grow while it refuses a 1 GiB body. Its `max_body` is
/// 1 MiB; buffering the body would add 1 GiB.
const MAX_RSS_GROWTH: u64 = 64 * MIB;
/// How many bytes the sender may get into the connection before it is stopped: `max_body`
/// plus the kernel's socket buffers on both sides (a few MiB on loopback).
const MAX_BYTES_SENT: u64 = 64 * MIB;
/// A refusal that comes "at the limit" takes milliseconds; sending 1 GiB takes seconds. Loose,
/// because the suite shares two cores with the other tests.
const MAX_BOMB_TIME: Duration = Duration::from_secs(10);

/// Peak (`VmHWM`) and current (`VmRSS`) resident memory of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn nothing_kept(gw: &Gateway) {
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 0);
}

/// What a bomb sender saw.
#[derive(Debug)]
struct Sent {
    /// Body bytes (with chunk framing) the kernel took before the connection was closed.
    bytes: u64,
    elapsed: Duration,
    response: Response,
}

/// Writes `head`, then up to 1 GiB of body (`chunked`: as 64 KiB chunks, never terminated)
/// until a write fails because the server answered and closed; then reads the answer, which
/// is already in the receive buffer.
fn send_bomb(gw: &Gateway, head: &str, chunked: bool) -> Sent {
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    // A server that neither reads nor closes would block the writer for ever.
    s.set_write_timeout(Some(PATIENCE))
        .expect("set write timeout");
    let started = Instant::now();
    s.write_all(head.as_bytes()).expect("write the head");
    let data = vec![b'0'; 64 * 1024];
    let block = if chunked {
        let mut b = format!("{:x}\r\n", data.len()).into_bytes();
        b.extend_from_slice(&data);
        b.extend_from_slice(b"\r\n");
        b
    } else {
        data
    };
    let mut bytes = 0u64;
    let mut at = 0usize;
    while bytes < GIB {
        match s.write(&block[at..]) {
            Ok(0) => break,
            Ok(n) => {
                bytes += n as u64;
                at = (at + n) % block.len();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EPIPE / ECONNRESET once the server has answered and closed: the expected end.
            Err(_) => break,
        }
    }
    let response = read_response(&mut s);
    Sent {
        bytes,
        elapsed: started.elapsed(),
        response,
    }
}

fn assert_refused_flat(label: &str, head: &str, chunked: bool) {
    let gw = Gateway::start();
    // One ordinary request first, so whatever the first request allocates is in the baseline.
    gw.post_ledger(br#"{"id":"evt_warm","type":"webhook.test","data":{}}"#)
        .assert_accepted();
    let (peak_before, rss_before) = memory(gw.pid());
    let sent = send_bomb(&gw, head, chunked);
    let (peak_after, rss_after) = memory(gw.pid());
    eprintln!(
        "{label}: 413 after {:?}, {:.1} MiB sent of 1024; gateway VmHWM {:.1} -> {:.1} MiB, \
         VmRSS {:.1} -> {:.1} MiB",
        sent.elapsed,
        sent.bytes as f64 / MIB as f64,
        peak_before as f64 / MIB as f64,
        peak_after as f64 / MIB as f64,
        rss_before as f64 / MIB as f64,
        rss_after as f64 / MIB as f64,
    );
    sent.response.assert_error(413);
    assert_eq!(
        sent.response.json()["error"],
        "body exceeds 1048576 bytes",
        "{label}"
    );
    assert!(
        sent.bytes < MAX_BYTES_SENT,
        "{label}: the gateway took {} bytes of a 1 GiB body; it should stop at max_body",
        sent.bytes
    );
    assert!(
        sent.elapsed < MAX_BOMB_TIME,
        "{label}: refusing took {:?}",
        sent.elapsed
    );
    assert!(
        peak_after.saturating_sub(peak_before) < MAX_RSS_GROWTH,
        "{label}: peak RSS grew from {peak_before} to {peak_after} bytes"
    );
    let db = gw.db();
    assert_eq!(
        count(&db, "SELECT count(*) FROM events"),
        1,
        "only the warm-up"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 0);
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="too_large",source="ledger"}"#
        ),
        1.0
    );
    // The gateway still serves.
    gw.post_ledger(br#"{"id":"evt_after","type":"webhook.test","data":{}}"#)
        .assert_accepted();
}

#[test]
fn a_gibibyte_with_content_length_is_refused_at_once_and_memory_stays_flat() {
    assert_refused_flat(
        "1 GiB with Content-Length",
        &format!(
            "POST /webhooks/ledger HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
             Content-Length: {GIB}\r\n\r\n"
        ),
        false,
    );
}

#[test]
fn a_chunked_gibibyte_is_cut_off_at_the_limit_and_memory_stays_flat() {
    // A signature header that reads well and is current (anyone can send one): without it the
    // request is refused from its headers, before the body is read.
    assert_refused_flat(
        "1 GiB chunked",
        &format!(
            "POST /webhooks/ledger HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
             X-Ledger-Signature: t={},v1={}\r\nTransfer-Encoding: chunked\r\n\r\n",
            now(),
            "ab".repeat(32)
        ),
        true,
    );
}

/// 10 MB of zeros, compressed by `encoder` (to about 10 KB).
fn zero_bomb<W: std::io::Write>(mut encoder: W) -> W {
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..10 {
        encoder.write_all(&zeros).expect("compress");
    }
    encoder
}

#[test]
fn compressed_bodies_are_refused_415_before_they_are_read_or_authenticated() {
    use flate2::Compression;
    let gw = Gateway::start();
    let gzip = zero_bomb(flate2::write::GzEncoder::new(
        Vec::new(),
        Compression::best(),
    ))
    .finish()
    .expect("gzip");
    // HTTP's `deflate` is the zlib format (RFC 9110 §8.4.1.2).
    let deflate = zero_bomb(flate2::write::ZlibEncoder::new(
        Vec::new(),
        Compression::best(),
    ))
    .finish()
    .expect("deflate");
    assert!(gzip.len() < 64 * 1024 && deflate.len() < 64 * 1024);

    // Correctly signed over the compressed bytes, as a provider that compressed would sign.
    for (coding, body) in [
        ("gzip", &gzip),
        ("deflate", &deflate),
        ("x-gzip", &gzip),
        ("identity, gzip", &gzip),
    ] {
        let mut headers = ledger_headers(LEDGER_SECRET, now(), body);
        headers.push(("Content-Encoding", coding.to_owned()));
        let r = gw.post("/webhooks/ledger", &headers, body);
        r.assert_error(415);
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        let named = coding.trim_start_matches("identity, ");
        assert!(
            error.contains(named) && error.contains("uncompressed"),
            "{coding}: {error}"
        );
        assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
    }

    // Refused from the headers alone: only the head is sent, and the answer still comes.
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    let head = format!(
        "POST /webhooks/ledger HTTP/1.1\r\nHost: g\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\nX-Ledger-Signature: {}\r\n\r\n",
        gzip.len(),
        ledger_signature(LEDGER_SECRET, now(), &gzip)
    );
    s.write_all(head.as_bytes()).expect("write the head");
    read_response(&mut s).assert_error(415);

    // A transfer coding other than chunked is refused the same way (HTTP removes only the
    // chunked framing; the gzip inside would reach authentication), also from the head alone:
    // the server answers and closes before the first chunk, so writing it could only race
    // the close (EPIPE) without proving anything more.
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    let head = format!(
        "POST /webhooks/ledger HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n\
         X-Ledger-Signature: {}\r\n\r\n",
        ledger_signature(LEDGER_SECRET, now(), &gzip),
    );
    s.write_all(head.as_bytes()).expect("write the head");
    let r = read_response(&mut s);
    r.assert_error(415);
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("Transfer-Encoding") && error.contains("gzip"),
        "{error}"
    );

    // Before authentication: a bad signature on a compressed body is a 415 too, not a 401.
    let mut headers = ledger_headers(LEDGER_SECRET_WRONG, now(), &gzip);
    headers.push(("Content-Encoding", "br".to_owned()));
    gw.post("/webhooks/ledger", &headers, &gzip)
        .assert_error(415);
    nothing_kept(&gw);
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="unsupported_encoding",source="ledger"}"#
        ),
        7.0
    );
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="unauthorized",source="ledger"}"#
        ),
        0.0
    );

    // `identity` is no coding at all: accepted as usual.
    let body = br#"{"id":"evt_identity","type":"webhook.test","data":{}}"#;
    let mut headers = ledger_headers(LEDGER_SECRET, now(), body);
    headers.push(("Content-Encoding", "identity".to_owned()));
    gw.post("/webhooks/ledger", &headers, body)
        .assert_accepted();
    stored(&gw.db(), "ledger", "evt_identity");
}
