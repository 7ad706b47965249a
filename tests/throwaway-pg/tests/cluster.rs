//! The clusters really are durable, crash-restartable and replicable servers.

use throwaway_pg::{Cluster, Options, StopMode};

#[test]
fn a_cluster_is_durable_and_survives_an_immediate_restart() {
    let pg = Cluster::start().expect("cluster");
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        let value = pg
            .psql("postgres", &format!("SHOW {setting}"))
            .expect("show");
        assert_eq!(value.trim(), "on", "{setting}");
    }
    pg.create_database("app").expect("createdb");
    pg.psql("app", "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .expect("write");
    pg.restart(StopMode::Immediate).expect("restart");
    assert_eq!(pg.psql("app", "SELECT v FROM t").expect("read").trim(), "7");
}

#[test]
fn a_synchronous_standby_has_every_commit_and_can_be_promoted() {
    let primary = Cluster::start_with(&Options::default().set("synchronous_standby_names", "'*'"))
        .expect("primary");
    let standby = Cluster::standby_of(&primary, &Options::default()).expect("standby");
    // With a synchronous standby, the commit returns only once the standby has the WAL.
    primary
        .psql(
            "postgres",
            "CREATE TABLE t (v int); INSERT INTO t VALUES (42)",
        )
        .expect("write");
    primary.stop(StopMode::Immediate).expect("kill primary");
    standby.promote().expect("promote");
    assert_eq!(
        standby
            .psql("postgres", "SELECT v FROM t")
            .expect("read")
            .trim(),
        "42"
    );
    standby
        .psql("postgres", "INSERT INTO t VALUES (43)")
        .expect("the promoted standby takes writes");
}
