//! Retention (`store.retention`): after a restart past the retention, the events whose work is
//! finished (delivered, unrouted) are gone from the store with their routing records and the
//! admin API, while an event with a dead letter stays, is still listed and can be redriven; the
//! file destination's audit lines are not touched; sequence numbers keep growing.

use crate::harness::*;
use crate::sink::{Mode, Sink};
use std::time::Duration;

/// The standard config with a 1 s dedup window and retention, a file destination for
/// transactions and an HTTP destination (answering 410: a dead letter at once) for tests.
fn retention_config(db: &std::path::Path, audit: &std::path::Path, sink: &str) -> String {
    let base = config(db, &Settings::default()).replace(
        "dedup_window = \"30d\"",
        "dedup_window = \"1s\"\nretention = \"1s\"",
    );
    format!(
        r#"{base}
[admin]
token = "env:E2E_ADMIN_TOKEN"

[destinations.audit]
file = "{audit}"

[destinations.sink]
http = "{sink}"
secret = "env:E2E_SINK_SECRET"
allow_private_network = true
max_attempts = 3

[[routes]]
name = "transactions"
match = {{ source = ["ledger"], type = ["ledger.transaction.*"] }}
plugins = []
to = ["audit"]

[[routes]]
name = "tests"
match = {{ source = ["ledger"], type = ["ledger.webhook.test"] }}
plugins = []
to = ["sink"]
"#,
        audit = audit.display()
    )
}

fn ledger_event(id: &str, ty: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","type":"{ty}","createdAt":1763856000000,"data":{{"id":"d_{id}"}}}}"#)
        .into_bytes()
}

/// The event's routing status as the admin API lists it, once it has one.
fn status_of(gw: &Gateway, seq: i64) -> Option<String> {
    let r = gw.admin("GET", &format!("/admin/events/{seq}"));
    (r.status == 200)
        .then(|| r.json()["status"].as_str().map(str::to_owned))
        .flatten()
}

#[test]
fn finished_events_are_deleted_after_the_retention_and_dead_letters_stay() {
    let sink = Sink::start(Mode::Always(410));
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(
        dir.path().join("gateway.toml"),
        retention_config(&db, &audit, &sink.url()),
    )
    .expect("write config");
    let gw = Gateway::start_in(dir, db);

    gw.post_ledger(&ledger_event("evt_delivered", "transaction.created"))
        .assert_accepted();
    gw.post_ledig(br#"{"event":"crypto_received","data":{"id":"c1","status":"completed"}}"#)
        .assert_accepted();
    gw.post_ledger(&ledger_event("evt_dead", "webhook.test"))
        .assert_accepted();
    let delivered = seq_of(&gw, "ledger", "evt_delivered");
    let unrouted = seq_with_prefix(&gw, "ledig", &ledig_id_prefix("crypto_received", "c1"));
    let dead = seq_of(&gw, "ledger", "evt_dead");
    wait_until(
        &gw,
        "every event routed and its deliveries finished",
        || {
            let done = status_of(&gw, unrouted).as_deref() == Some("unrouted")
                && count(
                    &gw.db(),
                    "SELECT count(*) FROM deliveries WHERE status = 'pending'",
                ) == 0
                && count(&gw.db(), "SELECT count(*) FROM deliveries") == 2;
            done.then_some(())
        },
    );
    let audit_before = std::fs::read_to_string(&audit).expect("audit file");
    assert_eq!(audit_before.lines().count(), 1, "{audit_before}");

    // Past the retention (1 s after the last arrival), a restart runs a retention pass.
    let newest_at: i64 = gw
        .db()
        .query_row("SELECT max(received_at) FROM events", [], |r| r.get(0))
        .expect("reads");
    let (dir, db) = gw.kill();
    let wait =
        Duration::from_millis(u64::try_from(newest_at + 1_100 - now_ms()).unwrap_or_default());
    std::thread::sleep(wait);
    let gw = Gateway::start_in(dir, db);
    wait_until(&gw, "the retention pass deleted two events", || {
        let m = gw.metrics();
        (metric(&m, "gateway_events_expired_total") == 2.0).then_some(())
    });

    let seqs = |sql: &str| -> Vec<i64> {
        let conn = gw.db();
        let mut stmt = conn.prepare(sql).expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("a seq"))
            .collect()
    };
    assert_eq!(seqs("SELECT seq FROM events ORDER BY seq"), [dead]);
    assert_eq!(seqs("SELECT seq FROM routings ORDER BY seq"), [dead]);
    assert_eq!(seqs("SELECT event_seq FROM deliveries"), [dead]);
    assert!(delivered < dead && unrouted < dead);
    gw.admin("GET", &format!("/admin/events/{delivered}"))
        .assert_error(404);
    gw.admin("GET", &format!("/admin/events/{unrouted}"))
        .assert_error(404);
    // The dead letter is still there for the operator.
    let r = gw.admin("GET", "/admin/dead-letters");
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = r.json()["deliveries"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, 1, "{}", r.body);
    // The audit log is the operator's own record: untouched.
    assert_eq!(
        std::fs::read_to_string(&audit).expect("audit file"),
        audit_before
    );
    // A new event gets a new sequence number, never one of the deleted events'.
    gw.post_ledger(&ledger_event("evt_after", "transaction.created"))
        .assert_accepted();
    assert_eq!(seq_of(&gw, "ledger", "evt_after"), dead + 1);
}

