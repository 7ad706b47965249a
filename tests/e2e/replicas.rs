//! Several replicas on one PostgreSQL, each the real binary, each test on its own throwaway
//! cluster (fsync on): one signed delivery sent to both replicas at once is stored once; kill -9
//! of a replica under load, again and again, loses no acknowledged event and no event gets
//! routing results from two replicas; a database restart under load gives 503s, never a 200
//! for something not stored, and heals without a gateway restart; a failover to a promoted
//! synchronous standby keeps every acked event; a rolling restart loses nothing; replays and
//! redrives asked on one replica are carried out once, by whichever replica claims them, and
//! each replica reloads its own config.
//!
//! "Delivered" is checked at a real sink by `webhook-id`; "stored" and "routed twice" in the
//! database itself.

use crate::harness::*;
use crate::replica_harness::*;
use crate::sink::{Mode, Sink};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use throwaway_pg::{Cluster, Options, StopMode};

/// Long enough for a killed replica's lease to run out and its work to be finished.
const TAKEOVER: Duration = Duration::from_secs(60);

fn every_acked_is_stored(pg: &Cluster, acked: &[String]) {
    let stored = stored_ledger_ids(pg);
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acked events are not stored, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn one_delivery_sent_50_times_to_two_replicas_is_stored_once_and_a_payout_change_twice() {
    let Deployment {
        pg, sink, replicas, ..
    } = Deployment::start(2, Mode::Ok);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|g| g.addr).collect();
    let body = crate::ack_stream::ledger_event("evt_twice_everywhere");
    let headers = ledger_headers(LEDGER_SECRET, now(), &body);
    let answers: Vec<Response> = std::thread::scope(|s| {
        let sends: Vec<_> = (0..50)
            .map(|i| {
                let (addr, headers, body) = (addrs[i % 2], headers.clone(), body.clone());
                s.spawn(move || request(addr, "POST", "/webhooks/ledger", &headers, &body))
            })
            .collect();
        sends
            .into_iter()
            .map(|h| h.join().expect("sender"))
            .collect()
    });
    let mut bodies: HashMap<(u16, String), usize> = HashMap::new();
    for r in &answers {
        *bodies.entry((r.status, r.body.clone())).or_default() += 1;
    }
    assert_eq!(
        bodies,
        HashMap::from([
            ((200, r#"{"ok":true}"#.to_owned()), 1),
            ((200, r#"{"ok":true,"duplicate":true}"#.to_owned()), 49),
        ])
    );
    assert_eq!(
        pg_count(
            &pg,
            "SELECT count(*) FROM events WHERE dedup_key = 'evt_twice_everywhere'"
        ),
        1
    );

    // Ledig signs no id: a payout's status change is a new event, its retry is not, on
    // whichever replica each copy lands.
    let pending = std::fs::read("tests/fixtures/ledig/crypto_payout_update.json")
        .or_else(|_| std::fs::read("../tests/fixtures/ledig/crypto_payout_update.json"))
        .expect("payout fixture");
    let paid = String::from_utf8(pending.clone())
        .expect("UTF-8")
        .replace("\"pending\"", "\"paid\"")
        .into_bytes();
    replicas[0].post_ledig(&pending).assert_accepted();
    replicas[1].post_ledig(&pending).assert_duplicate();
    replicas[1].post_ledig(&paid).assert_accepted();
    replicas[0].post_ledig(&paid).assert_duplicate();
    assert_eq!(
        pg_count(&pg, "SELECT count(*) FROM events WHERE source = 'ledig'"),
        2
    );
    wait_delivered(&sink, &["evt_twice_everywhere".to_owned()], PATIENCE);
}

#[test]
fn kill_9_of_one_of_two_replicas_under_load_20_times_loses_nothing_and_routes_nothing_twice() {
    let deployment = Deployment::start(2, Mode::Ok);
    let addrs = deployment.addrs();
    let Deployment {
        pg,
        sink,
        conninfo,
        mut replicas,
        ..
    } = deployment;
    let senders = Senders::start(&addrs, 8, "evt_kill");
    for round in 0..20 {
        senders.wait_for_acks(40);
        let victim = round % 2;
        let (dir, _) = replicas.remove(victim).kill();
        senders.wait_for_acks(20);
        let again = restart_replica(dir, &conninfo);
        addrs.lock().expect("addrs")[victim] = again.addr;
        replicas.insert(victim, again);
    }
    senders.wait_for_acks(40);
    let answers = senders.stop();
    assert!(
        answers.acked.len() >= 20 * 60,
        "{} acks",
        answers.acked.len()
    );
    every_acked_is_stored(&pg, &answers.acked);
    wait_delivered(&sink, &answers.acked, TAKEOVER);
    assert_eq!(
        routed_twice(&pg),
        0,
        "routing results written by two replicas"
    );
    assert_eq!(
        pg_count(&pg, "SELECT count(*) FROM event_work"),
        0,
        "work left over"
    );
    for gw in &replicas {
        let lost = metric(&gw.metrics(), "gateway_claims_lost_total{kind=\"event\"}");
        assert_eq!(
            lost, 0.0,
            "a live replica routed an event another one routed"
        );
    }
}

#[test]
fn a_database_restart_under_load_gives_503s_never_a_false_ack_and_heals_by_itself() {
    let deployment = Deployment::start(2, Mode::Ok);
    let addrs = deployment.addrs();
    let Deployment {
        pg, sink, replicas, ..
    } = deployment;
    let senders = Senders::start(&addrs, 6, "evt_pgrestart");
    senders.wait_for_acks(200);
    pg.stop(StopMode::Immediate).expect("stops");
    // While it is down: not ready, and webhooks get 503 (the senders count and retry them).
    let ready = replicas[0].get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let refused = replicas[1].post_ledger(&crate::ack_stream::ledger_event("evt_while_down"));
    refused.assert_error(503);
    pg.start_again().expect("starts again");
    senders.wait_for_acks(200);
    let answers = senders.stop();
    assert!(answers.retried > 0, "the outage was seen");
    every_acked_is_stored(&pg, &answers.acked);
    wait_delivered(&sink, &answers.acked, TAKEOVER);
    assert_eq!(routed_twice(&pg), 0);
    for gw in &replicas {
        assert_eq!(
            gw.get("/readyz").status,
            200,
            "ready again without a restart"
        );
        // The workers retry every 100 ms while the database is down; the log says so once.
        let lines = gw.log_lines("cannot claim due deliveries");
        assert!(lines.len() <= 1, "{} lines: {lines:?}", lines.len());
    }
}

#[test]
fn a_failover_to_a_promoted_synchronous_standby_keeps_every_acked_event() {
    let primary = Cluster::start_with(&Options::default().set("synchronous_standby_names", "'*'"))
        .expect("primary");
    // The standby first: with it required, every commit (CREATE DATABASE too) waits for it.
    let standby = Cluster::standby_of(&primary, &Options::default()).expect("standby");
    primary.create_database("gateway").expect("createdb");
    let sink = Sink::start(Mode::Ok);
    let text = replica_config(&sink.url());
    let both = format!(
        "host={},{} port={},{} user=postgres dbname=gateway target_session_attrs=read-write",
        primary.socket_dir().display(),
        standby.socket_dir().display(),
        primary.port(),
        standby.port()
    );
    let gw = start_replica(&text, &both);
    let addrs = Arc::new(Mutex::new(vec![gw.addr]));
    let senders = Senders::start(&addrs, 6, "evt_failover");
    senders.wait_for_acks(300);
    // Every ack so far waited for the standby's flush (synchronous replication), so the
    // standby must have all of them once promoted.
    primary.stop(StopMode::Immediate).expect("the primary dies");
    standby.promote().expect("promoted");
    senders.wait_for_acks(300);
    let answers = senders.stop();
    every_acked_is_stored(&standby, &answers.acked);
    wait_delivered(&sink, &answers.acked, TAKEOVER);
    assert_eq!(gw.get("/readyz").status, 200);
}

#[test]
fn a_rolling_restart_of_three_replicas_loses_no_acked_event() {
    let deployment = Deployment::start(3, Mode::Ok);
    let addrs = deployment.addrs();
    let Deployment {
        pg,
        sink,
        conninfo,
        mut replicas,
        ..
    } = deployment;
    let senders = Senders::start(&addrs, 6, "evt_rolling");
    for i in 0..3 {
        senders.wait_for_acks(100);
        let mut old = replicas.remove(i);
        let status = old.signal_and_wait("TERM");
        assert!(
            status.success(),
            "replica {i} exited {status:?}:\n{}",
            old.stderr()
        );
        let (dir, _) = old.kill();
        let again = restart_replica(dir, &conninfo);
        addrs.lock().expect("addrs")[i] = again.addr;
        replicas.insert(i, again);
    }
    senders.wait_for_acks(100);
    let answers = senders.stop();
    every_acked_is_stored(&pg, &answers.acked);
    wait_delivered(&sink, &answers.acked, TAKEOVER);
    assert_eq!(routed_twice(&pg), 0);
}

#[test]
fn replay_and_redrive_asked_on_one_replica_are_carried_out_once_and_each_replica_reloads_alone() {
    let Deployment {
        pg, sink, replicas, ..
    } = Deployment::start(2, Mode::Always(410));
    let ids: Vec<String> = (0..20).map(|i| format!("evt_dead_{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        replicas[i % 2]
            .post_ledger(&crate::ack_stream::ledger_event(id))
            .assert_accepted();
    }
    // 410: each delivery is a dead letter at once.
    poll_until(|| pg_count(&pg, "SELECT count(*) FROM deliveries WHERE status = 'dead'") == 20);
    sink.set_mode(Mode::Ok);
    let r = replicas[0].admin("POST", "/admin/dead-letters/redrive");
    assert_eq!(r.status, 202, "{}", r.body);
    wait_delivered(&sink, &ids, PATIENCE);
    poll_until(|| {
        pg_count(
            &pg,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
        ) == 20
    });
    let delivered_once = |got: &[crate::sink::Received]| -> HashMap<String, usize> {
        let mut n = HashMap::new();
        for r in got.iter().filter(|r| r.answered == 200) {
            *n.entry(r.event_id().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        n
    };
    let counts = delivered_once(&sink.received());
    assert!(
        counts.values().all(|&n| n == 1),
        "redriven once each: {counts:?}"
    );

    // A replay asked on replica 1 of every event: one more delivery each, whoever claims it.
    let r = replicas[1].admin("POST", "/admin/replay?all=true");
    assert_eq!(r.status, 202, "{}", r.body);
    sink.wait_for(PATIENCE, "the replays", |got| {
        delivered_once(got).values().filter(|&&n| n >= 2).count() == 20
    });
    poll_until(|| pg_count(&pg, "SELECT count(*) FROM event_work") == 0);
    let counts = delivered_once(&sink.received());
    assert!(
        counts.values().all(|&n| n == 2),
        "replayed once each: {counts:?}"
    );

    // Each replica reloads its own file: a broken one on replica 0 keeps its running config,
    // and replica 1 is not touched by it.
    let before = [
        metric(&replicas[0].metrics(), "gateway_config_generation"),
        metric(&replicas[1].metrics(), "gateway_config_generation"),
    ];
    std::fs::write(replicas[0].dir().join("gateway.toml"), "[store\nbroken").expect("write");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &replicas[0].pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    poll_until(|| {
        metric(
            &replicas[0].metrics(),
            "gateway_config_reloads_total{result=\"error\"}",
        ) >= 1.0
    });
    assert_eq!(
        metric(&replicas[0].metrics(), "gateway_config_generation"),
        before[0]
    );
    assert_eq!(
        metric(&replicas[1].metrics(), "gateway_config_generation"),
        before[1]
    );
    replicas[0]
        .post_ledger(&crate::ack_stream::ledger_event("evt_after_bad_reload"))
        .assert_accepted();
    wait_delivered(&sink, &["evt_after_bad_reload".to_owned()], PATIENCE);
}

fn poll_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
