//! A real local HTTP sink for delivery tests: a hyper server on 127.0.0.1:0 in its own thread
//! that records every request (headers and body) and answers as the test tells it to: 200,
//! fail the next N requests, always answer one status, or go down (stop listening, so
//! connections are refused) and come back on the same port.
//!
//! `verify` checks a recorded delivery's Standard Webhooks signature with an HMAC computed
//! here, independently of the gateway's code.

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A Standard Webhooks secret for destinations in tests.
pub(crate) const SINK_SECRET: &str = "whsec_c2luay1zZWNyZXQtZm9yLWUyZS1kZWxpdmVyaWVzLTE=";

/// One request the sink received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) content_type: Option<String>,
    pub(crate) webhook_id: Option<String>,
    pub(crate) timestamp: Option<String>,
    pub(crate) signature: Option<String>,
    pub(crate) body: Vec<u8>,
    /// The status the sink answered.
    pub(crate) answered: u16,
}

impl Received {
    /// The event id in the `webhook-id` (`<source>:<event id>`), when it was sent plain.
    pub(crate) fn event_id(&self) -> Option<&str> {
        let (source, id) = self.webhook_id.as_deref()?.split_once(':')?;
        (!source.is_empty()).then_some(id)
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("delivered body is JSON")
    }

    /// The delivered envelope's `subject`, if it has one.
    pub(crate) fn subject(&self) -> Option<String> {
        subject_of(&self.body)
    }
}

fn subject_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("subject")?.as_str().map(str::to_owned)
}

/// How the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Ok,
    /// Answer `status` to the next `n` requests, then 200.
    FailNext {
        n: usize,
        status: u16,
    },
    /// Answer `status` to every request.
    Always(u16),
}

#[derive(Debug)]
struct State {
    mode: Mode,
    received: Vec<Received>,
    /// Each answer waits this long (0 by default), so concurrent requests overlap visibly.
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
    /// Requests being handled per envelope subject, and every subject that ever had two at
    /// once (what ordered delivery must never do).
    subject_in_flight: HashMap<String, usize>,
    subject_overlaps: Vec<String>,
    /// Per subject: answer `.1` to its next `.0` requests, whatever the mode.
    fail_subject: HashMap<String, (usize, u16)>,
}

/// A running sink; stops when dropped.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<State>>,
    up: watch::Sender<bool>,
}

impl Sink {
    pub(crate) fn start(mode: Mode) -> Self {
        let state = Arc::new(Mutex::new(State {
            mode,
            received: Vec::new(),
            delay: Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
            subject_in_flight: HashMap::new(),
            subject_overlaps: Vec::new(),
            fail_subject: HashMap::new(),
        }));
        let (up, up_rx) = watch::channel(true);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("sink runtime");
            rt.block_on(serve(shared, up_rx, addr_tx));
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("sink started");
        Self { addr, state, up }
    }

    /// `http://127.0.0.1:PORT/hook`
    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("sink state").mode = mode;
    }

    /// Every answer from now on waits `delay` first.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("sink state").delay = delay;
    }

    /// Answers `status` to the next `n` requests whose envelope is about `subject`.
    pub(crate) fn fail_subject(&self, subject: &str, n: usize, status: u16) {
        let mut s = self.state.lock().expect("sink state");
        s.fail_subject.insert(subject.to_owned(), (n, status));
    }

    /// Subjects that had two requests in the sink at the same time (empty: never).
    pub(crate) fn subject_overlaps(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("sink state")
            .subject_overlaps
            .clone()
    }

    /// The most requests the sink was handling at the same time.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.state.lock().expect("sink state").max_in_flight
    }

    /// Stops listening: new connections are refused until `up`.
    pub(crate) fn down(&self) {
        self.up.send_replace(false);
    }

    /// Listens again on the same port.
    pub(crate) fn up(&self) {
        self.up.send_replace(true);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state.lock().expect("sink state").received.clone()
    }

    /// Requests answered 2xx.
    pub(crate) fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    /// Waits until `done` holds for what was received, or panics after `patience`.
    pub(crate) fn wait_for(
        &self,
        patience: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + patience;
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "sink: {what} did not happen within {patience:?}; received {} request(s)",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.up.send_replace(false);
    }
}

