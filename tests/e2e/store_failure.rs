//! A store that cannot be written answers 503 `{"ok":false,...}` (never a 200 for something
//! not stored, never a 400 for a body it could not quarantine), `/readyz` says 503, and the
//! gateway recovers by itself once writes work again: the same event that got 503 is then
//! accepted (a failed write must not leave a dedup mark) and stored. The failure is real: the
//! running process's file-size limit is lowered with `prlimit`, so SQLite's writes fail with
//! EFBIG (the gateway ignores SIGXFSZ).

use crate::harness::*;
use crate::reload::{ADMIN, http_destination, ledger_txn, wait_delivered};
use crate::sink::{Mode, Sink};
use std::collections::HashSet;
use std::process::Command;

fn prlimit(pid: u32, fsize: &str) {
    let out = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={fsize}"))
        .output()
        .expect("prlimit (util-linux) must be installed");
    assert!(
        out.status.success(),
        "prlimit --pid {pid} --fsize={fsize}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unwritable_store_answers_503_and_recovers() {
    let gw = Gateway::start();
    let before =
        br#"{"id":"evt_before","type":"wallet.created","createdAt":1763856000000,"data":{"id":"w"}}"#;
    gw.post_ledger(before).assert_accepted();

    // Soft limit 1 byte; the hard limit stays unlimited so it can be raised again without
    // privileges.
    prlimit(gw.pid(), "1:unlimited");
    let during =
        br#"{"id":"evt_during","type":"wallet.created","createdAt":1763856000000,"data":{"id":"w"}}"#;
    for attempt in 0..3 {
        let r = gw.post_ledger(during);
        assert_eq!(r.status, 503, "attempt {attempt}: {}", r.body);
        r.assert_error(503);
    }
    // An authenticated non-JSON body cannot be quarantined either: 503, so Ledig retries.
    gw.post_ledig(b"not json").assert_error(503);
    let ready = gw.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);

    prlimit(gw.pid(), "unlimited:unlimited");
    gw.post_ledger(during).assert_accepted();
    gw.post_ledger(during).assert_duplicate();
    assert_eq!(gw.get("/readyz").status, 200);
    gw.post_ledig(b"not json").assert_error(400);

    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2);
    let row = stored(&db, "ledger", "evt_during");
    assert_eq!(row.raw_body, during);
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 1);
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{outcome="error",source="ledger"}"#
        ),
        3.0
    );
}

/// The routing side of a store outage: while the store cannot be written, deliveries keep
/// being attempted but their results cannot be recorded, and new events get 503. Once writes
/// work again, every acknowledged event reaches the sink (an attempt whose result was lost is
/// made again, under the same `webhook-id`) and the store says delivered.
#[test]
fn an_unwritable_store_delays_deliveries_and_loses_none() {
    let sink = Sink::start(Mode::Ok);
    sink.down();
    let extra = format!(
        "{ADMIN}{}[[routes]]\nname = \"all\"\nto = [\"sink\"]\n",
        http_destination("sink", &sink)
    );
    let gw = Gateway::start_with_extra(&extra);
    gw.post_ledger(&ledger_txn("evt_before_outage"))
        .assert_accepted();
    // Its delivery is failing (sink down) and being retried when the store goes away.
    let attempted = "SELECT count(*) FROM deliveries WHERE attempts >= 1";
    wait_until(&gw, "a recorded attempt", || {
        (count(&gw.db(), attempted) > 0).then_some(())
    });
    prlimit(gw.pid(), "1:unlimited");
    gw.post_ledger(&ledger_txn("evt_in_outage"))
        .assert_error(503);
    sink.up();
    // Attempts now succeed at the sink but cannot be recorded.
    sink.wait_for(PATIENCE, "an attempt during the outage", |got| {
        !got.is_empty()
    });
    assert_eq!(gw.get("/readyz").status, 503);

    prlimit(gw.pid(), "unlimited:unlimited");
    gw.post_ledger(&ledger_txn("evt_in_outage"))
        .assert_accepted();
    gw.post_ledger(&ledger_txn("evt_after_outage"))
        .assert_accepted();
    let ids: HashSet<String> = ["evt_before_outage", "evt_in_outage", "evt_after_outage"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    wait_delivered(
        &sink,
        &ids,
        "every acknowledged event after the outage",
        &gw,
    );
    let delivered = "SELECT count(*) FROM deliveries WHERE status = 'delivered'";
    wait_until(&gw, "3 deliveries recorded as delivered", || {
        (count(&gw.db(), delivered) >= 3).then_some(())
    });
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM deliveries"), 3);
}
