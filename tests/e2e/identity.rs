//! Identity: what makes two deliveries "the same event", attacked the way the outside review
//! did. Only signed bytes decide a Ledger event's id and type (the body, or the `webhook-id` a
//! Standard Webhooks signature covers); a captured signed request replayed with other unsigned
//! id headers is a duplicate, and cannot claim a future event's id. Ledig keys cannot be
//! pre-claimed by choosing field values; a Ledig object whose state comes back (A -> B -> A) is
//! a new event each time while a retry of the latest state is a duplicate; two sources with the
//! same event id deliver distinct `webhook-id`s.

use crate::harness::*;
use crate::sink::{Mode, Sink};
use sha2::{Digest as _, Sha256};

/// `sha256:` + hex of the raw body: the key of a signed Ledger body without an id.
fn body_hash_key(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

fn ledger_with(body: &[u8], extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut headers = ledger_headers(LEDGER_SECRET, now(), body);
    headers.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    headers
}

/// The review's replay: a signed Ledger body without `id`, sent again three times with other
/// `X-Ledger-Event-Id` (and `-Type`) headers. Before the fix each copy was a new event with a
/// new `webhook-id`, and the copy naming `evt_future` made that genuine event a duplicate.
#[test]
fn unsigned_id_headers_neither_split_nor_claim_a_ledger_event() {
    let gw = Gateway::start();
    let body = br#"{"type":"transaction.completed","createdAt":1763856000000,"data":{"id":"txn_77","amount":"900.00"}}"#;
    gw.post(
        "/webhooks/ledger",
        &ledger_with(body, &[("X-Ledger-Event-Id", "evt_a")]),
        body,
    )
    .assert_accepted();
    for (claimed, claimed_type) in [
        ("evt_b", "transaction.created"),
        ("evt_c", "dispute.created"),
        ("evt_future", "webhook.test"),
    ] {
        gw.post(
            "/webhooks/ledger",
            &ledger_with(
                body,
                &[
                    ("X-Ledger-Event-Id", claimed),
                    ("X-Ledger-Event-Type", claimed_type),
                ],
            ),
            body,
        )
        .assert_duplicate();
    }
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 1);
    let row = stored(&db, "ledger", &body_hash_key(body));
    assert_eq!(row.event_type, "ledger.transaction.completed");
    assert_eq!(row.envelope["id"], body_hash_key(body).as_str());

    // The genuine future event is stored, not taken for a duplicate.
    let future = br#"{"id":"evt_future","type":"transaction.completed","createdAt":1763856001000,"data":{"id":"txn_78"}}"#;
    gw.post_ledger(future).assert_accepted();
    stored(&gw.db(), "ledger", "evt_future");

    // A body without `type` takes none from a header.
    let untyped = br#"{"data":{"id":"txn_79"}}"#;
    gw.post(
        "/webhooks/ledger",
        &ledger_with(untyped, &[("X-Ledger-Event-Type", "transaction.completed")]),
        untyped,
    )
    .assert_accepted();
    let row = stored(&gw.db(), "ledger", &body_hash_key(untyped));
    assert_eq!(row.event_type, "ledger.unknown");
}

/// With Standard Webhooks, the signed `webhook-id` names a body without `id`, and an unsigned
/// `X-Ledger-Event-Id` beside it does not win (before the fix it did).
#[test]
fn a_signed_webhook_id_names_the_event_and_an_unsigned_header_does_not() {
    let gw = Gateway::start();
    let body = br#"{"type":"transaction.created","data":{"id":"txn_1"}}"#;
    let mut headers = standard_headers("webhook", LEDGER_SECRET, "msg_signed_1", now(), body);
    headers.push(("X-Ledger-Event-Id".to_owned(), "evt_claimed".to_owned()));
    gw.post("/webhooks/ledger-std", &borrowed(&headers), body)
        .assert_accepted();
    stored(&gw.db(), "ledger-std", "msg_signed_1");
    // The same signed request with another unsigned header: a duplicate.
    headers.pop();
    headers.push(("X-Ledger-Event-Id".to_owned(), "evt_other".to_owned()));
    gw.post("/webhooks/ledger-std", &borrowed(&headers), body)
        .assert_duplicate();
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 1);
}

