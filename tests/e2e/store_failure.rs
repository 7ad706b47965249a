//! A store that cannot be written answers 503 (never 200), `/readyz` says so, and the gateway
//! recovers by itself once writes work again. The failure is real: the process's file-size
//! limit is lowered with `prlimit`, so SQLite's writes fail with EFBIG.

use crate::harness::*;
use std::process::Command;

fn prlimit(pid: u32, fsize: &str) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={fsize}"))
        .status()
        .expect("prlimit (util-linux) must be installed");
    assert!(status.success(), "prlimit --fsize={fsize} failed");
}

#[test]
fn unwritable_store_answers_503_and_recovers() {
    let gw = Gateway::start();
    let first = br#"{"id":"evt_before","type":"wallet.created","createdAt":1,"data":{"id":"w"}}"#;
    gw.post_ledger(first).assert_accepted();

    // Soft limit 1 byte, hard limit unlimited so it can be raised again.
    prlimit(gw.pid(), "1:unlimited");
    let during = br#"{"id":"evt_during","type":"wallet.created","createdAt":1,"data":{"id":"w"}}"#;
    for _ in 0..3 {
        gw.post_ledger(during).assert_error(503);
    }
    gw.post_ledig(b"not json").assert_error(503);
    gw.request("GET", "/readyz", &[], b"").assert_error(503);

    prlimit(gw.pid(), "unlimited:unlimited");
    gw.post_ledger(during).assert_accepted();
    gw.post_ledger(during).assert_duplicate();
    let r = gw.request("GET", "/readyz", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let db = gw.db();
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 0);
    let m = gw.metrics();
    assert!(
        m.contains("gateway_requests_total{outcome=\"error\",source=\"ledger\"} 3"),
        "{m}"
    );
}