async fn serve(
    state: Arc<Mutex<State>>,
    mut up: watch::Receiver<bool>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("sink binds");
    let addr = listener.local_addr().expect("sink address");
    addr_tx.send(addr).expect("report address");
    let mut listener = Some(listener);
    loop {
        match &listener {
            Some(l) => {
                tokio::select! {
                    changed = up.changed() => {
                        if changed.is_err() { return; }
                        if !*up.borrow() { listener = None; }
                    }
                    accepted = l.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = Arc::clone(&state);
                        let mut conn_up = up.clone();
                        tokio::spawn(async move {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let svc = service_fn(move |req| handle(Arc::clone(&state), req));
                            let conn = http1::Builder::new().serve_connection(io, svc);
                            tokio::pin!(conn);
                            // Going down also drops open connections, like a crashed sink.
                            tokio::select! {
                                _ = conn.as_mut() => {}
                                _ = conn_up.wait_for(|u| !*u) => {}
                            }
                        });
                    }
                }
            }
            None => {
                if up.changed().await.is_err() {
                    return;
                }
                if *up.borrow() {
                    // Same port again; SO_REUSEADDR (tokio's default on unix) allows it.
                    let mut bound = None;
                    for _ in 0..500 {
                        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
                            bound = Some(l);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    listener = Some(bound.expect("sink rebinds its port"));
                }
            }
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (path, content_type, webhook_id, timestamp, signature) = (
        req.uri().path().to_owned(),
        header("content-type"),
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let delay = {
        let mut s = state.lock().expect("sink state");
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        s.delay
    };
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let subject = body.as_ref().ok().and_then(|b| subject_of(b));
    // Counted until this request is answered or dropped (a sender killed mid-request).
    let _subject_guard = subject.clone().map(|subject| {
        let mut s = state.lock().expect("sink state");
        let n = s.subject_in_flight.entry(subject.clone()).or_default();
        *n += 1;
        if *n > 1 {
            s.subject_overlaps.push(subject.clone());
        }
        SubjectInFlight {
            state: Arc::clone(&state),
            subject,
        }
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = {
        let mut s = state.lock().expect("sink state");
        s.in_flight -= 1;
        let body = body?.to_vec();
        let failing = match subject.as_ref().and_then(|x| s.fail_subject.get_mut(x)) {
            Some((n, status)) if *n > 0 => {
                *n -= 1;
                Some(*status)
            }
            _ => None,
        };
        let status = match s.mode {
            _ if failing.is_some() => failing.unwrap_or(503),
            Mode::Ok => 200,
            Mode::Always(status) => status,
            Mode::FailNext { n, status } => {
                s.mode = if n <= 1 {
                    Mode::Ok
                } else {
                    Mode::FailNext { n: n - 1, status }
                };
                status
            }
        };
        s.received.push(Received {
            path,
            content_type,
            webhook_id,
            timestamp,
            signature,
            body,
            answered: status,
        });
        status
    };
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    Ok(res)
}

/// One request about a subject in the sink; counted out when dropped.
struct SubjectInFlight {
    state: Arc<Mutex<State>>,
    subject: String,
}

impl Drop for SubjectInFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock()
            && let Some(n) = s.subject_in_flight.get_mut(&self.subject)
        {
            *n = n.saturating_sub(1);
        }
    }
}

/// Whether `r` carries a valid Standard Webhooks signature for `secret` (`whsec_...`),
/// computed here independently: HMAC-SHA256(base64-decoded key, "id.timestamp.body").
pub(crate) fn verify(secret: &str, r: &Received) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(id), Some(ts), Some(sig)) = (&r.webhook_id, &r.timestamp, &r.signature) else {
        return false;
    };
    let Ok(key) = b64.decode(secret.trim_start_matches("whsec_")) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    sig.split(' ').any(|s| s == expected)
}
