//! The destination `loadgen e2e` delivers to: a hyper HTTP/1 server in this process, on
//! 127.0.0.1:0, that reads each request, notes per event id when it first arrived (and how
//! many times), and answers 200 with an empty body. The gateway sends `webhook-id` as
//! `<source>:<event id>`; the sink keys its record by the event id, which loadgen sent. It verifies nothing (no signature check):
//! it should cost the machine as little as possible, since it shares the cores with the gateway.

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Ids looked up per lock while checking which events have arrived, so the check never holds
/// the sink up for long.
const CHECK_CHUNK: usize = 1024;

/// Every delivery of one event id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Receipt {
    /// When the first delivery's request head was read.
    pub(crate) first: Instant,
    /// Deliveries received (more than 1: duplicates).
    pub(crate) count: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Sink {
    receipts: Mutex<HashMap<HeaderValue, Receipt>>,
    /// Requests answered, with or without a `webhook-id`.
    requests: AtomicU64,
    /// Requests without a `webhook-id` header.
    missing_id: AtomicU64,
    /// Bodies carrying the plugin's `largedeposit` extension.
    flagged: AtomicU64,
    /// Count order violations (`loadgen e2e --ordered`): per envelope subject, the highest
    /// event number (the last `_` part of its id: a source's running count) seen so far.
    check_order: bool,
    last_of_subject: Mutex<HashMap<Vec<u8>, u64>>,
    /// Deliveries whose event number was below one already delivered of the same subject.
    order_violations: AtomicU64,
}

