//! Delivery: the workers route stored events to real destinations (local HTTP sinks and a file)
//! and the tests watch what arrives there, what the store records and what the admin API and
//! metrics say. Routing by source and type glob reaches every destination exactly once, signed
//! and byte-for-byte the stored envelope, and leaves other events `unrouted`; failed attempts
//! are retried with backoff and recorded in the delivery's history; the last failure (or a 410)
//! makes a dead letter that the admin API lists and redrives; a sink outage plus `kill -9` loses
//! no acknowledged event; the file destination appends one envelope per line; and under many
//! concurrent retries against slow receivers no recorded attempt is ever made again.
//!
//! Nothing here sleeps to assert: every wait polls with a deadline ([`PATIENCE`]), and "nothing
//! more arrives" is asserted only once the store says no attempt is left to make.

use crate::harness::*;
use crate::sink::{Mode, Received, SINK_SECRET, Sink, verify};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

/// The admin section every config here needs.
const ADMIN: &str = "[admin]\ntoken = \"env:E2E_ADMIN_TOKEN\"\n";

/// An HTTP destination with short backoffs, so retries happen within milliseconds.
fn http_destination(name: &str, url: &str, max_attempts: u32) -> String {
    format!(
        r#"
[destinations.{name}]
http = "{url}"
secret = "env:E2E_SINK_SECRET"
allow_private_network = true
timeout = "2s"
max_attempts = {max_attempts}
backoff_initial = "50ms"
backoff_max = "200ms"
concurrency = 8
"#
    )
}

fn file_destination(name: &str, path: &Path) -> String {
    format!("\n[destinations.{name}]\nfile = \"{}\"\n", path.display())
}

/// A route for Ledger transaction events from the `ledger` source to `to`.
fn transaction_route(to: &[&str]) -> String {
    let to: Vec<String> = to.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"
[[routes]]
name = "transactions"
match = {{ source = ["ledger"], type = ["ledger.transaction.*"] }}
plugins = []
to = [{}]
"#,
        to.join(", ")
    )
}

/// A Ledger event body of provider type `ty` (e.g. "transaction.created").
fn ledger_event(id: &str, ty: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"{ty}","createdAt":1763856000000,"data":{{"id":"txn_{id}","amount":"12.50","currency":"EUR"}}}}"#
    )
    .into_bytes()
}

