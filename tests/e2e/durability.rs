//! Durability: a 200 means the event is on disk. The gateway is hammered with unique signed
//! Ledger events from 16 concurrent connections and `kill -9`ed after hundreds of acks while
//! requests are in flight; after a restart on the same store every acknowledged id is there,
//! exactly once, and the restarted gateway serves (and still dedups). SIGTERM and SIGINT stop
//! it gracefully with exit code 0, keeping what it acknowledged.

use crate::harness::*;
use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

const SENDERS: usize = 16;
const ACKS_BEFORE_KILL: usize = 400;

/// How one sender's last request ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Told to stop between requests.
    Stopped,
    /// Could not connect: the gateway was already gone.
    Refused,
    /// Connected, but the answer never came whole: the request was in flight at the kill.
    CutOff,
}

fn ledger_event(id: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"transaction.created","createdAt":1763856000000,"data":{{"id":"txn_{id}","amount":"1.00"}}}}"#
    )
    .into_bytes()
}

/// Sends unique events until stopped or the gateway dies; reports each acked id.
fn sender(addr: SocketAddr, n: usize, acks: &mpsc::Sender<String>, stop: &AtomicBool) -> End {
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return End::Stopped;
        }
        let id = format!("evt_kill_{n}_{i}");
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

#[test]
fn every_acknowledged_event_survives_kill_9() {
    let gw = Gateway::start();
    let addr = gw.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<String>();
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| {
            let (tx, stop) = (tx.clone(), Arc::clone(&stop));
            std::thread::spawn(move || sender(addr, n, &tx, &stop))
        })
        .collect();
    drop(tx);

    let mut acked = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while acked.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(id) => acked.push(id),
            Err(e) => panic!(
                "only {} acks before {e}; stderr:\n{}",
                acked.len(),
                gw.stderr()
            ),
        }
    }
    // Senders are mid-request right now.
    let (dir, db) = gw.kill();
    stop.store(true, Ordering::Relaxed);
    let ends: Vec<End> = senders
        .into_iter()
        .map(|s| s.join().expect("sender thread did not panic"))
        .collect();
    acked.extend(rx.try_iter());
    let cut_off = ends.iter().filter(|e| **e == End::CutOff).count();
    assert!(
        cut_off > 0,
        "no request was in flight at the kill: {ends:?}"
    );

    let gw = Gateway::start_in(dir, db);
    let conn = gw.db();
    let mut stmt = conn
        .prepare("SELECT dedup_key FROM events WHERE source = 'ledger'")
        .expect("prepare");
    let keys: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query stored keys")
        .map(|r| r.expect("a stored key"))
        .collect();
    let stored_keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(stored_keys.len(), keys.len(), "no event is stored twice");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stored_keys.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost after kill -9: {missing:?}",
        missing.len(),
        acked.len()
    );
    // The restarted gateway serves and still knows what it stored.
    gw.post_ledger(&ledger_event(&acked[0])).assert_duplicate();
    gw.post_ledger(&ledger_event("evt_after_restart"))
        .assert_accepted();
}

#[test]
fn sigterm_and_sigint_stop_gracefully_and_keep_what_was_acked() {
    let mut gw = Gateway::start();
    gw.post_ledger(&ledger_event("evt_before_term"))
        .assert_accepted();
    let status = gw.signal_and_wait("TERM");
    assert_eq!(status.code(), Some(0), "SIGTERM exit: {status:?}");
    let (dir, db) = gw.kill();

    let mut gw = Gateway::start_in(dir, db);
    stored(&gw.db(), "ledger", "evt_before_term");
    gw.post_ledger(&ledger_event("evt_before_int"))
        .assert_accepted();
    let status = gw.signal_and_wait("INT");
    assert_eq!(status.code(), Some(0), "SIGINT exit: {status:?}");
    let (_dir, db) = gw.kill();
    let conn = open_db(&db);
    stored(&conn, "ledger", "evt_before_term");
    stored(&conn, "ledger", "evt_before_int");
}