/// `store.quarantine_retention`: after a restart, a quarantined body not seen for longer is
/// deleted (counted in `gateway_quarantine_expired_total`), while one that arrived as long ago
/// but came again since is kept. The rows' times are moved back while the gateway is stopped,
/// so the test need not wait an hour.
#[test]
fn quarantined_bodies_not_seen_for_the_retention_are_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let text = config(&db, &Settings::default()).replace(
        "dedup_window = \"30d\"",
        "dedup_window = \"30d\"\nquarantine_retention = \"1h\"",
    );
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!("{text}\n[admin]\ntoken = \"env:E2E_ADMIN_TOKEN\"\n"),
    )
    .expect("write config");
    let gw = Gateway::start_in(dir, db);
    gw.post_ledig(b"<still-sent/>").assert_error(400);
    gw.post_ledig(b"<gone-quiet/>").assert_error(400);
    gw.post_ledig(b"<still-sent/>").assert_error(400);
    let (dir, db) = gw.kill();

    // Both arrived three hours ago; only one of them has been sent again since (ten minutes
    // ago), the other not for two hours.
    let now = now_ms();
    let conn = rusqlite::Connection::open(&db).expect("open the store");
    conn.execute(
        "UPDATE quarantine SET received_at = ?1, last_seen_at = CASE \
         WHEN CAST(raw_body AS TEXT) = '<still-sent/>' THEN ?2 ELSE ?3 END",
        [now - 3 * 3_600_000, now - 600_000, now - 2 * 3_600_000],
    )
    .expect("move the rows back in time");
    drop(conn);

    // A start runs a retention pass.
    let gw = Gateway::start_in(dir, db);
    wait_until(&gw, "the quarantine retention pass", || {
        let m = gw.metrics();
        (metric(&m, "gateway_quarantine_expired_total") == 1.0).then_some(())
    });
    let r = gw.admin("GET", "/admin/quarantine");
    assert_eq!(r.status, 200, "{}", r.body);
    let entries = r.json()["quarantine"].clone();
    let kept: Vec<&str> = entries
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["body_text"].as_str())
        .collect();
    assert_eq!(kept, ["<still-sent/>"], "{entries}");
    assert_eq!(entries[0]["repeats"], 2, "{entries}");
    // New bad bodies are quarantined as before.
    gw.post_ledig(b"<gone-quiet/>").assert_error(400);
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM quarantine"), 2);
}
