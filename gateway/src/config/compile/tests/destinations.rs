//! `[destinations.NAME]`, `[admin]` and `[workers]`.

use super::{SecretFiles, assert_has, issues, warnings};
use crate::config::compile::compile;
use crate::config::compile::service::default_plugin_threads;
use crate::config::{
    AdminRole, DestinationKind, OnDead, StaleEvents, SubjectOrdering, WorkerSettings,
};
use base64::Engine as _;
use std::path::Path;
use std::time::Duration;

/// A `whsec_` secret for the key `signing-key`, and the key itself.
fn whsec(files: &SecretFiles) -> (String, &'static [u8]) {
    let key: &'static [u8] = b"signing-key";
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    (files.reference("whsec", &format!("whsec_{encoded}\n")), key)
}

#[test]
fn http_destination_keeps_the_decoded_key_and_applies_defaults() {
    let files = SecretFiles::new();
    let (secret, key) = whsec(&files);
    let text = format!(
        "[destinations.books]\nhttp = \"https://books.example/events?x=1\"\nsecret = '{secret}'\n\
         [[routes]]\nto = [\"books\"]\n"
    );
    let (config, _) = compile(Path::new("g.toml"), &text).expect("valid");
    let d = &config.destinations[0];
    assert_eq!(
        (d.name.as_str(), d.max_attempts, d.concurrency),
        ("books", 8, 64)
    );
    assert_eq!(d.backoff.initial.as_secs(), 1);
    assert_eq!(d.backoff.max.as_secs(), 600);
    let DestinationKind::Http(http) = &d.kind else {
        panic!("expected an http destination, got {:?}", d.kind);
    };
    assert_eq!(http.url.to_string(), "https://books.example/events?x=1");
    assert_eq!(http.signing_key.expose(), key);
    assert_eq!(http.timeout.as_secs(), 10);
}

#[test]
fn url_must_be_absolute_http_with_a_host() {
    let files = SecretFiles::new();
    let (secret, _) = whsec(&files);
    for (url, message) in [
        (
            "ftp://books.example/x",
            "scheme `ftp` is not supported: use http:// or https://",
        ),
        ("/events", "needs an absolute http:// or https:// URL"),
        (
            "https://user:pw@books.example/",
            "user info (`user:password@`) in the URL is not supported",
        ),
    ] {
        let text = format!("[destinations.d]\nhttp = \"{url}\"\nsecret = '{secret}'\n");
        assert_has(
            &issues(&text),
            &format!("g.toml:2:8: destinations.d.http: {message}"),
        );
    }
    let found = issues("[destinations.d]\nhttp = \"http://a b\"\n");
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("g.toml:2:8: destinations.d.http: not a valid URL")),
        "{found:?}"
    );
}

#[test]
fn literal_internal_addresses_need_allow_private_network() {
    let files = SecretFiles::new();
    let (whsec, _) = whsec(&files);
    for (url, range) in [
        ("http://127.0.0.1:9000/", "loopback (127.0.0.0/8)"),
        (
            "http://169.254.169.254/x",
            "cloud metadata (169.254.169.254)",
        ),
        ("https://[fd00:ec2::254]/x", "unique local"),
        ("https://[64:ff9b:1::808:808]/x", "local-use NAT64"),
        ("https://[::ffff:0:808:808]/x", "IPv4-translated"),
        ("http://10.1.2.3/", "private (10.0.0.0/8)"),
    ] {
        let text = format!("[destinations.d]\nhttp = \"{url}\"\nsecret = '{whsec}'\n");
        let found = issues(&text);
        assert!(
            found.iter().any(|i| i.starts_with(&format!(
                "g.toml:2:8: destinations.d.http: the address is {range}"
            )) && i.contains("`allow_private_network = true`")),
            "{url}: {found:?}"
        );
        let allowed = format!("{text}allow_private_network = true\n");
        assert_eq!(issues(&allowed), Vec::<String>::new(), "{url}");
    }
    // Host names are checked when they are resolved, at delivery time.
    let text = format!("[destinations.d]\nhttp = \"http://localhost:9000/\"\nsecret = '{whsec}'\n");
    assert_eq!(issues(&text), Vec::<String>::new());

    let found = issues("[destinations.f]\nfile = \"x.jsonl\"\nallow_private_network = true\n");
    assert_has(
        &found,
        "g.toml:3:25: destinations.f.allow_private_network: applies only to http destinations",
    );
}

