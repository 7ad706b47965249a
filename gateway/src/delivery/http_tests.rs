//! HTTP destination tests against real sockets: a small hyper server (or a raw TCP listener
//! for misbehaving peers) on 127.0.0.1:0.
#![allow(
    clippy::disallowed_methods,
    reason = "the test receivers read whole bodies the gateway sent them"
)]

use super::*;
use crate::config::{Backoff, HttpDestinationSettings, Secret};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const KEY: &[u8] = b"test-signing-key-do-not-leak-0123";
const ENVELOPE: &str =
    r#"{"specversion":"1.0", "id":"evt_1","data":{"amount":"12.50","note":"café ☕"}}"#;

fn destination(url: &str, timeout: Duration, concurrency: usize) -> Destination {
    destination_with(url, timeout, concurrency, true)
}

fn destination_with(
    url: &str,
    timeout: Duration,
    concurrency: usize,
    allow_private_network: bool,
) -> Destination {
    let settings = DestinationSettings {
        name: "books".into(),
        kind: DestinationKind::Http(HttpDestinationSettings {
            url: url.parse().expect("test URL"),
            signing_key: Secret::new(KEY.to_vec()),
            timeout,
            allow_private_network,
        }),
        max_attempts: 5,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
        concurrency,
        ordering: None,
    };
    Destination::new(&settings).expect("http destination")
}

fn outgoing() -> Outgoing<'static> {
    Outgoing {
        webhook_id: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        envelope_json: ENVELOPE,
    }
}

fn assert_no_secret(report: &AttemptReport) {
    let key = String::from_utf8_lossy(KEY);
    if let Some(error) = &report.error {
        assert!(!error.contains(key.as_ref()), "{error}");
    }
}

/// One request as the test server saw it.
#[derive(Debug)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicUsize,
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// A hyper server answering every request with `respond(request number)`.
async fn serve<F, Fut>(respond: F) -> (SocketAddr, Arc<Counters>)
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counters = Arc::new(Counters::default());
    let shared = Arc::clone(&counters);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let (shared, respond) = (Arc::clone(&shared), respond.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (shared, respond) = (Arc::clone(&shared), respond.clone());
                async move {
                    let n = shared.requests.fetch_add(1, Ordering::SeqCst);
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if let Ok(mut seen) = shared.seen.lock() {
                        seen.push(Seen {
                            headers: parts.headers,
                            body,
                        });
                    }
                    Ok::<_, Infallible>(respond(n).await)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, counters)
}

fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("response")
}

