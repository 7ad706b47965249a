//! Signed load with a record of what was acknowledged: sender threads post unique Ledger
//! events, each on its own connection, and report every acked id on a channel. Tests act on
//! the gateway (kill it, back it up) while the stream runs and then check that every id acked
//! before that moment is stored. It asserts nothing about the gateway itself but the answers
//! under load: anything other than a 200 `{"ok":true}` panics the sender.

use crate::harness::{LEDGER_SECRET, PATIENCE, ledger_headers, now, parse_response, request_bytes};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

/// How a sender ended.
#[derive(Debug, PartialEq)]
pub(crate) enum End {
    /// Told to stop between requests.
    Stopped,
    /// Could not connect: the gateway was already gone.
    Refused,
    /// Connected, but the answer never came whole: the request was in flight at the kill.
    CutOff,
}

/// A Ledger event body with this id.
pub(crate) fn ledger_event(id: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"transaction.created","createdAt":1763856000000,"data":{{"id":"txn_{id}","amount":"1.00"}}}}"#
    )
    .into_bytes()
}

/// Sends events `<prefix>_<n>_<i>` until stopped or the gateway is gone; reports each acked id.
fn sender(
    addr: SocketAddr,
    prefix: &str,
    n: usize,
    acks: &mpsc::Sender<String>,
    stop: &AtomicBool,
) -> End {
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return End::Stopped;
        }
        let id = format!("{prefix}_{n}_{i}");
        let body = ledger_event(&id);
        let bytes = request_bytes(
            "POST",
            "/webhooks/ledger",
            &ledger_headers(LEDGER_SECRET, now(), &body),
            &body,
        );
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return End::Refused;
        };
        let mut raw = Vec::new();
        let answered = stream
            .set_read_timeout(Some(PATIENCE))
            .and_then(|()| stream.write_all(&bytes))
            .and_then(|()| stream.read_to_end(&mut raw))
            .ok()
            .and_then(|_| parse_response(&raw));
        match answered {
            Some(r) if r.status == 200 && r.body == r#"{"ok":true}"# => {
                if acks.send(id).is_err() {
                    return End::Stopped;
                }
            }
            Some(r) => panic!("unexpected answer under load: {} {}", r.status, r.body),
            None => return End::CutOff,
        }
    }
    End::Stopped
}

/// Sender threads and the ids they saw acknowledged.
pub(crate) struct AckStream {
    acks: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<End>>,
}

impl AckStream {
    /// Starts `senders` threads posting to `addr`, ids prefixed `prefix`.
    pub(crate) fn start(addr: SocketAddr, senders: usize, prefix: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, acks) = mpsc::channel::<String>();
        let senders = (0..senders)
            .map(|n| {
                let (tx, stop) = (tx.clone(), Arc::clone(&stop));
                std::thread::spawn(move || sender(addr, prefix, n, &tx, &stop))
            })
            .collect();
        Self {
            acks,
            stop,
            senders,
        }
    }

    /// Waits for at least `n` acks (within [`PATIENCE`]) and returns every ack received so far;
    /// `context` says what the gateway was doing if they never come.
    pub(crate) fn acked(&self, n: usize, context: impl Fn() -> String) -> Vec<String> {
        let mut acked = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while acked.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.acks.recv_timeout(left) {
                Ok(id) => acked.push(id),
                Err(e) => panic!("only {} acks before {e}; {}", acked.len(), context()),
            }
        }
        acked.extend(self.acks.try_iter());
        acked
    }

    /// Acks that arrived since the last look.
    pub(crate) fn more(&self) -> Vec<String> {
        self.acks.try_iter().collect()
    }

    /// Stops the senders and returns how each ended, with the acks not yet looked at.
    pub(crate) fn stop(self) -> (Vec<End>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let ends = self
            .senders
            .into_iter()
            .map(|s| s.join().expect("sender thread did not panic"))
            .collect();
        (ends, self.acks.try_iter().collect())
    }
}