#[test]
fn http_secret_is_required_and_must_be_a_standard_webhooks_secret() {
    let found = issues("[destinations.d]\nhttp = \"http://127.0.0.1:9000/\"\n");
    assert_has(
        &found,
        "g.toml:2:8: destinations.d.secret: an http destination needs `secret = \"env:NAME\"`: \
         the `whsec_...` secret its receiver verifies signatures with",
    );

    let files = SecretFiles::new();
    let plain = files.reference("plain", "not-a-whsec-secret");
    let text = format!("[destinations.d]\nhttp = \"http://127.0.0.1:9000/\"\nsecret = '{plain}'\n");
    assert_has(
        &issues(&text),
        &format!(
            "g.toml:3:10: destinations.d.secret: `{plain}` must hold a Standard Webhooks \
             secret: `whsec_` followed by base64"
        ),
    );

    let text = "[destinations.d]\nhttp = \"http://127.0.0.1:9000/\"\n\
                secret = \"env:GATEWAY_TEST_SURELY_UNSET\"\n";
    assert_has(
        &issues(text),
        "g.toml:3:10: destinations.d.secret: environment variable GATEWAY_TEST_SURELY_UNSET \
         is not set",
    );
}

#[test]
fn http_timeout_must_be_positive_and_at_most_five_minutes() {
    for timeout in ["0s", "301s"] {
        let text = format!("[destinations.d]\nhttp = \"http://h/\"\ntimeout = \"{timeout}\"\n");
        assert_has(
            &issues(&text),
            "g.toml:3:11: destinations.d.timeout: must be longer than 0s and at most 5m",
        );
    }
}

#[test]
fn http_only_keys_are_rejected_on_a_file_destination() {
    let text = "[destinations.f]\nfile = \"out.jsonl\"\nsecret = \"env:X\"\ntimeout = \"5s\"\n";
    let found = issues(text);
    assert_eq!(
        found,
        vec![
            "g.toml:3:10: destinations.f.secret: applies only to http destinations",
            "g.toml:4:11: destinations.f.timeout: applies only to http destinations",
        ]
    );
}

#[test]
fn exactly_one_of_http_and_file() {
    assert_has(
        &issues("[destinations.d]\nmax_attempts = 3\n"),
        "g.toml:1:1: destinations.d: a destination needs `http = \"URL\"` or `file = \"PATH\"`",
    );
    assert_has(
        &issues("[destinations.d]\nhttp = \"http://h/\"\nfile = \"x\"\n"),
        "g.toml:3:8: destinations.d.file: set either `http` or `file`, not both",
    );
    assert_has(
        &issues("[destinations.d]\nfile = \"\"\n"),
        "g.toml:2:8: destinations.d.file: must name a file, e.g. \"data/events.jsonl\"",
    );
}

#[test]
fn retry_settings_are_range_checked() {
    let text = "[destinations.d]\nfile = \"x\"\nmax_attempts = 0\nconcurrency = 10001\n\
                [destinations.e]\nfile = \"y\"\nmax_attempts = 101\nconcurrency = 0\n";
    let found = issues(text);
    assert_has(
        &found,
        "g.toml:3:16: destinations.d.max_attempts: must be between 1 and 100",
    );
    assert_has(
        &found,
        "g.toml:4:15: destinations.d.concurrency: must be between 1 and 10000",
    );
    assert_has(
        &found,
        "g.toml:7:16: destinations.e.max_attempts: must be between 1 and 100",
    );
    assert_has(
        &found,
        "g.toml:8:15: destinations.e.concurrency: must be between 1 and 10000",
    );
}

#[test]
fn backoff_max_must_not_be_shorter_than_initial() {
    let found =
        issues("[destinations.d]\nfile = \"x\"\nbackoff_initial = \"10s\"\nbackoff_max = \"5s\"\n");
    assert_eq!(
        found,
        vec!["g.toml:4:15: destinations.d.backoff_max: must be at least backoff_initial (10s)"]
    );
    let found = issues("[destinations.d]\nfile = \"x\"\nbackoff_initial = \"1h\"\n");
    assert_eq!(
        found,
        vec![
            "g.toml:3:19: destinations.d.backoff_initial: must be at most backoff_max \
             (10m, the default)"
        ]
    );
    let found = issues("[destinations.d]\nfile = \"x\"\nbackoff_initial = \"0s\"\n");
    assert_eq!(
        found,
        vec!["g.toml:3:19: destinations.d.backoff_initial: must be longer than 0s"]
    );
}

#[test]
fn destination_names_follow_the_plugin_rule() {
    assert_has(
        &issues("[destinations.\"a b\"]\nfile = \"x\"\n"),
        "g.toml:1:1: destinations.a b: destination names may only use letters, digits, `_` \
         and `-`",
    );
}