/// The stored event with this id: (seq, envelope column exactly as stored).
fn stored_row(gw: &Gateway, id: &str) -> (i64, String) {
    gw.db()
        .query_row(
            "SELECT seq, envelope FROM stored_events WHERE source = 'ledger' AND dedup_key = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("no stored event {id}: {e}"))
}

/// `GET /admin/events/{seq}`, parsed.
fn event_detail(gw: &Gateway, seq: i64) -> Value {
    let r = gw.admin("GET", &format!("/admin/events/{seq}"));
    assert_eq!(r.status, 200, "GET /admin/events/{seq}: {}", r.body);
    r.json()
}

/// Waits until the event's delivery to `destination` has `status`; returns that delivery.
fn wait_delivery(gw: &Gateway, seq: i64, destination: &str, status: &str) -> Value {
    wait_until(
        gw,
        &format!("event {seq}'s delivery to {destination} becomes {status}"),
        || {
            let detail = event_detail(gw, seq);
            let deliveries = detail["deliveries"].as_array()?.clone();
            let mine: Vec<Value> = deliveries
                .into_iter()
                .filter(|d| d["destination"] == destination)
                .collect();
            assert!(
                mine.len() <= 1,
                "one delivery per destination and event: {detail}"
            );
            mine.into_iter().find(|d| d["status"] == status)
        },
    )
}

/// The statuses in a delivery's history, in order (`None` for attempts without an answer).
fn history_statuses(delivery: &Value) -> Vec<Option<u64>> {
    delivery["history"]
        .as_array()
        .unwrap_or_else(|| panic!("history is an array: {delivery}"))
        .iter()
        .map(|a| {
            assert!(a["at"].as_i64().is_some(), "attempt has `at`: {a}");
            assert!(
                a["duration_ms"].as_u64().is_some(),
                "attempt has `duration_ms`: {a}"
            );
            a["status"].as_u64()
        })
        .collect()
}

/// A sample's value, or 0 when the series was never created.
fn metric_or_zero(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn deliveries_metric(gw: &Gateway, destination: &str, result: &str) -> f64 {
    metric(
        &gw.metrics(),
        &format!("gateway_deliveries_total{{destination=\"{destination}\",result=\"{result}\"}}"),
    )
}

/// Polls until `series` reaches at least `want`, then asserts it is exactly `want` (so a
/// counter that overshoots fails at once instead of timing out).
fn assert_metric_reaches(gw: &Gateway, series: &str, want: f64) {
    let got = wait_until(gw, &format!("{series} reaches {want}"), || {
        let v = metric_or_zero(&gw.metrics(), series);
        (v >= want).then_some(v)
    });
    assert_eq!(got, want, "{series}");
}

/// Polls until the gauge `series` equals `want`.
fn wait_gauge(gw: &Gateway, series: &str, want: f64) {
    wait_until(gw, &format!("{series} == {want}"), || {
        (metric_or_zero(&gw.metrics(), series) == want).then_some(())
    });
}

/// How many requests per `webhook-id` in `received`.
fn by_id(received: &[Received]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in received {
        let id = r.event_id().unwrap_or_default().to_owned();
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

/// Checks one request as delivered: path, content type, signature, fresh timestamp, and the
/// body byte-for-byte the stored envelope with `webhook-id` = the event id.
fn assert_is_delivery_of(r: &Received, id: &str, envelope: &str) {
    assert_eq!(r.path, "/hook", "{id}");
    assert_eq!(
        r.webhook_id.as_deref(),
        Some(format!("ledger:{id}").as_str()),
        "webhook-id = <source>:<event id>"
    );
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/cloudevents+json"),
        "{id}: structured CloudEvents"
    );
    assert!(
        verify(SINK_SECRET, r),
        "{id}: the Standard Webhooks signature verifies: {r:?}"
    );
    assert!(
        !verify(LEDGER_SECRET, r),
        "{id}: and not under another secret"
    );
    let ts: i64 = r
        .timestamp
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{id}: numeric webhook-timestamp: {r:?}"));
    assert!((ts - now()).abs() <= 300, "{id}: timestamp {ts} is now");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        envelope,
        "{id}: the body is exactly the stored envelope"
    );
    assert_eq!(r.json()["id"], id, "{id}: envelope id");
}

#[test]
fn routes_by_type_glob_to_two_sinks_once_each_signed_and_verbatim() {
    let (a, b) = (Sink::start(Mode::Ok), Sink::start(Mode::Ok));
    let extra = format!(
        "{ADMIN}{}{}{}",
        http_destination("sink-a", &a.url(), 3),
        http_destination("sink-b", &b.url(), 3),
        transaction_route(&["sink-a", "sink-b"])
    );
    let gw = Gateway::start_with_extra(&extra);

    let matching = [
        ("evt_route_1", "transaction.created"),
        ("evt_route_2", "transaction.completed"),
        ("evt_route_3", "transaction.updated"),
    ];
    for (id, ty) in matching {
        gw.post_ledger(&ledger_event(id, ty)).assert_accepted();
    }
    // Not a transaction type: no route matches.
    gw.post_ledger(&ledger_event("evt_route_test", "webhook.test"))
        .assert_accepted();
    // A transaction type, but from another source than the route names.
    let other_body = ledger_event("evt_route_other_source", "transaction.created");
    let std_headers = standard_headers(
        "webhook",
        LEDGER_SECRET,
        "evt_route_other_source",
        now(),
        &other_body,
    );
    gw.post("/webhooks/ledger-std", &borrowed(&std_headers), &other_body)
        .assert_accepted();

    for (id, _) in matching {
        let (seq, envelope) = stored_row(&gw, id);
        for (name, sink) in [("sink-a", &a), ("sink-b", &b)] {
            let d = wait_delivery(&gw, seq, name, "delivered");
            assert_eq!(d["webhook_id"], format!("ledger:{id}"), "{d}");
            assert_eq!(d["route"], "transactions", "{d}");
            assert_eq!(d["attempts"], 1, "{d}");
            assert_eq!(history_statuses(&d), [Some(200)], "{d}");
            // Delivered in the store means the sink already answered it: check what it got.
            let got: Vec<Received> = sink
                .received()
                .into_iter()
                .filter(|r| r.event_id() == Some(id))
                .collect();
            assert_eq!(got.len(), 1, "{id} reached {name} exactly once: {got:?}");
            assert_is_delivery_of(&got[0], id, &envelope);
            assert_eq!(got[0].answered, 200);
        }
        assert_eq!(event_detail(&gw, seq)["status"], "routed");
    }

    // The two non-matching events are routed to nothing and say so.
    let unrouted = gw.admin(
        "GET",
        "/admin/events?source=ledger&type=ledger.webhook.test",
    );
    assert_eq!(unrouted.status, 200, "{}", unrouted.body);
    let seq_test = unrouted.json()["events"][0]["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("webhook.test is listed: {}", unrouted.body));
    let seq_other: i64 = gw
        .db()
        .query_row(
            "SELECT seq FROM events WHERE source = 'ledger-std'",
            [],
            |r| r.get(0),
        )
        .expect("the ledger-std event is stored");
    for seq in [seq_test, seq_other] {
        let detail = wait_until(&gw, &format!("event {seq} becomes unrouted"), || {
            let d = event_detail(&gw, seq);
            (d["status"] != "pending").then_some(d)
        });
        assert_eq!(detail["status"], "unrouted", "{detail}");
        assert_eq!(detail["deliveries"], serde_json::json!([]), "{detail}");
    }
    let listed = gw.admin("GET", "/admin/events?status=unrouted");
    let listed_seqs: BTreeSet<i64> = listed.json()["events"]
        .as_array()
        .expect("events array")
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(listed_seqs, BTreeSet::from([seq_test, seq_other]));

    assert_metric_reaches(&gw, "gateway_routed_events_total{result=\"unrouted\"}", 2.0);
    assert_metric_reaches(&gw, "gateway_routed_events_total{result=\"routed\"}", 3.0);
    // Every event is settled, so nothing more can be sent: exactly three per sink, no others.
    assert_eq!(
        gw.db()
            .query_row("SELECT count(*) FROM deliveries", [], |r| r
                .get::<_, i64>(0))
            .expect("count"),
        6
    );
    let want: BTreeMap<String, usize> = matching
        .iter()
        .map(|(id, _)| ((*id).to_owned(), 1))
        .collect();
    assert_eq!(
        by_id(&a.received()),
        want,
        "sink-a got each matching event once"
    );
    assert_eq!(
        by_id(&b.received()),
        want,
        "sink-b got each matching event once"
    );
    for (name, sink) in [("sink-a", &a), ("sink-b", &b)] {
        assert_eq!(deliveries_metric(&gw, name, "ok"), 3.0, "{name}");
        assert_eq!(deliveries_metric(&gw, name, "retry"), 0.0, "{name}");
        assert_eq!(deliveries_metric(&gw, name, "dead"), 0.0, "{name}");
        assert_eq!(sink.delivered().len(), 3, "{name}");
    }
}

#[test]
fn a_failing_sink_is_retried_until_it_accepts() {
    let sink = Sink::start(Mode::FailNext { n: 2, status: 500 });
    let extra = format!(
        "{ADMIN}{}{}",
        http_destination("sink", &sink.url(), 3),
        transaction_route(&["sink"])
    );
    let gw = Gateway::start_with_extra(&extra);
    let id = "evt_retry_1";
    gw.post_ledger(&ledger_event(id, "transaction.completed"))
        .assert_accepted();
    let (seq, envelope) = stored_row(&gw, id);

    let d = wait_delivery(&gw, seq, "sink", "delivered");
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(
        history_statuses(&d),
        [Some(500), Some(500), Some(200)],
        "three attempts in the history: {d}"
    );
    let history = d["history"].as_array().expect("history");
    let at: Vec<i64> = history.iter().filter_map(|a| a["at"].as_i64()).collect();
    assert!(at.windows(2).all(|w| w[1] > w[0]), "attempts in order: {d}");
    // Backoff: at least half of backoff_initial (equal jitter) between attempt 1 and 2.
    assert!(at[1] - at[0] >= 25, "backoff between attempts: {at:?}");
    assert!(
        history[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{d}"
    );
    assert!(
        d.get("next_attempt_at").is_none(),
        "no next attempt once delivered: {d}"
    );

    let got = sink.received();
    assert_eq!(got.len(), 3, "three requests reached the sink: {got:?}");
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 500, 200]);
    for r in &got {
        // Every attempt carries the same id and body, each freshly signed.
        assert_is_delivery_of(r, id, &envelope);
    }
    assert_eq!(sink.delivered().len(), 1, "delivered once");

    assert_eq!(deliveries_metric(&gw, "sink", "retry"), 2.0);
    assert_eq!(deliveries_metric(&gw, "sink", "ok"), 1.0);
    assert_eq!(deliveries_metric(&gw, "sink", "dead"), 0.0);
    assert_eq!(event_detail(&gw, seq)["status"], "routed");
}

#[test]
fn the_last_failure_makes_a_dead_letter_that_redrive_delivers() {
    let sink = Sink::start(Mode::Always(500));
    let extra = format!(
        "{ADMIN}{}{}",
        http_destination("sink", &sink.url(), 3),
        transaction_route(&["sink"])
    );
    let gw = Gateway::start_with_extra(&extra);
    let id = "evt_dead_1";
    gw.post_ledger(&ledger_event(id, "transaction.created"))
        .assert_accepted();
    let (seq, envelope) = stored_row(&gw, id);

    let d = wait_delivery(&gw, seq, "sink", "dead");
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(
        history_statuses(&d),
        [Some(500), Some(500), Some(500)],
        "max_attempts attempts, each a 500: {d}"
    );
    let last_error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("3 attempts") && last_error.contains("500"),
        "{d}"
    );
    // Dead: no attempt is left, so what the sink has now is all it gets.
    assert_eq!(sink.received().len(), 3);
    assert!(sink.delivered().is_empty());

    let dead = gw.admin("GET", "/admin/dead-letters");
    assert_eq!(dead.status, 200, "{}", dead.body);
    let listed = dead.json()["deliveries"].clone();
    let listed = listed.as_array().expect("deliveries array");
    assert_eq!(listed.len(), 1, "{}", dead.body);
    assert_eq!(listed[0]["id"], d["id"]);
    assert_eq!(listed[0]["webhook_id"], format!("ledger:{id}"));
    assert_eq!(listed[0]["event_seq"], seq);
    assert_eq!(listed[0]["status"], "dead");
    wait_gauge(&gw, "gateway_dead_letters", 1.0);
    assert_eq!(deliveries_metric(&gw, "sink", "retry"), 2.0);
    assert_eq!(deliveries_metric(&gw, "sink", "dead"), 1.0);
    assert_eq!(deliveries_metric(&gw, "sink", "ok"), 0.0);

    // The sink recovers; an operator redrives every dead letter.
    sink.set_mode(Mode::Ok);
    let r = gw.admin("POST", "/admin/dead-letters/redrive");
    assert_eq!(
        (r.status, r.json()),
        (202, serde_json::json!({"ok": true, "redriven": 1})),
        "{}",
        r.body
    );
    let d = wait_delivery(&gw, seq, "sink", "delivered");
    assert_eq!(
        history_statuses(&d),
        [Some(500), Some(500), Some(500), Some(200)],
        "the history keeps the dead attempts and adds the redriven one: {d}"
    );
    let delivered = sink.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_is_delivery_of(&delivered[0], id, &envelope);
    assert_eq!(sink.received().len(), 4);

    let dead = gw.admin("GET", "/admin/dead-letters").json();
    assert_eq!(dead["deliveries"], serde_json::json!([]), "{dead}");
    wait_gauge(&gw, "gateway_dead_letters", 0.0);
    assert_eq!(deliveries_metric(&gw, "sink", "ok"), 1.0);
    // Nothing left to redrive.
    let r = gw.admin("POST", "/admin/dead-letters/redrive");
    assert_eq!(
        (r.status, r.json()),
        (202, serde_json::json!({"ok": true, "redriven": 0}))
    );
}

/// The SSRF guard: a destination whose host name resolves to loopback is never connected to
/// unless it sets `allow_private_network`; the delivery dead-letters with the reason.
#[test]
fn a_destination_resolving_to_loopback_is_refused_without_allow_private_network() {
    let sink = Sink::start(Mode::Ok);
    let url = sink.url().replace("127.0.0.1", "localhost");
    let extra = format!(
        "{ADMIN}\n[destinations.inside]\nhttp = \"{url}\"\nsecret = \"env:E2E_SINK_SECRET\"\n\
         max_attempts = 2\nbackoff_initial = \"50ms\"\nbackoff_max = \"50ms\"\n{}",
        transaction_route(&["inside"])
    );
    let gw = Gateway::start_with_extra(&extra);
    gw.post_ledger(&ledger_event("evt_ssrf_1", "transaction.created"))
        .assert_accepted();
    let (seq, _) = stored_row(&gw, "evt_ssrf_1");
    let d = wait_delivery(&gw, seq, "inside", "dead");
    assert_eq!(history_statuses(&d), [None, None], "{d}");
    let last_error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("`localhost` resolves only to denied addresses: 127.0.0.1")
            && last_error.contains("allow_private_network = true"),
        "{d}"
    );
    assert!(sink.received().is_empty(), "nothing may reach the sink");
}

