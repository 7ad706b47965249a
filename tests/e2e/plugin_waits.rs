//! A plugin that waits inside a WASI host call (the `sleep` fixture: `std::thread::sleep`, or
//! `wasi:io/poll.poll` on a far instant) runs no wasm while it waits, so neither fuel nor the
//! epoch can stop it. Its call must still end at its deadline as a timeout, in fresh and warm
//! mode, count for the health breaker, hold no plugin thread while it waits, and never keep
//! other routes' events from being delivered or the gateway from shutting down in time. In
//! process (call by call), through `gateway plugin run`, and in a running gateway.

use crate::harness::*;
use crate::plugin_harness::*;
use crate::reload::{
    ADMIN, GENERATION, full_config, http_destination, ledger_txn, metric_or_zero, wait_metric,
    write_atomic,
};
use crate::sink::{Mode, Sink};
use gateway::config::{HealthPolicy, InstanceMode};
use gateway::plugins::{LoadedPlugin, PluginEngine};
use plugin_artifacts::{ECHO, SLEEP};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The two ways the fixture waits: they reach different host functions (`pollable.block`
/// and `poll`).
const WAYS: [&str; 2] = ["thread-sleep", "poll"];

// In process the fixture waits 20 s (`ms`), not its default hour: a host that failed to cut
// the wait off fails these tests after 20 s instead of hanging them.

fn sleeper(
    engine: &PluginEngine,
    mode: InstanceMode,
    timeout: Duration,
    settings: &[(&str, &str)],
) -> LoadedPlugin {
    let mut limits = limits(timeout);
    // The issue's case: a small fuel budget changes nothing, as no instruction runs.
    limits.fuel = Some(100_000);
    engine
        .load(&plugin_settings(SLEEP, mode, limits, settings))
        .unwrap_or_else(|e| panic!("load sleep: {e}"))
}

#[test]
fn a_wait_in_a_host_call_ends_at_the_deadline_as_a_timeout_fresh_and_warm() {
    let _timing = timing_shared();
    let deadline = Duration::from_millis(200);
    let event = fixture_event("ledig", "crypto_received");
    for via in WAYS {
        for mode in [InstanceMode::Fresh, warm()] {
            let plugin = sleeper(engine(), mode, deadline, &[("via", via), ("ms", "20000")]);
            // Twice: a warm instance that timed out is replaced, and the next one waits too.
            for _ in 0..2 {
                let started = Instant::now();
                let call = plugin.call(&event);
                let took = started.elapsed();
                assert_eq!(
                    reason(&call.outcome),
                    ("timeout", "exceeded its deadline of 200ms"),
                    "{via}, {mode:?}"
                );
                assert!(took >= deadline, "{via}, {mode:?}: stopped early: {took:?}");
                assert!(
                    took < deadline * 2,
                    "{via}, {mode:?}: stopped at {took:?}, deadline {deadline:?}"
                );
                assert!(call.fuel_used < 100_000, "{via}: {}", call.fuel_used);
            }
        }
    }
    // The engine goes on serving, the same plugin included once its wait is short.
    let short = sleeper(
        engine(),
        warm(),
        Duration::from_secs(5),
        &[("via", "poll"), ("ms", "1")],
    );
    expect_pass(short.call(&event).outcome);
}

/// A wait that ends before the deadline is a real wait, and the call goes on after it.
#[test]
fn a_wait_that_ends_before_the_deadline_is_kept() {
    let event = fixture_event("ledig", "crypto_received");
    for via in WAYS {
        let plugin = sleeper(
            engine(),
            InstanceMode::Fresh,
            Duration::from_secs(10),
            &[("via", via), ("ms", "30")],
        );
        let call = plugin.call(&event);
        assert!(call.elapsed >= Duration::from_millis(30), "{via}: {call:?}");
        let out = expect_pass(call.outcome);
        assert_eq!(out.to_envelope_json(), event.to_envelope_json(), "{via}");
    }
}

#[test]
fn repeated_waits_past_the_deadline_mark_the_plugin_unhealthy() {
    let _timing = timing_shared();
    let mut settings = plugin_settings(
        SLEEP,
        InstanceMode::Fresh,
        limits(Duration::from_millis(100)),
        &[("ms", "20000")],
    );
    settings.health = HealthPolicy {
        unhealthy_after: 3,
        cooldown: Duration::from_secs(3600),
    };
    let plugin = engine().load(&settings).expect("load sleep");
    let event = fixture_event("ledig", "crypto_received");
    for n in 1..=3 {
        let call = plugin.call(&event);
        assert_eq!(
            reason(&call.outcome),
            ("timeout", "exceeded its deadline of 100ms"),
            "call {n}"
        );
        assert!(
            call.elapsed < Duration::from_millis(200),
            "{:?}",
            call.elapsed
        );
    }
    let health = plugin.health().report();
    assert!(!health.healthy, "{health:?}");
    assert_eq!(health.consecutive_failures, 3);
    // Not called any more: the answer is an immediate retry naming the reason.
    let started = Instant::now();
    let call = plugin.call(&event);
    let (label, why) = reason(&call.outcome);
    assert_eq!(label, "retry");
    assert!(
        why.starts_with(
            "plugin is unhealthy after 3 consecutive failures (last: exceeded its deadline of 100ms)"
        ),
        "{why}"
    );
    assert!(started.elapsed() < Duration::from_millis(100), "it waited");
}

/// A call waiting in a host call holds no plugin thread: with ONE plugin thread, calls of
/// another plugin keep running while it waits.
#[test]
fn a_waiting_call_holds_no_plugin_thread() {
    let engine = PluginEngine::new(Some(Path::new(CACHE_DIR)), 1).expect("engine");
    let sleep = Arc::new(sleeper(
        &engine,
        InstanceMode::Fresh,
        Duration::from_secs(3),
        &[("ms", "20000")],
    ));
    let echo = Arc::new(
        engine
            .load(&plugin_settings(
                ECHO,
                warm(),
                limits(Duration::from_secs(3)),
                &[],
            ))
            .expect("load echo"),
    );
    let event = fixture_event("ledig", "crypto_received");
    // As the workers do it: calls run in tasks on the engine's plugin threads.
    let threads = Arc::clone(sleep.threads());
    let on_plugin_threads = |plugin: &Arc<LoadedPlugin>| {
        let (plugin, event) = (Arc::clone(plugin), event.clone());
        threads.spawn(async move { plugin.call_async(&event).await })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let waiting = on_plugin_threads(&sleep);
        let started = Instant::now();
        for _ in 0..20 {
            let call = on_plugin_threads(&echo)
                .await
                .expect("the echo call's task");
            expect_pass(call.outcome);
        }
        assert!(
            !waiting.is_finished(),
            "the waiting call ended before the other calls ({:?})",
            started.elapsed()
        );
        let waited = waiting.await.expect("the waiting call's task");
        assert_eq!(
            reason(&waited.outcome),
            ("timeout", "exceeded its deadline of 3s")
        );
        assert!(
            waited.elapsed < Duration::from_secs(6),
            "{:?}",
            waited.elapsed
        );
    });
}

