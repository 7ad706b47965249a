//! Durability: a 200 means the event is on disk. The gateway is hammered with unique signed
//! Ledger events from 16 concurrent connections and `kill -9`ed after hundreds of acks while
//! requests are in flight; after a restart on the same store every acknowledged id is there,
//! exactly once, and the restarted gateway serves (and still dedups). SIGTERM and SIGINT stop
//! it gracefully with exit code 0, keeping what it acknowledged.

use crate::ack_stream::{AckStream, End, ledger_event};
use crate::harness::*;
use std::collections::HashSet;

const SENDERS: usize = 16;
const ACKS_BEFORE_KILL: usize = 400;

#[test]
fn every_acknowledged_event_survives_kill_9() {
    let gw = Gateway::start();
    let stream = AckStream::start(gw.addr, SENDERS, "evt_kill");
    let mut acked = stream.acked(ACKS_BEFORE_KILL, || format!("stderr:\n{}", gw.stderr()));
    // Senders are mid-request right now.
    let (dir, db) = gw.kill();
    let (ends, late) = stream.stop();
    acked.extend(late);
    let cut_off = ends.iter().filter(|e| **e == End::CutOff).count();
    assert!(
        cut_off > 0,
        "no request was in flight at the kill: {ends:?}"
    );

    let gw = Gateway::start_in(dir, db);
    let conn = gw.db();
    let mut stmt = conn
        .prepare("SELECT dedup_key FROM events WHERE source = 'ledger'")
        .expect("prepare");
    let keys: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query stored keys")
        .map(|r| r.expect("a stored key"))
        .collect();
    let stored_keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(stored_keys.len(), keys.len(), "no event is stored twice");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stored_keys.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost after kill -9: {missing:?}",
        missing.len(),
        acked.len()
    );
    // The restarted gateway serves and still knows what it stored.
    gw.post_ledger(&ledger_event(&acked[0])).assert_duplicate();
    gw.post_ledger(&ledger_event("evt_after_restart"))
        .assert_accepted();
}

#[test]
fn sigterm_and_sigint_stop_gracefully_and_keep_what_was_acked() {
    let mut gw = Gateway::start();
    gw.post_ledger(&ledger_event("evt_before_term"))
        .assert_accepted();
    let status = gw.signal_and_wait("TERM");
    assert_eq!(status.code(), Some(0), "SIGTERM exit: {status:?}");
    let (dir, db) = gw.kill();

    let mut gw = Gateway::start_in(dir, db);
    stored(&gw.db(), "ledger", "evt_before_term");
    gw.post_ledger(&ledger_event("evt_before_int"))
        .assert_accepted();
    let status = gw.signal_and_wait("INT");
    assert_eq!(status.code(), Some(0), "SIGINT exit: {status:?}");
    let (_dir, db) = gw.kill();
    let conn = open_db(&db);
    stored(&conn, "ledger", "evt_before_term");
    stored(&conn, "ledger", "evt_before_int");
}
