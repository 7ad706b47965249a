//! A store that cannot be written answers 503 `{"ok":false,...}` (never a 200 for something
//! not stored, never a 400 for a body it could not quarantine), `/readyz` says 503, and the
//! gateway recovers by itself once writes work again: the same event that got 503 is then
//! accepted (a failed write must not leave a dedup mark) and stored. The failure is real: the
//! running process's file-size limit is lowered with `prlimit`, so SQLite's writes fail with
//! EFBIG (the gateway ignores SIGXFSZ).

use crate::harness::*;
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