#[test]
fn gone_stops_at_once_and_one_delivery_can_be_redriven() {
    let sink = Sink::start(Mode::Always(410));
    let extra = format!(
        "{ADMIN}{}{}",
        http_destination("sink", &sink.url(), 5),
        transaction_route(&["sink"])
    );
    let gw = Gateway::start_with_extra(&extra);
    let id = "evt_gone_1";
    gw.post_ledger(&ledger_event(id, "transaction.created"))
        .assert_accepted();
    let (seq, envelope) = stored_row(&gw, id);

    let d = wait_delivery(&gw, seq, "sink", "dead");
    assert_eq!(d["attempts"], 1, "410 is not retried: {d}");
    assert_eq!(history_statuses(&d), [Some(410)], "{d}");
    assert!(
        d["last_error"].as_str().is_some_and(|e| e.contains("410")),
        "{d}"
    );
    assert_eq!(sink.received().len(), 1, "one attempt only");
    assert_eq!(deliveries_metric(&gw, "sink", "dead"), 1.0);
    assert_eq!(deliveries_metric(&gw, "sink", "retry"), 0.0);
    wait_gauge(&gw, "gateway_dead_letters", 1.0);

    // Redrive exactly this delivery once the receiver takes events again.
    sink.set_mode(Mode::Ok);
    let delivery_id = d["id"].as_i64().expect("delivery id");
    let path = format!("/admin/deliveries/{delivery_id}/redrive");
    let r = gw.admin("POST", &path);
    assert_eq!(
        (r.status, r.json()),
        (202, serde_json::json!({"ok": true, "redriven": 1})),
        "{}",
        r.body
    );
    let d = wait_delivery(&gw, seq, "sink", "delivered");
    assert_eq!(history_statuses(&d), [Some(410), Some(200)], "{d}");
    let delivered = sink.delivered();
    assert_eq!(delivered.len(), 1);
    assert_is_delivery_of(&delivered[0], id, &envelope);
    // It is no longer a dead letter, so a second redrive finds nothing.
    gw.admin("POST", &path).assert_error(404);
    wait_gauge(&gw, "gateway_dead_letters", 0.0);
}