/// `gateway plugin run` on a plugin that sleeps 20 s (the issue's case): a timeout verdict
/// at `--timeout`, exit 1, not 20 s later.
#[test]
fn plugin_run_cuts_a_sleeping_plugin_off_at_its_timeout() {
    let _timing = timing_shared();
    for via in WAYS {
        let started = Instant::now();
        let run = plugin_run(
            SLEEP,
            "ledig/crypto_received",
            &[
                "--timeout",
                "50ms",
                "--fuel",
                "100000",
                "--setting",
                &format!("via={via}"),
                "--setting",
                "ms=20000",
            ],
        );
        let took = started.elapsed();
        assert_eq!(run.code, Some(1), "{via}: {}", run.stderr);
        assert_eq!(run.report["verdict"], "timeout", "{via}: {}", run.report);
        assert_eq!(run.report["reason"], "exceeded its deadline of 50ms");
        let call_us = run.report["elapsed_us"].as_u64().expect("elapsed_us");
        assert!(
            (50_000..250_000).contains(&call_us),
            "{via}: the call took {call_us} us"
        );
        assert!(took < Duration::from_secs(15), "{via}: {took:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// In a running gateway.
// ---------------------------------------------------------------------------------------------

const SLEEPER_TIMEOUTS: &str = r#"gateway_plugin_calls_total{plugin="sleeper",result="timeout"}"#;
const SLEEPER_UNHEALTHY: &str = r#"gateway_plugin_unhealthy{plugin="sleeper"}"#;

/// Two routes and two sinks: `ledger.transaction.*` through the sleeping plugin to `slow`,
/// `ledger.wallet.*` through `echo` to `fast`. One plugin thread, so a waiting call that held
/// its thread would stop the other route at once.
fn two_routes(sleeper_timeout: &str, slow: &Sink, fast: &Sink) -> String {
    routes_through("sleeper", sleeper_timeout, slow, fast)
}

/// [`two_routes`] with `sleepy_plugin` on the `ledger.transaction.*` route.
fn routes_through(sleepy_plugin: &str, sleeper_timeout: &str, slow: &Sink, fast: &Sink) -> String {
    format!(
        "{ADMIN}[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[workers]\nplugin_threads = 1\n\n\
         [plugins.sleeper]\nwasm = \"{SLEEP}\"\ntimeout = \"{sleeper_timeout}\"\n\
         unhealthy_after = 3\nunhealthy_cooldown = \"1h\"\n\n\
         [plugins.echo]\nwasm = \"{ECHO}\"\n\n{}{}\
         [[routes]]\nname = \"sleepy\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"{sleepy_plugin}\"]\nto = [\"slow\"]\n\n\
         [[routes]]\nname = \"others\"\nmatch = {{ type = [\"ledger.wallet.*\"] }}\n\
         plugins = [\"echo\"]\nto = [\"fast\"]\n",
        http_destination("slow", slow),
        http_destination("fast", fast),
    )
}

/// A Ledger `wallet.created` whose `data.id` is `id`.
fn ledger_wallet(id: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"evt_{id}","type":"wallet.created","createdAt":1763856000000,"data":{{"id":"{id}"}}}}"#
    )
    .into_bytes()
}

