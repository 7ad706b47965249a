//! A poison plugin (it traps on every event) in a running gateway: after `unhealthy_after`
//! consecutive traps it is marked unhealthy (metric, log line, admin API) and no longer called,
//! the events behind it wait in their route's retry schedule instead of running it, and once a
//! reload replaces the component they are delivered; the events that trapped before are dead
//! letters with the reason, and a redrive delivers them too. Nothing is lost on the way.

use crate::harness::*;
use crate::plugin_harness::CACHE_DIR;
use crate::reload::{
    ADMIN, GENERATION, full_config, http_destination, ledger_txn, metric_or_zero, wait_delivered,
    wait_metric, write_atomic,
};
use crate::sink::{Mode, Sink};
use plugin_artifacts::{ECHO, PANIC};
use serde_json::Value;
use std::collections::HashSet;

const UNHEALTHY: &str = r#"gateway_plugin_unhealthy{plugin="p"}"#;
const TRAPS: &str = r#"gateway_plugin_calls_total{plugin="p",result="trap"}"#;
const SKIPPED: &str = r#"gateway_plugin_skipped_total{plugin="p"}"#;

fn plugin_config(wasm: &str, sink: &Sink) -> String {
    format!(
        "{ADMIN}[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.p]\nwasm = \"{wasm}\"\n\
         timeout = \"1s\"\nunhealthy_after = 3\nunhealthy_cooldown = \"1h\"\n\n{}\
         [[routes]]\nname = \"deposits\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"p\"]\nto = [\"sink\"]\n",
        http_destination("sink", sink)
    )
}

/// Polls the store until `sql` (one count) reaches `want`.
fn wait_count(gw: &Gateway, sql: &str, want: i64) {
    wait_until(gw, &format!("`{sql}` reaches {want}"), || {
        (count(&gw.db(), sql) == want).then_some(())
    });
}