/// The ids of the events the admin API lists with this status.
fn events_with_status(gw: &Gateway, status: &str) -> Vec<String> {
    let r = gw.admin("GET", &format!("/admin/events?status={status}&limit=1000"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events array: {}", r.body))
        .iter()
        .map(|e| e["id"].as_str().expect("event id").to_owned())
        .collect()
}

/// The webhook ids of the deliveries with this status in the store at `db`.
fn delivery_ids(db: &Path, status: &str) -> HashSet<String> {
    let conn = open_db(db);
    let mut stmt = conn
        .prepare("SELECT webhook_id FROM deliveries WHERE status = ?1")
        .expect("prepare");
    stmt.query_map([status], |r| r.get(0))
        .expect("query deliveries")
        .map(|r| r.expect("a webhook id"))
        .collect()
}

#[test]
fn no_acked_event_is_lost_across_a_sink_outage_and_kill_9() {
    const BEFORE_OUTAGE: usize = 20;
    const TOTAL: usize = 50;
    let sink = Sink::start(Mode::Ok);
    let extra = format!(
        "{ADMIN}{}{}",
        http_destination("sink", &sink.url(), 50),
        transaction_route(&["sink"])
    );
    let gw = Gateway::start_with_extra(&extra);

    let mut acked = Vec::new();
    for i in 0..TOTAL {
        if i == BEFORE_OUTAGE {
            sink.down();
        }
        let id = format!("evt_outage_{i}");
        gw.post_ledger(&ledger_event(&id, "transaction.created"))
            .assert_accepted();
        acked.push(id);
    }
    // Kill only once retries are under way (some delivery failed at least twice).
    wait_until(&gw, "retries are pending", || {
        let n = count(
            &gw.db(),
            "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts >= 2",
        );
        (n > 0).then_some(())
    });
    let (dir, db) = gw.kill();
    // What the store knew at the kill.
    let delivered_at_kill = delivery_ids(&db, "delivered");
    let pending_at_kill = delivery_ids(&db, "pending").len();
    let unrouted_at_kill = count(
        &open_db(&db),
        "SELECT count(*) FROM event_states WHERE status = 'pending'",
    );
    let received_at_kill = sink.received().len();

    let gw = Gateway::start_in(dir, db);
    sink.up();
    let acked_set: BTreeSet<String> = acked.iter().cloned().collect();
    sink.wait_for(PATIENCE, "every acked event delivered", |got| {
        let delivered: BTreeSet<&str> = got
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .filter_map(Received::event_id)
            .collect();
        acked_set.iter().all(|id| delivered.contains(id.as_str()))
    });
    // Once no event waits for routing and no delivery for an attempt, nothing more is sent.
    wait_until(
        &gw,
        "every event routed and every delivery delivered",
        || {
            let waiting = count(
                &gw.db(),
                "SELECT count(*) FROM deliveries WHERE status != 'delivered'",
            );
            let routed = events_with_status(&gw, "routed");
            (waiting == 0 && routed.len() == TOTAL).then_some(())
        },
    );
    assert!(events_with_status(&gw, "pending").is_empty());
    assert!(events_with_status(&gw, "replay").is_empty());
    let conn = gw.db();
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM (SELECT event_seq FROM deliveries GROUP BY event_seq HAVING count(*) = 1)"
        ),
        i64::try_from(TOTAL).expect("small"),
        "exactly one delivery row per event: none was routed twice"
    );

    let delivered = sink.delivered();
    let per_id = by_id(&delivered);
    let delivered_ids: BTreeSet<String> = per_id.keys().cloned().collect();
    assert_eq!(
        delivered_ids, acked_set,
        "the sink accepted exactly the acknowledged events"
    );
    for r in &delivered {
        assert!(verify(SINK_SECRET, r), "signed: {r:?}");
    }
    let twice: Vec<(&String, &usize)> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    // A copy is allowed only for a delivery whose success the store had not recorded at the
    // kill (it was in flight); a recorded delivery must never be sent again.
    for (id, _) in &twice {
        assert!(
            !delivered_at_kill.contains(&format!("ledger:{id}")),
            "{id} was recorded delivered before the kill, yet sent again: {twice:?}"
        );
    }
    eprintln!(
        "outage + kill -9: {TOTAL} acked; at the kill {} delivered, {pending_at_kill} pending \
         deliveries, {unrouted_at_kill} events not yet routed, {received_at_kill} requests \
         seen by the sink; afterwards {} 2xx deliveries, {} id(s) delivered twice: {twice:?}",
        delivered_at_kill.len(),
        delivered.len(),
        twice.len()
    );
    wait_gauge(&gw, "gateway_queue_depth", 0.0);
    wait_gauge(&gw, "gateway_dead_letters", 0.0);
}