/// Waits until `sink` got every `data.id` in `ids`; returns when it did.
fn wait_delivered_data(gw: &Gateway, sink: &Sink, ids: &[String]) -> Instant {
    let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
    wait_until(gw, "the other route's events are delivered", || {
        let got: HashSet<String> = sink
            .delivered()
            .iter()
            .filter_map(|r| r.json()["data"]["id"].as_str().map(str::to_owned))
            .collect();
        want.iter().all(|id| got.contains(*id)).then(Instant::now)
    })
}

fn routed_sleepy(gw: &Gateway) -> i64 {
    count(
        &gw.db(),
        "SELECT count(*) FROM route_runs WHERE route = 'sleepy'",
    )
}

#[test]
fn a_sleeping_plugin_times_out_in_a_running_gateway_without_holding_up_other_routes() {
    let slow = Sink::start(Mode::Ok);
    let fast = Sink::start(Mode::Ok);
    let deadline = Duration::from_secs(4);
    let gw = Gateway::start_with_extra(&two_routes("4s", &slow, &fast));

    let started = Instant::now();
    for n in 1..=3 {
        gw.post_ledger(&ledger_txn(&format!("sleep_{n}")))
            .assert_accepted();
    }
    let others: Vec<String> = (1..=8).map(|n| format!("wal_{n}")).collect();
    for id in &others {
        gw.post_ledger(&ledger_wallet(id)).assert_accepted();
    }
    // Every event of the other route is delivered while the sleeping calls still wait: none of
    // them has a result yet.
    let delivered = wait_delivered_data(&gw, &fast, &others);
    assert_eq!(routed_sleepy(&gw), 0, "the sleeping calls already ended");
    assert!(
        delivered - started < deadline,
        "the other route waited {:?}",
        delivered - started
    );

    // Each sleeping call ends at its deadline as a timeout: a dead letter with the reason.
    wait_until(&gw, "the sleeping events are dead letters", || {
        (count(
            &gw.db(),
            "SELECT count(*) FROM route_runs WHERE route = 'sleepy' AND status = 'dead' \
             AND reason = 'plugin `sleeper` timeout: exceeded its deadline of 4s'",
        ) == 3)
            .then_some(())
    });
    let steps: Vec<String> = {
        let db = gw.db();
        let mut q = db
            .prepare("SELECT plugin_results FROM routings WHERE status = 'failed'")
            .expect("query");
        q.query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    };
    assert_eq!(steps.len(), 3, "{steps:?}");
    let mut took = Vec::new();
    for text in &steps {
        let step = &serde_json::from_str::<serde_json::Value>(text).expect("JSON")[0];
        assert_eq!(step["result"], "timeout", "{text}");
        let micros = step["micros"].as_u64().expect("micros");
        assert!(
            (4_000_000..5_500_000).contains(&micros),
            "a call took {micros} us, deadline 4 s"
        );
        took.push(Duration::from_micros(micros));
    }
    eprintln!(
        "sleeping plugin (deadline 4 s, 1 plugin thread): the other route's 8 events delivered \
         {:?} after the first post; the sleeping calls ended as timeouts after {took:?}",
        delivered - started
    );
    assert!(slow.delivered().is_empty());

    // Three timeouts in a row: the breaker opens, and the next event is not given to it.
    wait_metric(&gw, SLEEPER_UNHEALTHY, 1.0);
    assert_eq!(metric_or_zero(&gw, SLEEPER_TIMEOUTS), 3.0);
    gw.post_ledger(&ledger_txn("sleep_4")).assert_accepted();
    wait_until(&gw, "the next sleeping event waits for a retry", || {
        (count(
            &gw.db(),
            "SELECT count(*) FROM route_runs WHERE route = 'sleepy' AND status = 'retry' \
             AND reason LIKE '%plugin is unhealthy after 3 consecutive failures%'",
        ) == 1)
            .then_some(())
    });
    assert_eq!(
        metric_or_zero(&gw, SLEEPER_TIMEOUTS),
        3.0,
        "not called again"
    );
    assert!(
        !gw.stderr().contains("panicked"),
        "a panic in the log:\n{}",
        gw.stderr()
    );
}

