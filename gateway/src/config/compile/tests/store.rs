//! `[store]`: the SQLite file by default, a PostgreSQL database with `url` (a secret
//! reference, never echoed), the keys only PostgreSQL has, and what `gateway backup` reads
//! without resolving secrets.

use super::super::store::DEFAULT_STORE_PATH;
use super::super::{compile, store_location};
use super::{SecretFiles, assert_has, issues};
use crate::config::{SecretRef, StoreBackend, StoreLocation, StoreSettings};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn store(text: &str) -> StoreSettings {
    match compile(Path::new("g.toml"), text) {
        Ok((config, _)) => config.store,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

#[test]
fn the_default_store_is_the_sqlite_file() {
    let StoreBackend::Sqlite { path } = store("").backend else {
        panic!("SQLite by default");
    };
    assert_eq!(path, PathBuf::from(DEFAULT_STORE_PATH));
    assert_has(
        &issues("[store]\npath = \"\"\n"),
        "g.toml:2:8: store.path: must not be empty",
    );
}

#[test]
fn a_url_reference_chooses_postgres_with_its_defaults_and_keys() {
    let files = SecretFiles::new();
    // Several hosts, only the one that takes writes: tokio-postgres's parser, as at start.
    let url = files.reference(
        "db",
        "postgres://gw:pw@db1:5432,db2:5432/gateway?target_session_attrs=read-write\n",
    );
    let StoreBackend::Postgres(pg) = store(&format!("[store]\nurl = \"{url}\"\n")).backend else {
        panic!("url chooses PostgreSQL");
    };
    assert_eq!(
        pg.conninfo(),
        "postgres://gw:pw@db1:5432,db2:5432/gateway?target_session_attrs=read-write"
    );
    assert_eq!(
        (
            pg.pool_size,
            pg.ack_writers,
            pg.connect_timeout,
            pg.statement_timeout,
            pg.lease
        ),
        (
            16,
            2,
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(30)
        )
    );
    let options = crate::store::PgOptions::from(&pg);
    assert_eq!(
        (options.pool_size, options.writers, options.lease),
        (16, 2, Duration::from_secs(30))
    );
    assert_eq!(pg.ack_spacing, Duration::from_millis(2));
    assert_eq!(options.ack_spacing, Duration::from_millis(2));
    let kv = files.reference("kv", "host=/run/postgresql dbname=gateway user=gw");
    let text = format!(
        "[store]\nurl = \"{kv}\"\npool_size = 64\nconnect_timeout = \"2s\"\n\
         statement_timeout = \"1m\"\nlease = \"10s\"\nack_writers = 8\nack_spacing = \"0s\"\n"
    );
    let StoreBackend::Postgres(pg) = store(&text).backend else {
        panic!("url chooses PostgreSQL");
    };
    assert_eq!(
        (
            pg.pool_size,
            pg.ack_writers,
            pg.connect_timeout,
            pg.statement_timeout,
            pg.lease
        ),
        (
            64,
            8,
            Duration::from_secs(2),
            Duration::from_secs(60),
            Duration::from_secs(10)
        )
    );
    assert_eq!(crate::store::PgOptions::from(&pg).writers, 8);
    assert_eq!(
        crate::store::PgOptions::from(&pg).ack_spacing,
        Duration::ZERO
    );
}

#[test]
fn postgres_keys_are_range_checked() {
    let files = SecretFiles::new();
    let url = files.reference("db", "host=/tmp dbname=g");
    let with = |line: &str| issues(&format!("[store]\nurl = \"{url}\"\n{line}\n"));
    assert_has(
        &with("pool_size = 1"),
        "g.toml:3:13: store.pool_size: must be between 2 and 512",
    );
    assert_has(
        &with("pool_size = 513"),
        "g.toml:3:13: store.pool_size: must be between 2 and 512",
    );
    assert_has(
        &with("lease = \"500ms\""),
        "g.toml:3:9: store.lease: must be between 1s and 1h",
    );
    assert_has(
        &with("lease = \"2h\""),
        "g.toml:3:9: store.lease: must be between 1s and 1h",
    );
    assert_has(
        &with("statement_timeout = \"0s\""),
        "g.toml:3:21: store.statement_timeout: must be longer than 0s",
    );
    assert_has(
        &with("connect_timeout = \"0s\""),
        "g.toml:3:19: store.connect_timeout: must be longer than 0s",
    );
    assert_has(
        &with("ack_writers = 0"),
        "g.toml:3:15: store.ack_writers: must be between 1 and 64",
    );
    assert_has(
        &with("ack_writers = 65"),
        "g.toml:3:15: store.ack_writers: must be between 1 and 64",
    );
    // Every writer holds a connection while it commits: two stay for everything else.
    assert_has(
        &with("ack_writers = 15"),
        "g.toml:3:15: store.ack_writers: must leave two of store.pool_size's 16 connections \
         to the workers and the admin API (at most 14): each writer holds one while it commits",
    );
    assert_has(
        &with("ack_spacing = \"101ms\""),
        "g.toml:3:15: store.ack_spacing: must be between 0s (no spacing) and 100ms",
    );
    assert!(with("ack_spacing = \"100ms\"").is_empty());
    assert!(with("ack_writers = 14").is_empty());
    assert!(with("ack_writers = 1").is_empty());
    assert!(with("lease = \"1h\"").is_empty());
    assert!(with("pool_size = 2").is_empty());
}

#[test]
fn path_and_url_together_or_postgres_keys_on_sqlite_are_errors_at_the_key() {
    let files = SecretFiles::new();
    let url = files.reference("db", "host=/tmp dbname=g");
    assert_eq!(
        issues(&format!("[store]\npath = \"g.db\"\nurl = \"{url}\"\n")),
        [
            "g.toml:3:7: store.url: `store.path` and `store.url` cannot both be set: `path` is \
          a SQLite file, `url` a PostgreSQL database; keep the one the gateway should use"
        ]
    );
    let found = issues(
        "[store]\npath = \"g.db\"\npool_size = 8\nconnect_timeout = \"1s\"\n\
         statement_timeout = \"1s\"\nlease = \"5s\"\nack_writers = 1\nack_spacing = \"1ms\"\n",
    );
    let message = "applies only to a PostgreSQL store (`store.url`); this store is the SQLite \
                   file `store.path`";
    for (line, col, key) in [
        (3, 13, "store.pool_size"),
        (4, 19, "store.connect_timeout"),
        (5, 21, "store.statement_timeout"),
        (6, 9, "store.lease"),
        (7, 15, "store.ack_writers"),
        (8, 15, "store.ack_spacing"),
    ] {
        assert_has(&found, &format!("g.toml:{line}:{col}: {key}: {message}"));
    }
    // Without `path` too: the default store is SQLite.
    assert_has(
        &issues("[store]\nlease = \"5s\"\n"),
        &format!("g.toml:2:9: store.lease: {message}"),
    );
}

#[test]
fn a_url_secret_that_is_no_connection_string_is_refused_unshown() {
    let files = SecretFiles::new();
    let url = files.reference("db", "mysql://root:zq9SekretPW@db/gateway");
    let found = issues(&format!("[store]\nurl = \"{url}\"\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("g.toml:2:7: store.url: the secret it names is not a PostgreSQL"),
        "{found:?}"
    );
    assert!(!found[0].contains("zq9SekretPW"), "{found:?}");
    assert_has(
        &issues("[store]\nurl = \"env:GATEWAY_TEST_NEVER_SET\"\n"),
        "g.toml:2:7: store.url: environment variable GATEWAY_TEST_NEVER_SET is not set",
    );
}

#[test]
fn the_store_location_is_read_without_resolving_secrets() {
    let location = |text: &str| store_location(Path::new("g.toml"), text);
    // A secret that resolves nowhere: `gateway backup` runs where the service's secrets are not.
    let text = "[sources.l]\nprovider = \"ledger\"\nsecrets = [\"env:GATEWAY_TEST_NEVER_SET\"]\n\
                [store]\npath = \"/var/lib/gateway/g.db\"\n";
    assert!(
        !issues(text).is_empty(),
        "the full pass resolves the secret"
    );
    assert_eq!(
        location(text).ok(),
        Some(StoreLocation::Sqlite("/var/lib/gateway/g.db".into()))
    );
    assert_eq!(
        location("").ok(),
        Some(StoreLocation::Sqlite(DEFAULT_STORE_PATH.into()))
    );
    assert_eq!(
        location("[store]\nurl = \"env:GATEWAY_TEST_NEVER_SET\"\n").ok(),
        Some(StoreLocation::Postgres(SecretRef::Env(
            "GATEWAY_TEST_NEVER_SET".into()
        )))
    );
    let rendered = |text: &str| match location(text) {
        Ok(l) => panic!("expected an error, got {l:?}"),
        Err(e) => e.issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_has(
        &rendered("[store]\npath = \"\"\n"),
        "g.toml:2:8: store.path: must not be empty",
    );
    let inline = rendered("[store]\nurl = \"postgres://u:zq9SekretPW@h/d\"\n");
    assert!(
        inline[0].starts_with("g.toml:2:7: store.url: ") && !inline[0].contains("zq9SekretPW"),
        "{inline:?}"
    );
    assert_eq!(rendered("[store]\npaht = \"x\"\n").len(), 1);
}

#[test]
fn a_reload_names_every_store_key_that_changed() {
    let files = SecretFiles::new();
    let a = files.reference("a", "host=/tmp dbname=a");
    let b = files.reference("b", "host=/tmp dbname=b");
    let backend = |text: String| store(&text).backend;
    let pg_a = backend(format!("[store]\nurl = \"{a}\"\n"));
    let pg_b = backend(format!("[store]\nurl = \"{b}\"\nlease = \"5s\"\n"));
    let sqlite = backend(String::new());
    let other_file = backend("[store]\npath = \"other.db\"\n".into());
    assert!(pg_a.changed_keys(&pg_a).is_empty());
    assert_eq!(pg_a.changed_keys(&pg_b), ["store.url", "store.lease"]);
    assert_eq!(sqlite.changed_keys(&other_file), ["store.path"]);
    assert_eq!(sqlite.changed_keys(&pg_a), ["store.path", "store.url"]);
    let pg_sized = backend(format!(
        "[store]\nurl = \"{a}\"\npool_size = 20\nack_writers = 4\nack_spacing = \"5ms\"\n"
    ));
    assert_eq!(
        pg_a.changed_keys(&pg_sized),
        ["store.pool_size", "store.ack_writers", "store.ack_spacing"]
    );
}
