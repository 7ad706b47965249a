//! Ordered delivery per subject (`ordering = "subject"`), end to end with the real binary and
//! a real sink that checks, for every request, that no other request about the same subject is
//! in it at the same time: events of one subject sent newest first within the reorder window
//! arrive in the provider's order; a subject whose delivery keeps failing holds only itself
//! while 100 other subjects are delivered, then delivers in order; a dead letter holds its
//! subject until a redrive (`on_dead = "hold"`) or moves on (`"skip"`, or an operator's skip);
//! a stale event with `stale = "drop"` is not delivered and is recorded; and two replicas on
//! PostgreSQL, one of them killed with SIGKILL mid-run, never have two deliveries of a subject
//! in flight and deliver every subject in order.

use crate::harness::*;
use crate::replica_harness::{database, replica_config, restart_replica, start_replica};
use crate::sink::{Mode, Received, Sink};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) const ADMIN: &str = "[admin]\ntoken = \"env:E2E_ADMIN_TOKEN\"\n";

pub(crate) fn ordered_destination(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[destinations.{name}]
http = "{url}"
secret = "env:E2E_SINK_SECRET"
allow_private_network = true
timeout = "2s"
backoff_initial = "50ms"
backoff_max = "100ms"
concurrency = 8
ordering = "subject"
{extra}
"#
    )
}

fn route_to(to: &[&str]) -> String {
    let to: Vec<String> = to.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "\n[[routes]]\nname = \"all\"\nmatch = {{ source = [\"ledger\"], type = [\"*\"] }}\n\
         plugins = []\nto = [{}]\n",
        to.join(", ")
    )
}

/// A Ledger event about `subject` created at `created_ms` (the provider's time).
pub(crate) fn event_about(id: &str, subject: &str, created_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"transaction.updated","createdAt":{created_ms},"data":{{"id":"{subject}","amount":"1.00"}}}}"#
    )
    .into_bytes()
}