fn plugin_health(gw: &Gateway) -> Value {
    let r = gw.admin("GET", "/admin/plugins");
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json()["plugins"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    list[0].clone()
}

#[test]
fn a_plugin_trapping_on_every_event_is_marked_unhealthy_and_its_events_wait_for_a_fix() {
    let sink = Sink::start(Mode::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, full_config(&db, &plugin_config(PANIC, &sink)))
        .expect("write config");
    let gw = Gateway::start_in(dir, db.clone());
    assert_eq!(metric_or_zero(&gw, UNHEALTHY), 0.0);
    let healthy = plugin_health(&gw);
    assert_eq!(healthy["name"], "p");
    assert_eq!(healthy["healthy"], true, "{healthy}");

    // Three traps in a row: each event's stage is a dead letter with the trap as its reason,
    // and the third marks the plugin unhealthy.
    let trapped: Vec<String> = (1..=3).map(|i| format!("evt_trap_{i}")).collect();
    for (n, id) in trapped.iter().enumerate() {
        gw.post_ledger(&ledger_txn(id)).assert_accepted();
        let dead = i64::try_from(n + 1).expect("small");
        wait_count(
            &gw,
            "SELECT count(*) FROM route_runs WHERE status = 'dead'",
            dead,
        );
    }
    wait_metric(&gw, UNHEALTHY, 1.0);
    let h = plugin_health(&gw);
    assert_eq!(h["healthy"], false, "{h}");
    assert_eq!(h["consecutive_failures"], 3, "{h}");
    assert_eq!(h["unhealthy_after"], 3, "{h}");
    assert!(h["unhealthy_since"].as_u64().is_some(), "{h}");
    let last = h["last_failure"].as_str().unwrap_or_default();
    assert!(last.contains("trapped"), "the trap's reason: {h}");
    assert!(
        gw.stderr().contains("plugin marked unhealthy"),
        "an error line says so:\n{}",
        gw.stderr()
    );

    // Later events are not given to it: their stage waits for a retry, naming the reason.
    let waiting: Vec<String> = (1..=5).map(|i| format!("evt_wait_{i}")).collect();
    for id in &waiting {
        gw.post_ledger(&ledger_txn(id)).assert_accepted();
    }
    wait_count(
        &gw,
        "SELECT count(*) FROM route_runs WHERE status = 'retry' \
         AND reason LIKE '%plugin is unhealthy after 3 consecutive failures%'",
        5,
    );
    let m = gw.metrics();
    assert_eq!(metric(&m, TRAPS), 3.0, "no call after it was marked");
    assert!(metric(&m, SKIPPED) >= 5.0, "{m}");
    assert!(sink.delivered().is_empty());

    // A reload with a working component starts it afresh; the waiting events go through on
    // their next retry, and a redrive delivers the three that trapped.
    write_atomic(&config_path, &full_config(&db, &plugin_config(ECHO, &sink)));
    wait_metric(&gw, GENERATION, 2.0);
    assert_eq!(metric_or_zero(&gw, UNHEALTHY), 0.0);
    assert_eq!(plugin_health(&gw)["healthy"], true);
    let waiting_ids: HashSet<String> = waiting.iter().cloned().collect();
    wait_delivered(&sink, &waiting_ids, "events that waited for the fix", &gw);
    // The dead plugin stages by a filter: counted first (a stage has no destination, so
    // none is to `sink`), then exactly the counted ones, audited as such.
    for other in ["destination=sink", "route=elsewhere"] {
        let path = format!("/admin/dead-letters/redrive?stage=plugin&{other}&dry_run=true");
        let r = gw.admin("POST", &path);
        assert_eq!(r.json()["would_redrive"], 0, "{other}: {}", r.body);
    }
    let r = gw.admin(
        "POST",
        "/admin/dead-letters/redrive?stage=plugin&route=deposits&type=ledger.*&dry_run=true",
    );
    assert_eq!(r.json()["would_redrive"], 3, "{}", r.body);
    let through = r.json()["through"].as_i64().expect("a bound");
    let r = gw.admin(
        "POST",
        &format!("/admin/dead-letters/redrive?stage=plugin&route=deposits&through={through}"),
    );
    assert_eq!(
        (r.status, r.json()["redriven"].as_u64()),
        (202, Some(3)),
        "{}",
        r.body
    );
    let audit = gw.admin("GET", "/admin/audit").json();
    assert!(
        audit
            .to_string()
            .contains("dead plugin stages route=deposits"),
        "{audit}"
    );
    let all: HashSet<String> = trapped.iter().chain(&waiting).cloned().collect();
    let got = wait_delivered(&sink, &all, "every event, the trapped ones redriven", &gw);
    assert_eq!(got.len(), all.len(), "each exactly once");
}

/// A route's own plugin retry schedule (`plugin_max_attempts`, `plugin_backoff_*`): an event
/// whose plugin answers `retry` (here: the plugin is unhealthy, so the gateway answers for it)
/// is run again that many times that far apart, then its route run is a dead letter saying
/// why. With the default schedule (10 attempts, 1 s doubling) this would take minutes.
#[test]
fn a_routes_plugin_retry_schedule_decides_when_a_retrying_event_is_a_dead_letter() {
    let sink = Sink::start(Mode::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let extra = format!(
        "{ADMIN}[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.p]\nwasm = \"{PANIC}\"\n\
         unhealthy_after = 1\nunhealthy_cooldown = \"1h\"\n\n{}\
         [[routes]]\nname = \"deposits\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"p\"]\nto = [\"sink\"]\nplugin_max_attempts = 3\n\
         plugin_backoff_initial = \"20ms\"\nplugin_backoff_max = \"50ms\"\n",
        http_destination("sink", &sink)
    );
    std::fs::write(dir.path().join("gateway.toml"), full_config(&db, &extra))
        .expect("write config");
    let gw = Gateway::start_in(dir, db);

    // The first event's trap marks the plugin unhealthy (and is a dead letter of its own).
    gw.post_ledger(&ledger_txn("evt_trap")).assert_accepted();
    wait_metric(&gw, UNHEALTHY, 1.0);
    gw.post_ledger(&ledger_txn("evt_waits")).assert_accepted();
    let sql = "SELECT r.status, r.attempts, r.reason FROM route_runs r \
               JOIN events e ON e.seq = r.event_seq WHERE e.dedup_key = 'evt_waits'";
    let (attempts, reason) = wait_until(&gw, "the retried stage is a dead letter", || {
        let (status, attempts, reason): (String, i64, String) = gw
            .db()
            .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ok()?;
        (status == "dead").then_some((attempts, reason))
    });
    assert_eq!(attempts, 3, "{reason}");
    assert!(
        reason.starts_with("gave up after 3 attempts; last: ")
            && reason.contains("plugin is unhealthy"),
        "{reason}"
    );
    assert!(sink.delivered().is_empty());
}
