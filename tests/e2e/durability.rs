//! Durability: kill -9 the gateway while it is under load; after a restart every event that
//! was answered 200 is in the store.

use crate::harness::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn every_acknowledged_event_survives_kill_9() {
    let gw = Gateway::start();
    let addr = gw.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..16)
        .map(|t| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("evt_kill_{t}_{i}");
                    let body = format!(
                        r#"{{"id":"{id}","type":"transaction.created","createdAt":1710000000000,"data":{{"id":"txn_{t}_{i}"}}}}"#
                    );
                    let headers = ledger_headers(LEDGER_SECRET, now(), body.as_bytes());
                    // After the kill, connections fail: that is the point.
                    let Ok(r) = std::panic::catch_unwind(|| {
                        request(addr, "POST", "/webhooks/ledger", &headers, body.as_bytes())
                    }) else {
                        break;
                    };
                    if r.status == 200 && r.body == r#"{"ok":true}"# {
                        acked.lock().expect("lock").push(id);
                    }
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || acked
            .lock()
            .expect("lock")
            .len()
            >= 400),
        "load did not get going"
    );
    // Requests are in flight right now.
    let (dir, db) = gw.kill();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 400);

    let gw = Gateway::start_in(dir, db);
    let conn = gw.db();
    let mut missing = Vec::new();
    for id in &acked {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE source = 'ledger' AND dedup_key = ?1",
                [id],
                |r| r.get(0),
            )
            .expect("query");
        if n != 1 {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acked events lost: {missing:?}\n{}",
        missing.len(),
        acked.len(),
        gw.stderr()
    );
    // The restarted gateway serves, and still knows what it stored.
    let again = format!(
        r#"{{"id":"{}","type":"transaction.created","createdAt":1710000000000,"data":{{"id":"x"}}}}"#,
        acked[0]
    );
    gw.post_ledger(again.as_bytes()).assert_duplicate();
}