impl Sink {
    /// Binds 127.0.0.1:0 and serves on the current runtime until the process ends; counts
    /// order violations per subject when `check_order`.
    pub(crate) async fn start(check_order: bool) -> anyhow::Result<(Arc<Self>, SocketAddr)> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("the sink cannot listen")?;
        let addr = listener.local_addr()?;
        let sink = Arc::new(Self {
            check_order,
            ..Self::default()
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&sink)));
        Ok((sink, addr))
    }

    /// Requests answered so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn missing_id(&self) -> u64 {
        self.missing_id.load(Ordering::Relaxed)
    }

    pub(crate) fn flagged(&self) -> u64 {
        self.flagged.load(Ordering::Relaxed)
    }

    pub(crate) fn order_violations(&self) -> u64 {
        self.order_violations.load(Ordering::Relaxed)
    }

    /// Subjects whose deliveries were seen (with `check_order`).
    pub(crate) fn subjects(&self) -> usize {
        self.last_of_subject
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn check_order(&self, id: &HeaderValue, body: &[u8]) {
        let number = id
            .as_bytes()
            .rsplit(|b| *b == b'_')
            .next()
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<u64>().ok());
        let (Some(number), Some(subject)) = (number, subject_of(body)) else {
            return;
        };
        let mut last = self
            .last_of_subject
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = last.entry(subject.to_vec()).or_insert(0);
        if number < *seen {
            self.order_violations.fetch_add(1, Ordering::Relaxed);
        } else {
            *seen = number;
        }
    }

    /// Makes room for `events` more receipts now, between phases: growing the map during a
    /// phase rehashes every receipt under the lock (tens of milliseconds at ~230k ids on
    /// this machine) and stalls every sink and generator task behind it, which showed up as
    /// 100-200 ms in the measured latency.
    pub(crate) fn reserve(&self, events: usize) {
        self.lock().reserve(events);
    }

    /// Distinct event ids received so far.
    pub(crate) fn distinct(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<HeaderValue, Receipt>> {
        // A panic elsewhere cannot leave the map half-updated: insert is one step.
        self.receipts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn receive(&self, id: Option<&HeaderValue>, flagged: bool) {
        let now = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        if flagged {
            self.flagged.fetch_add(1, Ordering::Relaxed);
        }
        let Some(id) = id else {
            self.missing_id.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.lock()
            .entry(id.clone())
            .and_modify(|r| r.count += 1)
            .or_insert(Receipt {
                first: now,
                count: 1,
            });
    }

    /// The receipts of `ids`, in order (`None`: not received).
    pub(crate) fn receipts<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Vec<Option<Receipt>> {
        let ids: Vec<&HeaderValue> = ids.into_iter().collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHECK_CHUNK) {
            let map = self.lock();
            out.extend(chunk.iter().map(|id| map.get(*id).copied()));
        }
        out
    }

    /// Waits until every id in `ids` has been received, or `timeout` has passed; returns how
    /// long it waited and how many were still missing.
    pub(crate) async fn wait_for(
        &self,
        ids: &[HeaderValue],
        timeout: Duration,
    ) -> (Duration, usize) {
        let started = Instant::now();
        let mut missing: Vec<&HeaderValue> = ids.iter().collect();
        loop {
            let mut still = Vec::new();
            for chunk in missing.chunks(CHECK_CHUNK) {
                let map = self.lock();
                still.extend(chunk.iter().filter(|id| !map.contains_key(**id)).copied());
            }
            missing = still;
            if missing.is_empty() || started.elapsed() >= timeout {
                return (started.elapsed(), missing.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn accept_loop(listener: TcpListener, sink: Arc<Sink>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("sink: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let sink = Arc::clone(&sink);
                async move {
                    let id = req.headers().get("webhook-id").map(event_id);
                    // Read the whole body, as a real receiver must (and keep-alive needs).
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let flagged = contains(&body, br#""largedeposit""#);
                    if sink.check_order
                        && let Some(id) = &id
                    {
                        sink.check_order(id, &body);
                    }
                    sink.receive(id.as_ref(), flagged);
                    Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The event id in a `webhook-id`: what follows the source name and its `:` (the whole value
/// when there is none).
fn event_id(webhook_id: &HeaderValue) -> HeaderValue {
    let bytes = webhook_id.as_bytes();
    match bytes.iter().position(|b| *b == b':') {
        Some(at) => {
            HeaderValue::from_bytes(&bytes[at + 1..]).unwrap_or_else(|_| webhook_id.clone())
        }
        None => webhook_id.clone(),
    }
}

/// The envelope's `"subject":"..."` value, found by a byte scan (the sink parses no JSON: it
/// shares the cores with the gateway). Subjects here are plain ASCII ids, never escaped.
fn subject_of(body: &[u8]) -> Option<&[u8]> {
    let key = br#""subject":""#;
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    let len = body[at..].iter().position(|b| *b == b'"')?;
    Some(&body[at..at + len])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::client::conn::http1 as client;

    #[tokio::test]
    async fn records_first_receipt_and_duplicates() -> anyhow::Result<()> {
        let (sink, addr) = Sink::start(false).await?;
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = client::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        for (id, body) in [
            ("ledger:a", r#"{"largedeposit":"true"}"#),
            ("ledger:b", "{}"),
            ("a", "{}"),
        ] {
            let req = hyper::Request::post("/hook")
                .header("host", "sink")
                .header("webhook-id", id)
                .body(Full::new(Bytes::from(body)))?;
            sender.ready().await?;
            let res = sender.send_request(req).await?;
            assert_eq!(res.status(), 200);
            assert!(res.into_body().collect().await?.to_bytes().is_empty());
        }
        let ids = [HeaderValue::from_static("a"), HeaderValue::from_static("b")];
        let counts: Vec<_> = sink
            .receipts(&ids)
            .into_iter()
            .map(|r| r.map(|r| r.count))
            .collect();
        assert_eq!(counts, [Some(2), Some(1)]);
        assert_eq!(
            (sink.requests(), sink.flagged(), sink.distinct()),
            (3, 1, 2)
        );
        let missing = [HeaderValue::from_static("c")];
        let (_, left) = sink.wait_for(&missing, Duration::from_millis(50)).await;
        assert_eq!(left, 1);
        Ok(())
    }

    #[test]
    fn an_older_event_of_a_subject_after_a_newer_one_is_a_violation() {
        let sink = Sink {
            check_order: true,
            ..Sink::default()
        };
        let body = |subject: &str| format!(r#"{{"id":"x","subject":"{subject}","data":{{}}}}"#);
        for (id, subject) in [
            ("evt_a_1_1", "s0"),
            ("evt_a_1_3", "s0"),
            ("evt_a_1_2", "s1"),
            ("evt_a_1_3", "s0"),
            ("evt_a_1_2", "s0"),
        ] {
            sink.check_order(&HeaderValue::from_static(id), body(subject).as_bytes());
        }
        assert_eq!((sink.order_violations(), sink.subjects()), (1, 2));
    }
}