#[test]
fn the_file_destination_appends_one_envelope_per_line() {
    let out = tempfile::tempdir().expect("temp dir for the file destination");
    let path = out.path().join("audit").join("events.jsonl");
    let extra = format!(
        "{ADMIN}{}{}",
        file_destination("audit", &path),
        transaction_route(&["audit"])
    );
    let gw = Gateway::start_with_extra(&extra);

    let ids: Vec<String> = (0..5).map(|i| format!("evt_file_{i}")).collect();
    for id in &ids {
        gw.post_ledger(&ledger_event(id, "transaction.updated"))
            .assert_accepted();
    }
    gw.post_ledger(&ledger_event("evt_file_test", "webhook.test"))
        .assert_accepted();

    let mut envelopes = BTreeMap::new();
    for id in &ids {
        let (seq, envelope) = stored_row(&gw, id);
        let d = wait_delivery(&gw, seq, "audit", "delivered");
        assert_eq!(d["attempts"], 1, "{d}");
        envelopes.insert(id.clone(), envelope);
    }
    let (seq_test, _) = stored_row(&gw, "evt_file_test");
    let status = wait_until(&gw, "webhook.test is routed", || {
        let s = event_detail(&gw, seq_test)["status"].clone();
        (s != "pending").then_some(s)
    });
    assert_eq!(status, "unrouted");

    // Every delivery is recorded, so the file is complete.
    let text = std::fs::read_to_string(&path).expect("the file destination exists");
    assert!(text.ends_with('\n'), "every line is terminated");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        ids.len(),
        "one line per matching event:\n{text}"
    );
    let mut seen = BTreeSet::new();
    for line in lines {
        let v: Value = serde_json::from_str(line).expect("each line is JSON");
        let id = v["id"].as_str().expect("line has an id").to_owned();
        let envelope = envelopes
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected line for {id}: {line}"));
        assert_eq!(
            line, envelope,
            "{id}: the line is exactly the stored envelope"
        );
        assert!(seen.insert(id.clone()), "{id} written once");
    }
    assert_eq!(seen.len(), ids.len());
    assert_eq!(deliveries_metric(&gw, "audit", "ok"), 5.0);
}