#[test]
fn unknown_key_in_a_destination_is_positioned() {
    let found = issues("[destinations.d]\nfile = \"x\"\nretries = 3\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "g.toml:3:1: destinations.d.retries: unknown key `retries` in [destinations.d]"
        ),
        "{found:?}"
    );
}

#[test]
fn a_destination_no_route_uses_is_a_warning() {
    let text = "[destinations.used]\nfile = \"a\"\n[destinations.idle]\nfile = \"b\"\n\
                [[routes]]\nto = [\"used\"]\n";
    let found: Vec<String> = warnings(text)
        .into_iter()
        .filter(|w| w.contains("destinations."))
        .collect();
    assert_eq!(
        found,
        vec!["g.toml:3:1: destinations.idle: no route sends events here"]
    );
}

#[test]
fn admin_token_is_a_resolved_secret_reference() {
    let files = SecretFiles::new();
    let token = files.reference("token", "admin-token\n");
    let text = format!("[admin]\ntoken = '{token}'\n");
    let (config, _) = compile(Path::new("g.toml"), &text).expect("valid");
    let admin = config.admin.expect("admin enabled");
    assert_eq!(admin.tokens.len(), 1);
    // The single token of older configs is an operator named "admin".
    assert_eq!(admin.tokens[0].name, "admin");
    assert_eq!(admin.tokens[0].role, AdminRole::Operator);
    assert_eq!(admin.tokens[0].token.expose(), b"admin-token");
    assert_eq!(admin.listen, None);

    let (config, _) = compile(Path::new("g.toml"), "").expect("valid");
    assert!(config.admin.is_none());
    assert_eq!(
        issues("[admin]\n"),
        vec![
            "g.toml:1:1: admin.token: the admin API needs `token = \"env:NAME\"` or \
             `[[admin.tokens]]` entries (or remove [admin] to disable it)"
        ]
    );
    assert_eq!(
        issues("[admin]\ntoken = \"hunter2hunter2\"\n"),
        vec![
            "g.toml:2:9: admin.token: is not a secret reference (`env:NAME` or `file:PATH`); \
             the value is not shown"
        ]
    );
}

#[test]
fn admin_tokens_have_names_roles_and_a_listener() {
    let files = SecretFiles::new();
    let alice = files.reference("alice", "alice-token");
    let bob = files.reference("bob", "bob-token");
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:9090\"\nsession_ttl = \"1h\"\n\
         [[admin.tokens]]\nname = \"alice\"\nrole = \"viewer\"\ntoken = '{alice}'\n\
         [[admin.tokens]]\nname = \"bob\"\nrole = \"operator\"\ntoken = '{bob}'\n"
    );
    let (config, _) = compile(Path::new("g.toml"), &text).expect("valid");
    let admin = config.admin.expect("admin enabled");
    assert_eq!(admin.listen, Some("127.0.0.1:9090".parse().expect("addr")));
    assert_eq!(admin.session_ttl, std::time::Duration::from_secs(3600));
    let who: Vec<(&str, AdminRole, &[u8])> = admin
        .tokens
        .iter()
        .map(|t| (t.name.as_str(), t.role, t.token.expose()))
        .collect();
    assert_eq!(
        who,
        [
            ("alice", AdminRole::Viewer, &b"alice-token"[..]),
            ("bob", AdminRole::Operator, &b"bob-token"[..])
        ]
    );

    let bad = format!(
        "[admin]\nlisten = \"nowhere\"\ntoken = '{alice}'\n\
         [[admin.tokens]]\nname = \"admin\"\nrole = \"root\"\ntoken = '{bob}'\n\
         [[admin.tokens]]\nname = \"a b\"\nrole = \"viewer\"\ntoken = '{bob}'\n\
         [[admin.tokens]]\nname = \"carol\"\nrole = \"viewer\"\ntoken = '{alice}'\n\
         [[admin.tokens]]\nname = \"dave\"\n"
    );
    let found = issues(&bad);
    assert_has(
        &found,
        "g.toml:2:10: admin.listen: `nowhere` is not an address like 127.0.0.1:9090",
    );
    assert_has(
        &found,
        "g.toml:6:8: admin.tokens[0].role: `root` is not a role: \"viewer\" (reads only) or \
         \"operator\" (also replays and redrives)",
    );
    assert_has(
        &found,
        "g.toml:9:8: admin.tokens[1].name: must be 1 to 64 letters, digits, `_` or `-` (it is \
         shown in the console and stored in audit records)",
    );
    assert_has(
        &found,
        "g.toml:12:1: admin.tokens[2].token: the same token as an earlier entry (each person \
         or system needs a token of its own)",
    );
    assert_has(
        &found,
        "g.toml:16:1: admin.tokens[3].role: every admin token needs a `role`: \"viewer\" or \
         \"operator\"",
    );
    assert_has(
        &found,
        "g.toml:16:1: admin.tokens[3].token: every admin token needs a `token = \"env:NAME\"`",
    );
    // A listing of secret-free keys never shows a token's value.
    assert!(
        found.iter().all(|i| !i.contains("alice-token")),
        "{found:#?}"
    );
}

