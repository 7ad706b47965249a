//! Dedup: a retry is a duplicate (stored once, answered 200 every time); a status change of
//! the same payout is a new event.

use crate::harness::*;
use std::sync::{Arc, Barrier};

#[test]
fn fifty_concurrent_copies_are_stored_once() {
    let gw = Gateway::start();
    let body = fixture("ledger/transaction.completed.json");
    let headers = ledger_headers(LEDGER_SECRET, now(), &body);
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (addr, body, headers, barrier) =
                (gw.addr, body.clone(), headers.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                request(addr, "POST", "/webhooks/ledger", &headers, &body)
            })
        })
        .collect();
    let answers: Vec<Response> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert!(answers.iter().all(|r| r.status == 200), "{answers:?}");
    let fresh = answers
        .iter()
        .filter(|r| r.body == r#"{"ok":true}"#)
        .count();
    let dups = answers
        .iter()
        .filter(|r| r.body == r#"{"ok":true,"duplicate":true}"#)
        .count();
    assert_eq!((fresh, dups), (1, 49));
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 1);
    let m = gw.metrics();
    assert!(
        m.contains("gateway_requests_total{outcome=\"duplicate\",source=\"ledger\"} 49"),
        "{m}"
    );
}

#[test]
fn a_payout_status_change_is_a_new_event() {
    let gw = Gateway::start();
    let pending = br#"{"event":"crypto_payout_update","data":{"id":"po_1","coin":"USDT","Amount sent":"10","status":"pending"}}"#;
    let completed = br#"{"event":"crypto_payout_update","data":{"id":"po_1","coin":"USDT","Amount sent":"10","status":"completed"}}"#;
    gw.post_ledig(pending).assert_accepted();
    gw.post_ledig(completed).assert_accepted();
    gw.post_ledig(completed).assert_duplicate();
    gw.post_ledig(pending).assert_duplicate();
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2);
    envelope(&db, "ledig", "crypto_payout_update:po_1:pending");
    envelope(&db, "ledig", "crypto_payout_update:po_1:completed");
    // Without an id, the canonical payload decides: same content in another key order and
    // spacing is a retry; different content is a new event.
    gw.post_ledig(
        br#"{"event":"settlement_wallet_update","data":{"Alias":"w1","status":"active"}}"#,
    )
    .assert_accepted();
    gw.post_ledig(
        br#"{ "data": {"status":"active", "Alias":"w1"}, "event":"settlement_wallet_update" }"#,
    )
    .assert_duplicate();
    gw.post_ledig(
        br#"{"event":"settlement_wallet_update","data":{"Alias":"w1","status":"disabled"}}"#,
    )
    .assert_accepted();
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 4);
}