/// A provider that pretty-prints its body (CRLF line ends, a U+2028 inside a string): the file
/// still holds one JSON value per line, and its `data` is the body's `data` in value.
#[test]
fn a_pretty_printed_body_is_still_one_line_in_the_file() {
    let out = tempfile::tempdir().expect("temp dir for the file destination");
    let path = out.path().join("events.jsonl");
    let extra = format!(
        "{ADMIN}{}{}",
        file_destination("audit", &path),
        transaction_route(&["audit"])
    );
    let gw = Gateway::start_with_extra(&extra);
    let pretty = "{\r\n  \"id\": \"evt_pretty\",\r\n  \"type\": \"transaction.created\",\r\n  \
                  \"createdAt\": 1763856000000,\r\n  \"data\": {\r\n    \"id\": \"txn_pretty\",\r\n    \
                  \"amount\": \"12.50\",\r\n    \"memo\": \"line\u{2028}separator\",\r\n    \
                  \"legs\": [\r\n      1,\r\n      2\r\n    ]\r\n  }\r\n}\r\n";
    gw.post_ledger(pretty.as_bytes()).assert_accepted();
    let (seq, _) = stored_row(&gw, "evt_pretty");
    wait_delivery(&gw, seq, "audit", "delivered");

    let text = std::fs::read_to_string(&path).expect("the file destination exists");
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 2, "one line and its terminator: {text:?}");
    assert_eq!(lines[1], "", "{text:?}");
    let line = lines[0];
    assert!(
        !line.contains(['\r', '\u{85}', '\u{2028}', '\u{2029}']),
        "nothing a line reader splits at: {line:?}"
    );
    let written: Value = serde_json::from_str(line).expect("the line is one JSON value");
    let sent: Value = serde_json::from_str(pretty).expect("the body is JSON");
    assert_eq!(written["id"], "evt_pretty");
    assert_eq!(written["data"], sent["data"], "{line}");
}

