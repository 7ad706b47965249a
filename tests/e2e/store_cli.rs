//! The store's one-shot commands on the real binary and a throwaway PostgreSQL cluster:
//! `gateway check` says where a PostgreSQL schema stands (behind, current, ahead) and fails
//! when the database is ahead or unreachable, never showing the password; `gateway migrate`
//! applies the schema once and refuses a newer one (exit 1) or an unreachable database
//! (exit 2); `gateway store copy` moves a store the gateway filled and then stopped, and
//! refuses a database that is no longer empty; `gateway backup` points a PostgreSQL config at
//! pg_dump.

use crate::harness::*;
use std::process::{Command, Output};
use throwaway_pg::{Cluster, StopMode};

/// A password the cluster (trust authentication) ignores and no output may show.
const PASSWORD: &str = "zq9PgSekret";

fn run(args: &[&str], conninfo: &str) -> Output {
    Command::new(gateway_bin())
        .args(args)
        .envs(env_vars())
        .env("E2E_DATABASE_URL", conninfo)
        .output()
        .expect("run gateway")
}

fn text(out: &Output) -> (Option<i32>, String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "the password was shown:\n{stdout}\n{stderr}"
    );
    (out.status.code(), stdout, stderr)
}

fn postgres_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nurl = \"env:E2E_DATABASE_URL\"\n\
                lease = \"10s\"\n\n[sources.ledger]\nprovider = \"ledger\"\n\
                secrets = [\"env:E2E_LEDGER_SECRET\"]\n";
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_and_migrate_say_where_the_schema_stands() {
    let pg = Cluster::start().expect("a throwaway PostgreSQL cluster");
    pg.create_database("gateway").expect("createdb");
    let conninfo = format!("{} password={PASSWORD}", pg.conninfo("gateway"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = postgres_config(dir.path());
    let config = config.to_str().expect("a UTF-8 path");
    let check = || text(&run(&["check", "--config", config], &conninfo));
    let migrate = || text(&run(&["migrate", "--config", config], &conninfo));
    let place = format!("postgres {} database gateway", pg.socket_dir().display());

    let (code, stdout, stderr) = check();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "store: {place}: schema version 0, this gateway's is 10 (behind: run gateway migrate \
             or start the gateway)"
        )),
        "{stdout}"
    );
    let (code, stdout, stderr) = migrate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "store: {place}: applied schema version(s) 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
        )),
        "{stdout}"
    );
    let (code, stdout, _) = migrate();
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("schema version 10 is current, nothing to apply"),
        "{stdout}"
    );
    let (code, stdout, _) = check();
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains(&format!("store: {place}: schema version 10 (current)")),
        "{stdout}"
    );

    // A newer gateway migrated it: refused by both, untouched.
    pg.psql(
        "gateway",
        "INSERT INTO gateway_schema_migrations (version, name) VALUES (11, 'from the future')",
    )
    .expect("writes");
    let (code, _, stderr) = check();
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("schema version 11 is ahead of this gateway (10): refused"),
        "{stderr}"
    );
    let (code, _, stderr) = migrate();
    assert_eq!(code, Some(1));
    assert!(stderr.contains("newer than this gateway knows"), "{stderr}");

    // Unreachable: an error of check, exit 2 of migrate.
    pg.stop(StopMode::Fast).expect("stops");
    let (code, _, stderr) = check();
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "error: store: cannot reach the database: cannot open store {place}"
        )),
        "{stderr}"
    );
    let (code, _, stderr) = migrate();
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn store_copy_moves_a_stopped_gateways_store_once() {
    let mut gw = Gateway::start();
    for id in ["evt_cp_1", "evt_cp_2", "evt_cp_3"] {
        gw.post_ledger(&crate::ack_stream::ledger_event(id))
            .assert_accepted();
    }
    // Routed before the stop, so that the copy has routings to carry: a stop does not wait
    // for the backlog (it stays in `event_work` for the next start), and CI once stopped the
    // gateway 13 ms after its start, before the worker had taken the three.
    let conn = gw.db();
    wait_until(&gw, "three events routed", || {
        (count(&conn, "SELECT count(*) FROM routings") == 3).then_some(())
    });
    drop(conn);
    let status = gw.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    let db = gw.db.display().to_string();

    let pg = Cluster::start().expect("a throwaway PostgreSQL cluster");
    pg.create_database("gateway").expect("createdb");
    let conninfo = format!("{} password={PASSWORD}", pg.conninfo("gateway"));
    let copy = || {
        text(&run(
            &[
                "store",
                "copy",
                "--from",
                &db,
                "--to",
                "env:E2E_DATABASE_URL",
            ],
            &conninfo,
        ))
    };
    let (code, stdout, stderr) = copy();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("migrated postgres"), "{stdout}");
    assert!(
        // No route matches: each event was routed (`unrouted`) before the gateway stopped.
        stdout.contains(
            "events 3, dedup_keys 3, object_states 0, routings 3, deliveries 0, \
                         route_runs 0, quarantine 0, event_work 0, admin_audit 0"
        ),
        "{stdout}"
    );
    assert_eq!(
        pg.psql(
            "gateway",
            "SELECT string_agg(dedup_key, ',' ORDER BY seq) FROM stored_events"
        )
        .expect("reads")
        .trim(),
        "evt_cp_1,evt_cp_2,evt_cp_3"
    );
    let (code, _, stderr) = copy();
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("the target database is not empty (events: 3 row(s)"),
        "{stderr}"
    );

    // `gateway backup` of a PostgreSQL config: pointed at PostgreSQL's own tools.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = postgres_config(dir.path());
    let to = dir.path().join("b.db");
    let args = [
        "backup",
        "--config",
        config.to_str().expect("UTF-8"),
        "--to",
        to.to_str().expect("UTF-8"),
    ];
    let (code, _, stderr) = text(&run(&args, &conninfo));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("pg_dump") && stderr.contains("pg_basebackup"),
        "{stderr}"
    );
    assert!(!to.exists());
}

#[test]
fn a_reload_that_switches_the_store_to_postgres_keeps_serving_from_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gateway.db");
    let path = dir.path().join("gateway.toml");
    let sqlite_config = config(&db, &Settings::default());
    std::fs::write(&path, &sqlite_config).expect("write config");
    let gw = Gateway::start_in_with(dir, db.clone(), |c| {
        c.env("E2E_DATABASE_URL", "host=/nowhere dbname=gateway");
    });
    gw.post_ledger(&crate::ack_stream::ledger_event("evt_before_switch"))
        .assert_accepted();
    let path_line = format!("path = \"{}\"", db.display());
    assert!(sqlite_config.contains(&path_line));
    let postgres_config = sqlite_config.replace(&path_line, "url = \"env:E2E_DATABASE_URL\"");
    std::fs::write(&path, postgres_config).expect("write config");
    gw.wait_for_reload("no restart notice for store.path and store.url", || {
        let lines = gw.log_lines("takes effect only after a restart");
        ["key=store.path", "key=store.url"]
            .iter()
            .all(|k| lines.iter().any(|l| l.contains(k)))
    });
    // The running store is still the SQLite file.
    gw.post_ledger(&crate::ack_stream::ledger_event("evt_after_switch"))
        .assert_accepted();
    assert_eq!(
        count(
            &open_db(&db),
            "SELECT count(*) FROM events WHERE dedup_key LIKE 'evt_%_switch'"
        ),
        2
    );
}