#[test]
fn workers_have_defaults_and_ranges() {
    let (config, _) = compile(Path::new("g.toml"), "").expect("valid");
    let threads = usize::try_from(default_plugin_threads()).expect("small");
    assert_eq!(
        config.workers,
        WorkerSettings {
            concurrency: 256,
            plugin_threads: threads
        }
    );
    assert!((1..=1024).contains(&threads));

    let text = "[workers]\nconcurrency = 1000\nplugin_threads = 3\n";
    let (config, _) = compile(Path::new("g.toml"), text).expect("valid");
    assert_eq!(
        config.workers,
        WorkerSettings {
            concurrency: 1000,
            plugin_threads: 3
        }
    );

    let found = issues("[workers]\nconcurrency = 0\nplugin_threads = 1025\n");
    assert_eq!(
        found,
        vec![
            "g.toml:2:15: workers.concurrency: must be between 1 and 65536",
            "g.toml:3:18: workers.plugin_threads: must be between 1 and 1024",
        ]
    );
    assert_has(
        &issues("[workers]\nconcurrency = 65537\n"),
        "g.toml:2:15: workers.concurrency: must be between 1 and 65536",
    );
}

#[test]
fn ordering_defaults_to_none_and_subject_takes_its_settings() {
    let base = "[destinations.f]\nfile = \"out.jsonl\"\n[[routes]]\nto = [\"f\"]\n";
    let (config, _) = compile(Path::new("g.toml"), base).expect("valid");
    assert_eq!(config.destinations[0].ordering, None);

    let text = "[destinations.f]\nfile = \"out.jsonl\"\nordering = \"subject\"\n\
                [[routes]]\nto = [\"f\"]\n";
    let (config, _) = compile(Path::new("g.toml"), text).expect("valid");
    assert_eq!(
        config.destinations[0].ordering,
        Some(SubjectOrdering {
            reorder_window: Duration::ZERO,
            stale: StaleEvents::Deliver,
            on_dead: OnDead::Hold,
        })
    );

    let text = "[destinations.f]\nfile = \"out.jsonl\"\nordering = \"subject\"\n\
                reorder_window = \"2s\"\nstale = \"drop\"\non_dead = \"skip\"\n\
                [[routes]]\nto = [\"f\"]\n";
    let (config, _) = compile(Path::new("g.toml"), text).expect("valid");
    assert_eq!(
        config.destinations[0].ordering,
        Some(SubjectOrdering {
            reorder_window: Duration::from_secs(2),
            stale: StaleEvents::Drop,
            on_dead: OnDead::Skip,
        })
    );
}

#[test]
fn ordering_settings_are_checked_with_their_position() {
    let found =
        issues("[destinations.f]\nfile = \"x\"\nordering = \"fifo\"\nreorder_window = \"1s\"\n");
    assert_has(
        &found,
        "g.toml:3:12: destinations.f.ordering: must be \"none\" or \"subject\", not \"fifo\"",
    );
    assert_has(
        &found,
        "g.toml:4:18: destinations.f.reorder_window: applies only with `ordering = \"subject\"`",
    );
    let found = issues(
        "[destinations.f]\nfile = \"x\"\nordering = \"subject\"\nstale = \"keep\"\n\
         on_dead = \"drop\"\nreorder_window = \"11m\"\n",
    );
    assert_has(
        &found,
        "g.toml:4:9: destinations.f.stale: must be \"deliver\" or \"drop\", not \"keep\"",
    );
    assert_has(
        &found,
        "g.toml:5:11: destinations.f.on_dead: must be \"hold\" or \"skip\", not \"drop\"",
    );
    assert_has(
        &found,
        "g.toml:6:18: destinations.f.reorder_window: must be at most 10m",
    );
    let found = issues("[destinations.f]\nfile = \"x\"\nordering = \"none\"\non_dead = \"skip\"\n");
    assert_has(
        &found,
        "g.toml:4:11: destinations.f.on_dead: applies only with `ordering = \"subject\"`",
    );
}