/// A sink of its own for the retry race: every request is answered after a random delay (so
/// attempts end at random moments relative to the gateway's retry polls), with `fail` for the
/// first `fail_first` requests of each webhook-id and 200 after that.
mod flaky_sink {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use rand::Rng as _;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// One request: its webhook-id, the status answered, when it came and when it was answered.
    #[derive(Debug, Clone)]
    pub(crate) struct Hit {
        pub(crate) id: String,
        pub(crate) answered: u16,
        pub(crate) start: Instant,
        pub(crate) end: Instant,
    }

    #[derive(Debug, Default)]
    struct State {
        seen: HashMap<String, usize>,
        hits: Vec<Hit>,
    }

    #[derive(Debug)]
    pub(crate) struct FlakySink {
        addr: SocketAddr,
        state: Arc<Mutex<State>>,
    }

    impl FlakySink {
        pub(crate) fn start(fail_first: usize, fail: u16, max_delay: Duration) -> Self {
            let state: Arc<Mutex<State>> = Arc::default();
            let shared = Arc::clone(&state);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("flaky sink runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("flaky sink binds");
                    tx.send(listener.local_addr().expect("address"))
                        .expect("report address");
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| {
                                handle(Arc::clone(&state), req, fail_first, fail, max_delay)
                            });
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http1::Builder::new().serve_connection(io, svc).await;
                        });
                    }
                });
            });
            let addr = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("flaky sink started");
            Self { addr, state }
        }

        pub(crate) fn url(&self) -> String {
            format!("http://{}/hook", self.addr)
        }

        pub(crate) fn hits(&self) -> Vec<Hit> {
            self.state.lock().expect("sink state").hits.clone()
        }
    }

    async fn handle(
        state: Arc<Mutex<State>>,
        req: hyper::Request<Incoming>,
        fail_first: usize,
        fail: u16,
        max_delay: Duration,
    ) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
        let start = Instant::now();
        let id = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        req.into_body().collect().await?;
        let answered = {
            let mut s = state.lock().expect("sink state");
            let n = s.seen.entry(id.clone()).or_insert(0);
            *n += 1;
            if *n <= fail_first { fail } else { 200 }
        };
        let max = u64::try_from(max_delay.as_millis()).unwrap_or(u64::MAX);
        let delay = rand::rng().random_range(0..=max);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        state.lock().expect("sink state").hits.push(Hit {
            id,
            answered,
            start,
            end: Instant::now(),
        });
        let mut res = hyper::Response::new(Full::new(Bytes::new()));
        *res.status_mut() = hyper::StatusCode::from_u16(answered).expect("valid status");
        Ok(res)
    }
}

