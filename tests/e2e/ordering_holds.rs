//! An event of a subject that is stored but not routed yet holds the later deliveries of its
//! subject to an ordered destination (docs/ordering.md), end to end with the real binary:
//! on PostgreSQL when the replica that stored it is killed (`kill -9`) before routing it, so
//! another replica routes it only after the lease; on SQLite while its routing is slow (a
//! plugin that waits). Meanwhile other subjects are delivered, and the admin API lists the
//! held subject as `unrouted` (and, on SQLite, `gateway_ordering_unrouted_holds` counts it).
//! An event no route takes to an ordered destination holds nothing.

use crate::harness::*;
use crate::ordering::{ADMIN, delivered_ids, event_about, ordered_destination, wait_until};
use crate::plugin_harness::CACHE_DIR;
use crate::reload::http_destination;
use crate::replica_harness::{LEASE, database, replica_config, start_replica};
use crate::sink::{Mode, Sink};
use plugin_artifacts::SLEEP;
use serde_json::Value;

/// The lease here: long enough that the test sees the hold (it ends with the lease), short
/// enough to keep the test quick.
const HOLD_LEASE: &str = "3s";

/// `[plugins.sleeper]`: the `sleep` fixture waiting `ms` inside `handle` (`None`: an hour),
/// cut off after `timeout`.
fn sleeper(ms: Option<u32>, timeout: &str) -> String {
    let setting = ms.map_or(String::new(), |ms| {
        format!("settings = {{ ms = \"{ms}\" }}\n")
    });
    format!(
        "[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.sleeper]\nwasm = \"{SLEEP}\"\n\
         timeout = \"{timeout}\"\n{setting}\n"
    )
}

/// The blocked-subjects entries of `subject` (admin API).
fn blocked(gw: &Gateway, subject: &str) -> Vec<Value> {
    let all = gw.admin("GET", "/admin/blocked-subjects").json();
    all["blocked_subjects"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|b| b["subject"] == subject)
        .cloned()
        .collect()
}

/// Waits until the admin API lists `subject` as held by an event not routed yet.
fn wait_held_by_unrouted(gw: &Gateway, subject: &str) {
    wait_until(
        &format!("{subject} listed as held by an unrouted event"),
        || {
            blocked(gw, subject).iter().any(|b| {
                b["status"] == "unrouted" && b["delivery_id"].is_null() && b["waiting"] == 1
            })
        },
    );
}

#[test]
fn an_event_acked_by_a_replica_killed_before_routing_it_is_delivered_before_later_ones() {
    let pg = database();
    let sink = Sink::start(Mode::Ok);
    sink.set_delay(std::time::Duration::from_millis(15));
    // Both replicas send to an ordered destination, without a reorder window. Replica A
    // routes through a plugin that waits an hour: whatever it stores stays unrouted until it
    // dies and its lease runs out. Replica B routes without plugins.
    let config = replica_config(&sink.url())
        .replace(
            "concurrency = 16\n",
            "concurrency = 16\nordering = \"subject\"\n",
        )
        .replace(
            &format!("lease = \"{LEASE}\""),
            &format!("lease = \"{HOLD_LEASE}\""),
        );
    let slow = format!(
        "{}\n{}",
        config.replace("plugins = []", "plugins = [\"sleeper\"]"),
        sleeper(None, "60s")
    );
    let conninfo = pg.conninfo("gateway");
    let a = start_replica(&slow, &conninfo);
    let b = start_replica(&config, &conninfo);
    let t = now_ms();

    a.post_ledger(&event_about("evt_s_1", "txn_s", t))
        .assert_accepted();
    let _ = a.kill();
    b.post_ledger(&event_about("evt_s_2", "txn_s", t + 1))
        .assert_accepted();
    b.post_ledger(&event_about("evt_t_1", "txn_t", t))
        .assert_accepted();

    wait_held_by_unrouted(&b, "txn_s");
    // Another subject is delivered meanwhile.
    sink.wait_for(PATIENCE, "txn_t delivered", |got| {
        delivered_ids(got, "txn_t") == ["evt_t_1"]
    });
    // After A's lease, B routes A's event: it goes first.
    let got = sink.wait_for(PATIENCE, "both events of txn_s delivered", |got| {
        delivered_ids(got, "txn_s").len() >= 2
    });
    assert_eq!(delivered_ids(&got, "txn_s"), ["evt_s_1", "evt_s_2"]);
    assert_eq!(sink.subject_overlaps(), Vec::<String>::new());
    assert!(blocked(&b, "txn_s").is_empty());
}