/// Events routed together (one batch: here a replay of all of them) are delivered as each is
/// ready: the batch's events for the other route do not wait for those whose plugin sleeps.
#[test]
fn events_routed_together_are_not_held_up_by_one_whose_plugin_sleeps() {
    let slow = Sink::start(Mode::Ok);
    let fast = Sink::start(Mode::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let config = dir.path().join("gateway.toml");
    // First every event goes through quickly (echo on both routes)...
    std::fs::write(
        &config,
        full_config(&db, &routes_through("echo", "4s", &slow, &fast)),
    )
    .expect("write config");
    let gw = Gateway::start_in(dir, db.clone());
    let sleepers: Vec<String> = (1..=3).map(|n| format!("sleep_{n}")).collect();
    let others: Vec<String> = (1..=8).map(|n| format!("wal_{n}")).collect();
    for (n, id) in others.iter().enumerate() {
        if let Some(s) = sleepers.get(n) {
            gw.post_ledger(&ledger_txn(s)).assert_accepted();
        }
        gw.post_ledger(&ledger_wallet(id)).assert_accepted();
    }
    wait_delivered_data(&gw, &fast, &others);
    wait_until(&gw, "the transactions are delivered", || {
        (slow.delivered().len() == sleepers.len()).then_some(())
    });

    // ...then the transaction route sleeps, and one replay routes all of them again in one
    // batch.
    write_atomic(
        &config,
        &full_config(&db, &routes_through("sleeper", "4s", &slow, &fast)),
    );
    wait_metric(&gw, GENERATION, 2.0);
    let replayed = Instant::now();
    let r = gw.admin("POST", "/admin/replay?all=true");
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["replayed"], 11, "{}", r.body);
    let again = wait_until(&gw, "the other route's events are delivered again", || {
        (fast.delivered().len() == 2 * others.len()).then(Instant::now)
    });
    assert_eq!(routed_sleepy(&gw), 0, "the sleeping calls already ended");
    assert!(
        again - replayed < Duration::from_secs(4),
        "the other route waited {:?}",
        again - replayed
    );
    wait_until(&gw, "the replayed transactions are dead letters", || {
        (count(
            &gw.db(),
            "SELECT count(*) FROM route_runs WHERE route = 'sleepy' AND status = 'dead' \
             AND reason = 'plugin `sleeper` timeout: exceeded its deadline of 4s'",
        ) == 3)
            .then_some(())
    });
}

/// SIGTERM while sleeping calls (deadline 60 s, beyond the 10 s drain) are in flight: the
/// gateway exits cleanly within the drain bound, their events stay pending, and after a
/// restart they wait again without holding up the other route.
#[test]
fn sigterm_while_plugins_sleep_exits_within_the_drain_bound() {
    let slow = Sink::start(Mode::Ok);
    let fast = Sink::start(Mode::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    std::fs::write(
        dir.path().join("gateway.toml"),
        full_config(&db, &two_routes("60s", &slow, &fast)),
    )
    .expect("write config");
    let mut gw = Gateway::start_in(dir, db);
    for n in 1..=2 {
        gw.post_ledger(&ledger_txn(&format!("sleep_{n}")))
            .assert_accepted();
    }
    gw.post_ledger(&ledger_wallet("wal_before"))
        .assert_accepted();
    wait_delivered_data(&gw, &fast, &["wal_before".to_owned()]);
    assert_eq!(routed_sleepy(&gw), 0, "the sleeping calls are in flight");

    let signalled = Instant::now();
    let status = gw.signal_and_wait("TERM");
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}\n{}", gw.stderr());
    // The documented bound: 10 s of drain, then the store's last commit.
    assert!(took < Duration::from_secs(12), "exit took {took:?}");
    eprintln!("SIGTERM with two plugin calls sleeping (deadline 60 s): exited after {took:?}");
    let log = gw.stderr();
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
    assert!(
        log.contains("events still in flight at shutdown"),
        "the drain says what it left:\n{log}"
    );
    assert!(log.contains("gateway stopped"), "{log}");

    // Their events were not recorded, so a restart routes them again: they wait again, and
    // the other route still goes on.
    let (dir, db) = gw.kill();
    let gw = Gateway::start_in(dir, db);
    gw.post_ledger(&ledger_wallet("wal_after"))
        .assert_accepted();
    wait_delivered_data(&gw, &fast, &["wal_after".to_owned()]);
    assert_eq!(routed_sleepy(&gw), 0, "the sleeping events wait again");
    assert_eq!(
        count(
            &gw.db(),
            "SELECT count(*) FROM events e LEFT JOIN routings r ON r.seq = e.seq \
             WHERE r.seq IS NULL AND e.event_type = 'ledger.transaction.created'"
        ),
        2,
        "the two sleeping events are pending"
    );
}