/// Many deliveries retried at once against slow receivers: every attempt ends at a random
/// moment, also while the retry loop is reading which deliveries are due. An attempt must
/// never be made again once its result is recorded: a delivered webhook is not sent again, and
/// a dead letter gets no attempt past `max_attempts`.
#[test]
fn a_recorded_attempt_is_never_repeated_under_many_concurrent_retries() {
    const N: usize = 200;
    let flaky = flaky_sink::FlakySink::start(2, 500, Duration::from_millis(150));
    let broken = flaky_sink::FlakySink::start(usize::MAX, 500, Duration::from_millis(150));
    let wide = |d: String| d.replace("concurrency = 8", "concurrency = 256");
    let extra = format!(
        "{ADMIN}{}{}{}",
        wide(http_destination("flaky", &flaky.url(), 5)),
        wide(http_destination("broken", &broken.url(), 4)),
        transaction_route(&["flaky", "broken"])
    );
    let gw = Gateway::start_with_extra(&extra);
    let ids: Vec<String> = (0..N).map(|i| format!("evt_race_{i}")).collect();
    for id in &ids {
        gw.post_ledger(&ledger_event(id, "transaction.created"))
            .assert_accepted();
    }
    let n = i64::try_from(N).expect("small");
    wait_until(&gw, "every delivery settled", || {
        let conn = gw.db();
        let settled = count(
            &conn,
            "SELECT count(*) FROM deliveries WHERE (destination = 'flaky' AND status = 'delivered') \
             OR (destination = 'broken' AND status = 'dead')",
        );
        (settled == 2 * n).then_some(())
    });
    // Settled: no attempt is due any more, so the sinks have everything they will get.
    let conn = gw.db();
    for (destination, attempts) in [("flaky", 3), ("broken", 4)] {
        let wrong: Vec<(String, i64, i64)> = conn
            .prepare(
                "SELECT webhook_id, attempts, json_array_length(history) FROM deliveries \
                 WHERE destination = ?1 AND (attempts != ?2 OR json_array_length(history) != ?2)",
            )
            .expect("prepare")
            .query_map(rusqlite::params![destination, attempts], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        assert!(
            wrong.is_empty(),
            "{destination}: deliveries with other than {attempts} attempts (id, attempts, history): {wrong:?}"
        );
    }
    for (name, sink, want) in [
        ("flaky", &flaky, vec![500, 500, 200]),
        ("broken", &broken, vec![500, 500, 500, 500]),
    ] {
        let mut per_id: BTreeMap<String, Vec<flaky_sink::Hit>> = BTreeMap::new();
        for hit in sink.hits() {
            per_id.entry(hit.id.clone()).or_default().push(hit);
        }
        assert_eq!(per_id.len(), N, "{name}: every event reached it");
        for (id, hits) in &per_id {
            let answered: Vec<u16> = hits.iter().map(|h| h.answered).collect();
            assert_eq!(answered, want, "{name}: attempts of {id}");
            // One delivery's attempts never overlap.
            for pair in hits.windows(2) {
                assert!(
                    pair[0].end <= pair[1].start,
                    "{name}: {id} attempts overlap"
                );
            }
        }
    }
    assert_eq!(deliveries_metric(&gw, "flaky", "ok"), N as f64);
    assert_eq!(deliveries_metric(&gw, "flaky", "retry"), (2 * N) as f64);
    assert_eq!(deliveries_metric(&gw, "broken", "dead"), N as f64);
    assert_eq!(deliveries_metric(&gw, "broken", "retry"), (3 * N) as f64);
}
