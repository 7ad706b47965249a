//! `[server] runtime_threads`: the gateway's async runtime has as many threads as the key says,
//! whatever `TOKIO_WORKER_THREADS` says; without the key that variable still decides; a reload
//! that changes the key keeps the running runtime, says that only a restart applies it, and the
//! gateway goes on acknowledging.

use crate::harness::*;
use std::time::{Duration, Instant};

/// The standard config with `server_extra` in `[server]`, started with `TOKIO_WORKER_THREADS`
/// set to `env_threads` when given.
fn start(server_extra: &str, env_threads: Option<&str>) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let text = config_with_server(&db, &Settings::default(), server_extra);
    std::fs::write(dir.path().join("gateway.toml"), text).expect("write config");
    Gateway::start_in_with(dir, db, |command| {
        if let Some(n) = env_threads {
            command.env("TOKIO_WORKER_THREADS", n);
        }
    })
}

/// The runtime's thread count, as the gateway's start line reports it from the runtime.
fn runtime_threads(gw: &Gateway) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = gw.log_lines("gateway started").first() {
            return line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("runtime_threads="))
                .unwrap_or_else(|| panic!("no runtime_threads in the start line: {line}"))
                .to_owned();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no `gateway started` line; stderr:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_key_sets_the_runtime_threads_over_the_environment_variable() {
    let gw = start("runtime_threads = 1", Some("3"));
    assert_eq!(runtime_threads(&gw), "1");
    gw.post_ledger(&crate::ack_stream::ledger_event("evt_one_thread"))
        .assert_accepted();
}

#[test]
fn without_the_key_tokio_worker_threads_still_decides() {
    let gw = start("", Some("3"));
    assert_eq!(runtime_threads(&gw), "3");
}

#[test]
fn a_reload_changing_runtime_threads_keeps_the_runtime_and_says_a_restart_applies_it() {
    let gw = start("runtime_threads = 1", None);
    assert_eq!(runtime_threads(&gw), "1");
    let path = gw.dir().join("gateway.toml");
    let db = gw.dir().join("gateway.db");
    let text = config_with_server(&db, &Settings::default(), "runtime_threads = 2");
    std::fs::write(&path, text).expect("write config");
    gw.wait_for_reload("no restart notice for server.runtime_threads", || {
        gw.log_lines("takes effect only after a restart")
            .iter()
            .any(|l| l.contains("key=server.runtime_threads"))
    });
    assert_eq!(gw.log_lines("gateway started").len(), 1, "not restarted");
    gw.post_ledger(&crate::ack_stream::ledger_event("evt_after_reload"))
        .assert_accepted();
}