/// The event ids delivered (2xx) about `subject`, in the order they arrived, each once (an
/// attempt repeated after a crash, with the same `webhook-id`, is one delivery).
pub(crate) fn delivered_ids(got: &[Received], subject: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in got {
        if (200..300).contains(&r.answered) && r.subject().as_deref() == Some(subject) {
            let id = r.event_id().expect("a plain webhook-id").to_owned();
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_subjects_events_sent_newest_first_within_the_window_arrive_in_provider_order() {
    let sink = Sink::start(Mode::Ok);
    let extra = format!(
        "{ADMIN}{}{}",
        ordered_destination("books", &sink.url(), "reorder_window = \"1s\""),
        route_to(&["books"])
    );
    let gw = Gateway::start_with_extra(&extra);
    let t = now_ms();
    for n in (0..4).rev() {
        let body = event_about(&format!("evt_rev_{n}"), "txn_rev", t + n);
        gw.post_ledger(&body).assert_accepted();
    }
    for n in 0..2 {
        let body = event_about(&format!("evt_fwd_{n}"), "txn_fwd", t + n);
        gw.post_ledger(&body).assert_accepted();
    }
    let got = sink.wait_for(PATIENCE, "six deliveries", |got| got.len() >= 6);
    assert_eq!(
        delivered_ids(&got, "txn_rev"),
        ["evt_rev_0", "evt_rev_1", "evt_rev_2", "evt_rev_3"]
    );
    assert_eq!(delivered_ids(&got, "txn_fwd"), ["evt_fwd_0", "evt_fwd_1"]);
    assert_eq!(sink.subject_overlaps(), Vec::<String>::new());
}

#[test]
fn a_failing_subject_holds_only_itself_while_100_others_are_delivered() {
    let sink = Sink::start(Mode::Ok);
    // Fails until the test says otherwise (max_attempts is far away).
    sink.fail_subject("txn_slow", 1_000, 503);
    let extra = format!(
        "{ADMIN}{}{}",
        ordered_destination("books", &sink.url(), "max_attempts = 100"),
        route_to(&["books"])
    );
    let gw = Gateway::start_with_extra(&extra);
    let t = now_ms();
    for n in 0..3 {
        let body = event_about(&format!("evt_slow_{n}"), "txn_slow", t + n);
        gw.post_ledger(&body).assert_accepted();
    }
    for n in 0..100 {
        let body = event_about(&format!("evt_other_{n}"), &format!("txn_other_{n}"), t);
        gw.post_ledger(&body).assert_accepted();
    }
    let got = sink.wait_for(PATIENCE, "the 100 other subjects", |got| {
        got.iter().filter(|r| r.answered == 200).count() >= 100
    });
    let slow: Vec<&Received> = got
        .iter()
        .filter(|r| r.subject().as_deref() == Some("txn_slow"))
        .collect();
    assert!(!slow.is_empty(), "the first attempt was made");
    assert!(
        slow.iter()
            .all(|r| r.event_id() == Some("evt_slow_0") && r.answered == 503),
        "only its first event was tried: {:?}",
        slow.iter().map(|r| r.event_id()).collect::<Vec<_>>()
    );
    // Its later events are counted as waiting behind it.
    wait_until("txn_slow listed as blocked", || {
        let listed = gw.admin("GET", "/admin/blocked-subjects").json();
        listed["blocked_subjects"][0]["subject"] == "txn_slow"
            && listed["blocked_subjects"][0]["waiting"] == 2
    });
    sink.fail_subject("txn_slow", 0, 503);
    let got = sink.wait_for(PATIENCE, "txn_slow delivered", |got| {
        delivered_ids(got, "txn_slow").len() == 3
    });
    assert_eq!(
        delivered_ids(&got, "txn_slow"),
        ["evt_slow_0", "evt_slow_1", "evt_slow_2"]
    );
    assert_eq!(sink.subject_overlaps(), Vec::<String>::new());
}

#[test]
fn a_dead_letter_holds_its_subject_until_redriven_or_skipped_and_stale_events_are_dropped() {
    let (held, skipping) = (Sink::start(Mode::Ok), Sink::start(Mode::Ok));
    let extra = format!(
        "{ADMIN}{}{}{}",
        ordered_destination(
            "held",
            &held.url(),
            "max_attempts = 1\non_dead = \"hold\"\nstale = \"drop\""
        ),
        ordered_destination(
            "skipping",
            &skipping.url(),
            "max_attempts = 1\non_dead = \"skip\""
        ),
        route_to(&["held", "skipping"])
    );
    let gw = Gateway::start_with_extra(&extra);
    for sink in [&held, &skipping] {
        sink.fail_subject("txn_a", 1, 503);
        sink.fail_subject("txn_b", 1, 503);
    }
    let t = now_ms();
    for subject in ["txn_a", "txn_b"] {
        for n in 0..2 {
            let body = event_about(&format!("evt_{subject}_{n}"), subject, t + n);
            gw.post_ledger(&body).assert_accepted();
        }
    }
    // on_dead = "skip": the dead first event does not hold the second.
    let got = skipping.wait_for(PATIENCE, "the second events", |got| {
        delivered_ids(got, "txn_a").len() == 1 && delivered_ids(got, "txn_b").len() == 1
    });
    assert_eq!(delivered_ids(&got, "txn_a"), ["evt_txn_a_1"]);

    // on_dead = "hold": both subjects wait; the admin API and the metrics say so.
    let mut blocked = serde_json::Value::Null;
    wait_until("two blocked subjects", || {
        blocked = gw.admin("GET", "/admin/blocked-subjects").json();
        blocked["blocked_subjects"].as_array().map(Vec::len) == Some(2)
    });
    let rows = blocked["blocked_subjects"].as_array().expect("a list");
    assert!(
        rows.iter()
            .all(|b| b["destination"] == "held" && b["status"] == "dead" && b["waiting"] == 1)
    );
    wait_until("the blocked-subjects gauge", || {
        metric(
            &gw.metrics(),
            "gateway_ordering_blocked_subjects{destination=\"held\"}",
        ) == 2.0
    });
    assert!(delivered_ids(&held.received(), "txn_a").is_empty());
    let id_of = |subject: &str| {
        rows.iter()
            .find(|b| b["subject"] == subject)
            .and_then(|b| b["delivery_id"].as_i64())
            .expect("listed")
    };
    // A redrive delivers the held event first, then the one behind it.
    let r = gw.admin(
        "POST",
        &format!("/admin/deliveries/{}/redrive", id_of("txn_a")),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    // A skip lets the subject go on without its dead letter.
    let r = gw.admin(
        "POST",
        &format!("/admin/deliveries/{}/skip", id_of("txn_b")),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["skipped"], 1);
    let r = gw.admin(
        "POST",
        &format!("/admin/deliveries/{}/skip", id_of("txn_b")),
    );
    assert_eq!(r.status, 404, "skipped once: {}", r.body);
    let got = held.wait_for(PATIENCE, "both subjects go on", |got| {
        delivered_ids(got, "txn_a").len() == 2 && delivered_ids(got, "txn_b").len() == 1
    });
    assert_eq!(delivered_ids(&got, "txn_a"), ["evt_txn_a_0", "evt_txn_a_1"]);
    assert_eq!(delivered_ids(&got, "txn_b"), ["evt_txn_b_1"]);
    wait_until("nothing blocked", || {
        gw.admin("GET", "/admin/blocked-subjects").json()["blocked_subjects"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });

    // An event older than one already delivered: dropped (stale = "drop"), recorded why.
    let body = event_about("evt_txn_a_late", "txn_a", t - 1_000);
    gw.post_ledger(&body).assert_accepted();
    let seq = seq_of(&gw, "ledger", "evt_txn_a_late");
    let mut delivery = serde_json::Value::Null;
    wait_until("the stale event recorded as dropped", || {
        let detail = gw.admin("GET", &format!("/admin/events/{seq}")).json();
        delivery = detail["deliveries"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["destination"] == "held").cloned())
            .unwrap_or_default();
        delivery["status"] == "dropped"
    });
    assert!(
        delivery["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("stale")),
        "{delivery}"
    );
    // With stale = "deliver" (the default) it is delivered, late.
    skipping.wait_for(PATIENCE, "the stale event delivered", |got| {
        delivered_ids(got, "txn_a").contains(&"evt_txn_a_late".to_owned())
    });
    assert!(!delivered_ids(&held.received(), "txn_a").contains(&"evt_txn_a_late".to_owned()));
    assert_eq!(held.subject_overlaps(), Vec::<String>::new());
}

#[test]
fn two_replicas_one_killed_mid_run_never_overlap_a_subject_and_deliver_in_order() {
    let pg = database();
    let sink = Sink::start(Mode::Ok);
    // Each answer takes a moment, so two deliveries of one subject would overlap visibly.
    sink.set_delay(Duration::from_millis(15));
    // No reorder window: an event the killed replica acked but had not routed yet holds the
    // later events of its subject (routed meanwhile by the other replica) until it is routed,
    // after the lease.
    let config = replica_config(&sink.url()).replace(
        "concurrency = 16\n",
        "concurrency = 16\nordering = \"subject\"\n",
    );
    let conninfo = pg.conninfo("gateway");
    let mut replicas = vec![
        start_replica(&config, &conninfo),
        start_replica(&config, &conninfo),
    ];
    const SUBJECTS: usize = 12;
    const PER_SUBJECT: usize = 12;
    let t = now_ms();
    let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in 0..PER_SUBJECT {
        if n == PER_SUBJECT / 2 {
            // Mid-run, with deliveries in flight: SIGKILL, then back.
            let (dir, _) = replicas.remove(0).kill();
            replicas.insert(0, restart_replica(dir, &conninfo));
        }
        for s in 0..SUBJECTS {
            let subject = format!("txn_k{s}");
            let id = format!("evt_k{s}_{n}");
            // Provider times go up with n; within a round they are sent to both replicas.
            let body = event_about(&id, &subject, t + i64::try_from(n).unwrap_or(0));
            replicas[(s + n) % 2].post_ledger(&body).assert_accepted();
            sent.entry(subject).or_default().push(id);
        }
    }
    let got = sink.wait_for(Duration::from_secs(60), "every event delivered", |got| {
        sent.iter()
            .all(|(subject, ids)| delivered_ids(got, subject).len() >= ids.len())
    });
    for (subject, ids) in &sent {
        assert_eq!(&delivered_ids(&got, subject), ids, "{subject}");
    }
    assert_eq!(sink.subject_overlaps(), Vec::<String>::new());
}