/// HMAC-SHA256 straight from RFC 2104 on top of SHA-256, sharing no code with `Signer`.
fn hmac_by_hand(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[test]
fn hand_rolled_hmac_matches_the_standard_webhooks_vector() {
    let key = base64::engine::general_purpose::STANDARD
        .decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .expect("key");
    let message = br#"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk.1649367553.{"email":"test@example.com","username":"test_user"}"#;
    let tag = base64::engine::general_purpose::STANDARD.encode(hmac_by_hand(&key, message));
    assert_eq!(tag, "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}

#[tokio::test]
async fn delivered_post_is_signed_with_standard_webhooks_headers() {
    let (addr, counters) = serve(|_| async { answer(200, &[], "ok") }).await;
    let dest = destination(&format!("http://{addr}/events"), Duration::from_secs(5), 1);
    let report = dest.attempt(&outgoing()).await;
    assert_eq!(report.verdict, AttemptVerdict::Delivered, "{report:?}");
    assert_eq!(
        (report.status, report.error, report.retry_after),
        (Some(200), None, None)
    );

    let seen = counters.seen.lock().expect("lock");
    let [request] = seen.as_slice() else {
        panic!("expected one request, got {}", seen.len());
    };
    assert_eq!(
        request.body,
        ENVELOPE.as_bytes(),
        "body is sent byte-for-byte"
    );
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/cloudevents+json");
    assert_eq!(
        header("user-agent"),
        concat!("webhook-gateway/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(header("webhook-id"), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W");
    let timestamp: u64 = header("webhook-timestamp").parse().expect("unix seconds");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(now.abs_diff(timestamp) <= 5, "{timestamp} vs {now}");

    let signature = header("webhook-signature");
    let tag = signature.strip_prefix("v1,").expect("v1 signature");
    let tag = base64::engine::general_purpose::STANDARD
        .decode(tag)
        .expect("base64");
    let signed = format!("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W.{timestamp}.{ENVELOPE}");
    assert_eq!(tag, hmac_by_hand(KEY, signed.as_bytes()));
}

#[tokio::test]
async fn server_error_is_retried_with_retry_after_seconds() {
    let (addr, _) = serve(|_| async { answer(500, &[("retry-after", "7")], "db down\n") }).await;
    let dest = destination(&format!("http://{addr}/"), Duration::from_secs(5), 1);
    let report = dest.attempt(&outgoing()).await;
    assert_eq!(report.verdict, AttemptVerdict::Retry);
    assert_eq!(report.status, Some(500));
    assert_eq!(report.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        report.error.as_deref(),
        Some("HTTP 500 Internal Server Error: db down")
    );
    assert_no_secret(&report);
}

#[tokio::test]
async fn unavailable_with_an_http_date_retry_after() {
    let (addr, _) = serve(|_| async {
        let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        answer(503, &[("retry-after", &at)], "")
    })
    .await;
    let dest = destination(&format!("http://{addr}/"), Duration::from_secs(5), 1);
    let report = dest.attempt(&outgoing()).await;
    assert_eq!(report.verdict, AttemptVerdict::Retry);
    assert_eq!(report.status, Some(503));
    let wait = report.retry_after.expect("retry_after");
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(
        report.error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
}

#[tokio::test]
async fn gone_stops_for_good() {
    let (addr, _) = serve(|_| async { answer(410, &[], "unsubscribed") }).await;
    let dest = destination(&format!("http://{addr}/"), Duration::from_secs(5), 1);
    let report = dest.attempt(&outgoing()).await;
    assert_eq!(report.verdict, AttemptVerdict::Stop);
    assert_eq!(report.status, Some(410));
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let (addr, counters) =
        serve(|_| async { answer(302, &[("location", "/elsewhere")], "") }).await;
    let dest = destination(&format!("http://{addr}/events"), Duration::from_secs(5), 1);
    let report = dest.attempt(&outgoing()).await;
    assert_eq!(report.verdict, AttemptVerdict::Retry);
    assert_eq!(report.status, Some(302));
    let error = report.error.expect("error");
    assert!(
        error.starts_with("redirect not followed (Location: /elsewhere)"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(counters.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts and holds connections, never answers.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let timeout = Duration::from_millis(200);
    let dest = destination(&format!("http://{addr}/"), timeout, 1);
    let report = dest.attempt(&outgoing()).await;
    holder.abort();
    assert_eq!(report.verdict, AttemptVerdict::Retry);
    assert_eq!(report.status, None);
    assert_eq!(report.error.as_deref(), Some("timed out after 200ms"));
    assert!(
        report.elapsed >= timeout && report.elapsed < timeout * 2,
        "{:?}",
        report.elapsed
    );
}

#[tokio::test]
async fn an_endless_body_does_not_hold_the_attempt_past_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        // Answer only after the whole request: an early answer is a protocol error to hyper.
        let mut request = Vec::new();
        while !request.ends_with(ENVELOPE.as_bytes()) {
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        while stream.write_all(&[b'x'; 1024]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let timeout = Duration::from_millis(300);
    let dest = destination(&format!("http://{addr}/"), timeout, 1);
    let report = dest.attempt(&outgoing()).await;
    server.abort();
    assert_eq!(report.verdict, AttemptVerdict::Delivered, "{report:?}");
    assert!(report.elapsed < timeout * 2, "{:?}", report.elapsed);
}

#[tokio::test]
async fn refused_connections_are_retried() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let dest = destination(&format!("http://{addr}/"), Duration::from_secs(5), 1);
    let report = dest.attempt(&outgoing()).await;
    assert_eq!(report.verdict, AttemptVerdict::Retry);
    assert_eq!(report.status, None);
    assert_eq!(report.error.as_deref(), Some("connection refused"));
}

#[tokio::test]
async fn a_host_resolving_to_loopback_is_refused_without_connecting() {
    let (addr, counters) = serve(|_| async { answer(200, &[], "") }).await;
    let url = format!("http://localhost:{}/hook", addr.port());
    let guarded = destination_with(&url, Duration::from_secs(2), 1, false);
    let report = guarded.attempt(&outgoing()).await;
    assert_eq!(report.verdict, AttemptVerdict::Retry);
    assert_eq!(report.status, None);
    let error = report.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("`localhost` resolves only to denied addresses")
            && error.contains("allow_private_network = true"),
        "{error}"
    );
    assert_eq!(counters.connections.load(Ordering::SeqCst), 0);

    // The same URL with the flag set is delivered.
    let allowed = destination_with(&url, Duration::from_secs(2), 1, true);
    assert_eq!(
        allowed.attempt(&outgoing()).await.verdict,
        AttemptVerdict::Delivered
    );
    assert_eq!(counters.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connections_are_kept_alive_between_attempts() {
    let (addr, counters) = serve(|_| async { answer(500, &[], &"e".repeat(10_000)) }).await;
    let dest = destination(&format!("http://{addr}/"), Duration::from_secs(5), 1);
    for _ in 0..3 {
        let report = dest.attempt(&outgoing()).await;
        assert_eq!(report.status, Some(500));
        // The quoted body is capped, not the whole 10 kB.
        assert!(report.error.is_some_and(|e| e.len() < 300));
    }
    assert_eq!(counters.requests.load(Ordering::SeqCst), 3);
    assert_eq!(counters.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_concurrency_cap_is_respected() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (now, max) = (Arc::clone(&in_flight), Arc::clone(&peak));
    let (addr, counters) = serve(move |_| {
        let (now, max) = (Arc::clone(&now), Arc::clone(&max));
        async move {
            let current = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(current, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            answer(200, &[], "")
        }
    })
    .await;
    let dest = destination(&format!("http://{addr}/"), Duration::from_secs(5), 2);
    let out = outgoing();
    let attempts = (0..6).map(|_| dest.attempt(&out));
    for report in futures::future::join_all(attempts).await {
        assert_eq!(report.verdict, AttemptVerdict::Delivered, "{report:?}");
    }
    assert_eq!(counters.requests.load(Ordering::SeqCst), 6);
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_id_with_dots_is_sent_hashed_and_signed_as_sent() {
    let (addr, counters) = serve(|_| async { answer(200, &[], "") }).await;
    let dest = destination(&format!("http://{addr}/"), Duration::from_secs(5), 1);
    let out = Outgoing {
        webhook_id: "ledig.crypto_received:42",
        envelope_json: ENVELOPE,
    };
    let report = dest.attempt(&out).await;
    assert_eq!(report.verdict, AttemptVerdict::Delivered, "{report:?}");
    let seen = counters.seen.lock().expect("lock");
    let headers = &seen.first().expect("one request").headers;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let id = header("webhook-id");
    assert!(id.starts_with("hashed-") && !id.contains('.'), "{id}");
    let tag = base64::engine::general_purpose::STANDARD
        .decode(header("webhook-signature").trim_start_matches("v1,"))
        .expect("base64");
    let signed = format!("{id}.{}.{ENVELOPE}", header("webhook-timestamp"));
    assert_eq!(tag, hmac_by_hand(KEY, signed.as_bytes()));
}

#[test]
fn bad_urls_are_rejected_at_construction() {
    let settings = |url: &'static str| DestinationSettings {
        name: "books".into(),
        kind: DestinationKind::Http(HttpDestinationSettings {
            url: http::Uri::from_static(url),
            signing_key: Secret::new(KEY.to_vec()),
            timeout: Duration::from_secs(1),
            allow_private_network: false,
        }),
        max_attempts: 1,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
        },
        concurrency: 1,
        ordering: None,
    };
    assert!(matches!(
        Destination::new(&settings("ftp://example.com/x")),
        Err(DeliveryError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        Destination::new(&settings("/events")),
        Err(DeliveryError::MissingHost { .. })
    ));
    for url in [
        "http://127.0.0.1:9000/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/x",
        "https://[::ffff:10.0.0.1]/x",
    ] {
        assert!(
            matches!(
                Destination::new(&settings(url)),
                Err(DeliveryError::DeniedAddress { .. })
            ),
            "{url}"
        );
    }
    // https needs the system's roots; a machine without them gets a clear error, not a panic.
    match Destination::new(&settings("https://example.com/events")) {
        Ok(_) | Err(DeliveryError::TlsRoots { .. }) => {}
        Err(other) => panic!("unexpected: {other}"),
    }
}
