//! Dedup: fifty concurrent copies of one delivery, each on its own connection, are stored once
//! and answered 200 every time (exactly one `{"ok":true}`, 49 duplicates); a Ledger retry is
//! recognised by its event id alone; a Ledig payout whose status moves on is a new event while
//! a true retry (even re-serialized with other key order and spacing) is a duplicate; and
//! dedup is per source.

use crate::harness::*;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_copies_are_stored_once() {
    let gw = Gateway::start();
    let body = fixture("ledger/transaction.completed.json");
    let bytes = Arc::new(request_bytes(
        "POST",
        "/webhooks/ledger",
        &ledger_headers(LEDGER_SECRET, now(), &body),
        &body,
    ));
    // Every task connects first, then all send at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let addr = gw.addr;
    let tasks = (0..50).map(|_| {
        let (bytes, barrier) = (Arc::clone(&bytes), Arc::clone(&barrier));
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the gateway");
            barrier.wait().await;
            stream.write_all(&bytes).await.expect("send the request");
            let mut raw = Vec::new();
            tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
                .await
                .expect("answer in time")
                .expect("read the answer");
            parse_response(&raw).unwrap_or_else(|| panic!("incomplete response: {raw:?}"))
        })
    });
    let answers: Vec<Response> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("request task did not panic"))
        .collect();

    assert!(
        answers.iter().all(|r| r.status == 200),
        "every copy is answered 200: {answers:?}"
    );
    let fresh = answers
        .iter()
        .filter(|r| r.body == r#"{"ok":true}"#)
        .count();
    let dups = answers
        .iter()
        .filter(|r| r.body == r#"{"ok":true,"duplicate":true}"#)
        .count();
    assert_eq!((fresh, dups), (1, 49), "{answers:?}");
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 1);
    stored(&db, "ledger", "evt_fx_04_transaction_completed");
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="accepted",source="ledger"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="duplicate",source="ledger"}"#
        ),
        49.0
    );

    // A later retry, re-signed at another time, is still the same event.
    let later = request_async(
        addr,
        &request_bytes(
            "POST",
            "/webhooks/ledger",
            &ledger_headers(LEDGER_SECRET_OLD, now() - 60, &body),
            &body,
        ),
    )
    .await;
    later.assert_duplicate();
}

#[test]
fn ledger_dedup_is_by_event_id_and_per_source() {
    let gw = Gateway::start();
    let first = br#"{"id":"evt_same","type":"transaction.updated","createdAt":1763856000000,"data":{"id":"txn_1","status":"pending"}}"#;
    let changed = br#"{"id":"evt_same","type":"transaction.updated","createdAt":1763856000000,"data":{"id":"txn_1","status":"payment_processed"}}"#;
    gw.post_ledger(first).assert_accepted();
    gw.post_ledger(changed).assert_duplicate();
    let row = stored(&gw.db(), "ledger", "evt_same");
    assert_eq!(row.raw_body, first, "the first delivery is what is kept");
    // The same event id on another source is that source's own event.
    let t = now();
    let headers = standard_headers("webhook", LEDGER_SECRET, "msg_same", t, first);
    gw.post("/webhooks/ledger-std", &borrowed(&headers), first)
        .assert_accepted();
    gw.post("/webhooks/ledger-std", &borrowed(&headers), first)
        .assert_duplicate();
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2);
    stored(&db, "ledger-std", "evt_same");
}

#[test]
fn a_payout_status_change_is_a_new_event_and_a_retry_is_not() {
    let gw = Gateway::start();
    let pending = fixture("ledig/crypto_payout_update.json");
    let completed = String::from_utf8(pending.clone())
        .expect("fixture is UTF-8")
        .replace(r#""status": "pending""#, r#""status": "completed""#);
    assert_ne!(
        pending,
        completed.as_bytes(),
        "the fixture has a pending status"
    );
    gw.post_ledig(&pending).assert_accepted();
    gw.post_ledig(&pending).assert_duplicate();
    gw.post_ledig(completed.as_bytes()).assert_accepted();
    gw.post_ledig(completed.as_bytes()).assert_duplicate();
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2);
    let payout = ledig_object_of("crypto_payout_update", "id", "po_7001");
    let p = stored_with_prefix(&db, "ledig", &ledig_key_prefix(&payout, &pending));
    let c = stored_with_prefix(
        &db,
        "ledig",
        &ledig_key_prefix(&payout, completed.as_bytes()),
    );
    assert_eq!(p.envelope["data"]["status"], "pending");
    assert_eq!(c.envelope["data"]["status"], "completed");
    assert_eq!(c.raw_body, completed.as_bytes());
    // Back to pending is a state that comes back, not a retry (the latest state is completed).
    gw.post_ledig(&pending).assert_accepted();
    gw.post_ledig(&pending).assert_duplicate();
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 3);

    // Without an id, the alias names the object and the canonical body is its state: the same
    // content in another key order and spacing is a retry; another state is a new event.
    let wallet = br#"{"event":"settlement_wallet_update","data":{"Alias":"w1","status":"active"}}"#;
    gw.post_ledig(wallet).assert_accepted();
    gw.post_ledig(
        br#"{ "data": {"status":"active", "Alias":"w1"}, "event":"settlement_wallet_update" }"#,
    )
    .assert_duplicate();
    gw.post_ledig(
        br#"{"event":"settlement_wallet_update","data":{"Alias":"w1","status":"disabled"}}"#,
    )
    .assert_accepted();
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 5);
    let w1 = ledig_object_of("settlement_wallet_update", "alias", "w1");
    stored_with_prefix(&db, "ledig", &ledig_key_prefix(&w1, wallet));
}