fn ledig_payout(id: &str, status: &str) -> Vec<u8> {
    format!(
        r#"{{"event":"crypto_payout_update","data":{{"id":"{id}","coin":"USDT","amount_sent":"250","status":"{status}"}}}}"#
    )
    .into_bytes()
}

fn ledig_account(alias: &str, status: &str) -> Vec<u8> {
    format!(
        r#"{{"event":"settlement_account_update","data":{{"alias":"{alias}","bank_name":"First","status":"{status}"}}}}"#
    )
    .into_bytes()
}

/// A -> B -> A: each state change is stored (before the fix the third was a duplicate of the
/// first for 30 days) and a retry of the latest state, right after it, is a duplicate.
#[test]
fn a_ledig_state_that_comes_back_is_a_new_event_and_a_retry_is_not() {
    let gw = Gateway::start();
    let flips = [
        ledig_account("acc_1", "active"),
        ledig_account("acc_1", "suspended"),
        ledig_account("acc_1", "active"),
        ledig_payout("po_1", "pending"),
        ledig_payout("po_1", "failed"),
        ledig_payout("po_1", "pending"),
    ];
    for body in &flips {
        gw.post_ledig(body).assert_accepted();
        // Ledig's retry: the same content, also re-serialized with other spacing.
        gw.post_ledig(body).assert_duplicate();
        let respaced = String::from_utf8(body.clone())
            .expect("UTF-8")
            .replace("\":", "\" : ");
        gw.post_ledig(respaced.as_bytes()).assert_duplicate();
    }
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 6);
    // Six distinct ids, so a receiver dropping copies by id keeps all six.
    assert_eq!(
        count(&db, "SELECT count(DISTINCT dedup_key) FROM events"),
        6
    );
    // The subject names the object; the states are in the stored order.
    let statuses: Vec<String> = db
        .prepare("SELECT envelope FROM stored_events ORDER BY seq")
        .expect("prepares")
        .query_map([], |r| r.get::<_, String>(0))
        .expect("queries")
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.expect("row")).expect("JSON");
            format!(
                "{}={}",
                v["subject"].as_str().expect("subject"),
                v["data"]["status"]
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            "acc_1=\"active\"",
            "acc_1=\"suspended\"",
            "acc_1=\"active\"",
            "po_1=\"pending\"",
            "po_1=\"failed\"",
            "po_1=\"pending\"",
        ]
    );
    // The latest states survive a restart: a retry after it is still a duplicate.
    let mut gw = gw;
    assert!(gw.signal_and_wait("TERM").success());
    let (dir, db) = gw.kill();
    let gw = Gateway::start_in(dir, db);
    gw.post_ledig(&flips[5]).assert_duplicate();
    gw.post_ledig(&ledig_payout("po_1", "completed"))
        .assert_accepted();
}