/// A Ledger event of `kind` (its provider type) about `subject` at the provider's `created_ms`.
fn ledger_event(id: &str, kind: &str, subject: &str, created_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"{kind}","createdAt":{created_ms},"data":{{"id":"{subject}","amount":"1.00"}}}}"#
    )
    .into_bytes()
}

#[test]
fn on_sqlite_an_event_whose_routing_is_slow_holds_the_later_ones_of_its_subject() {
    let sink = Sink::start(Mode::Ok);
    let plain = Sink::start(Mode::Ok);
    // `transaction.created` goes through a plugin that waits 6 s (the gauges are read every
    // second, and a loaded machine must still see the hold while it lasts); `transaction.updated` goes straight to the same ordered destination.
    // `wallet.created` goes through a plugin that waits until its 60 s deadline (the test ends
    // long before, however slow the machine) to an unordered destination only: such an event
    // holds nothing.
    let extra = format!(
        "{ADMIN}[workers]\nplugin_threads = 2\n\n{}[plugins.stuck]\nwasm = \"{SLEEP}\"\n\
         timeout = \"60s\"\n\n{}{}\
         [[routes]]\nname = \"slow\"\nmatch = {{ type = [\"ledger.transaction.created\"] }}\n\
         plugins = [\"sleeper\"]\nto = [\"books\"]\n\n\
         [[routes]]\nname = \"fast\"\nmatch = {{ type = [\"ledger.transaction.updated\"] }}\n\
         plugins = []\nto = [\"books\"]\n\n\
         [[routes]]\nname = \"unordered\"\nmatch = {{ type = [\"ledger.wallet.created\"] }}\n\
         plugins = [\"stuck\"]\nto = [\"plain\"]\n",
        sleeper(Some(6000), "20s"),
        ordered_destination("books", &sink.url(), ""),
        http_destination("plain", &plain),
    );
    let gw = Gateway::start_with_extra(&extra);
    let t = now_ms();
    gw.post_ledger(&ledger_event("evt_u_1", "wallet.created", "txn_u", t))
        .assert_accepted();
    gw.post_ledger(&ledger_event(
        "evt_u_2",
        "transaction.updated",
        "txn_u",
        t + 1,
    ))
    .assert_accepted();
    gw.post_ledger(&ledger_event("evt_s_1", "transaction.created", "txn_s", t))
        .assert_accepted();
    gw.post_ledger(&ledger_event(
        "evt_s_2",
        "transaction.updated",
        "txn_s",
        t + 1,
    ))
    .assert_accepted();
    gw.post_ledger(&ledger_event("evt_t_1", "transaction.updated", "txn_t", t))
        .assert_accepted();

    // The wallet event, no route of which leads to an ordered destination, holds nothing:
    // the later event of its subject is delivered while its own routing still waits.
    sink.wait_for(PATIENCE, "evt_u_2 delivered", |got| {
        delivered_ids(got, "txn_u") == ["evt_u_2"]
    });
    assert!(
        plain.received().is_empty(),
        "evt_u_1 is still in its plugin"
    );
    wait_held_by_unrouted(&gw, "txn_s");
    wait_until("the unrouted-holds gauge", || {
        let text = gw.metrics();
        let books = |name: &str| {
            let series = format!("{name}{{destination=\"books\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .map(str::to_owned)
        };
        books("gateway_ordering_unrouted_holds").as_deref() == Some("1")
            && books("gateway_ordering_blocked_subjects").as_deref() == Some("0")
    });
    sink.wait_for(PATIENCE, "txn_t delivered", |got| {
        delivered_ids(got, "txn_t") == ["evt_t_1"]
    });
    let got = sink.wait_for(PATIENCE, "both events of txn_s delivered", |got| {
        delivered_ids(got, "txn_s").len() >= 2
    });
    assert_eq!(delivered_ids(&got, "txn_s"), ["evt_s_1", "evt_s_2"]);
    assert!(blocked(&gw, "txn_s").is_empty());
}