/// The review's pre-claim: a token holder sends `dep_77:completed` (or names an event
/// `sha256`) to make a future genuine event a duplicate. Before the fix the genuine
/// `dep_77`/`completed` deposit was answered `"duplicate":true` and never stored.
#[test]
fn chosen_ledig_field_values_cannot_pre_claim_another_event() {
    let gw = Gateway::start();
    let claims = [
        r#"{"event":"crypto_received","data":{"id":"dep_77:completed"}}"#,
        r#"{"event":"crypto_received:dep_77","data":{"id":"completed"}}"#,
        r#"{"event":"crypto_received","data":{"id":"dep_77:completed","status":""}}"#,
    ];
    for claim in claims {
        gw.post_ledig(claim.as_bytes()).assert_accepted();
    }
    let genuine = br#"{"event":"crypto_received","data":{"id":"dep_77","coin":"USDT","amount":"25","status":"completed"}}"#;
    gw.post_ledig(genuine).assert_accepted();
    // An event named `sha256` with an id of the content-hash form is just another object.
    let id_less = br#"{"event":"settlement_wallet_update","data":{"network":"TRON"}}"#;
    gw.post_ledig(id_less).assert_accepted();
    let mimic = format!(
        r#"{{"event":"sha256","data":{{"id":"{}"}}}}"#,
        hex::encode(ledig_state(id_less))
    );
    gw.post_ledig(mimic.as_bytes()).assert_accepted();
    gw.post_ledig(id_less).assert_duplicate();
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 6);
}

/// Two Ledig accounts (two sources) send the same payout id: two events, delivered with two
/// distinct `webhook-id`s (before the fix both carried the event id alone, and a receiver that
/// drops copies by `webhook-id` lost one). Every attempt of one delivery keeps its id.
#[test]
fn the_same_event_id_on_two_sources_gets_two_webhook_ids() {
    let sink = Sink::start(Mode::FailNext { n: 1, status: 503 });
    let gw = Gateway::start_with_extra(&format!(
        r#"
[destinations.books]
http = "{url}"
secret = "env:E2E_SINK_SECRET"
allow_private_network = true
backoff_initial = "50ms"
backoff_max = "100ms"

[destinations.ledger-books]
http = "{url}"
secret = "env:E2E_SINK_SECRET"
allow_private_network = true

[[routes]]
match = {{ source = ["ledig", "ledig-path"] }}
to = ["books"]

[[routes]]
match = {{ source = ["ledger", "ledger-std"] }}
to = ["ledger-books"]
"#,
        url = sink.url()
    ));
    let payout = ledig_payout("po_shared", "completed");
    gw.post_ledig(&payout).assert_accepted();
    gw.post(
        &format!("/webhooks/ledig-path/{LEDIG_TOKEN}"),
        &[("Content-Type", "application/json".into())],
        &payout,
    )
    .assert_accepted();
    // And the same Ledger event id on both Ledger sources.
    let body = br#"{"id":"evt_shared","type":"transaction.completed","data":{"id":"txn_s"}}"#;
    gw.post_ledger(body).assert_accepted();
    let headers = standard_headers("webhook", LEDGER_SECRET, "msg_s", now(), body);
    gw.post("/webhooks/ledger-std", &borrowed(&headers), body)
        .assert_accepted();

    // Four events, one of them failing once: five requests, four distinct ids.
    let got = sink.wait_for(PATIENCE, "four deliveries", |r| {
        r.iter().filter(|r| r.answered == 200).count() == 4
    });
    let ids: Vec<String> = got
        .iter()
        .map(|r| r.webhook_id.clone().expect("a webhook-id"))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 4, "{ids:?}");
    assert!(
        distinct.contains(&"ledger:evt_shared".to_owned()),
        "{ids:?}"
    );
    assert!(
        distinct.contains(&"ledger-std:evt_shared".to_owned()),
        "{ids:?}"
    );
    let ledig_ids: Vec<&&String> = distinct
        .iter()
        .filter(|id| id.starts_with("ledig"))
        .collect();
    assert_eq!(ledig_ids.len(), 2, "{ids:?}");
    assert!(
        ledig_ids.iter().any(|id| id.starts_with("ledig:ledig:"))
            && ledig_ids
                .iter()
                .any(|id| id.starts_with("ledig-path:ledig:")),
        "{ids:?}"
    );
    // The failed first attempt and its retry carry the same id.
    let failed = got.iter().find(|r| r.answered == 503).expect("one failure");
    let retried = got
        .iter()
        .filter(|r| r.webhook_id == failed.webhook_id)
        .count();
    assert_eq!(retried, 2, "{ids:?}");
}
