//! `[[routes]]`, and a full config using every new table.

use super::{SecretFiles, issues, warnings};
use crate::config::DestinationKind;
use crate::config::compile::compile;
use crate::config::compile::service::default_plugin_threads;
use base64::Engine as _;
use std::path::Path;
use std::time::Duration;

/// One destination for routes to name, then the routes under test (from line 3).
const DESTINATION: &str = "[destinations.out]\nfile = \"out.jsonl\"\n";

#[test]
fn a_full_config_compiles_with_its_defaults() {
    let files = SecretFiles::new();
    let key = base64::engine::general_purpose::STANDARD.encode(b"books-key");
    let whsec = files.reference("whsec", &format!("whsec_{key}"));
    let token = files.reference("token", "ledig-token");
    let admin = files.reference("admin", "admin-token");
    let text = format!(
        r#"[sources.ledger]
provider = "ledger"
secrets = ['{whsec}']
[sources.ledig]
provider = "ledig"
token = '{token}'
[plugins.tag]
wasm = "tag.wasm"
[admin]
token = '{admin}'
[destinations.books]
http = "http://127.0.0.1:9000/events"
allow_private_network = true
secret = '{whsec}'
timeout = "5s"
[destinations.audit]
file = "data/events.jsonl"
max_attempts = 3
backoff_initial = "2s"
backoff_max = "1m"
concurrency = 4
[[routes]]
match = {{ source = "ledger", type = ["ledger.transaction.*", "ledger.payout.?"] }}
plugins = ["tag"]
to = ["books", "audit"]
[[routes]]
name = "everything"
to = ["audit"]
"#
    );
    let (config, warnings) = compile(Path::new("g.toml"), &text).expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.admin.as_ref().map(|a| a.tokens[0].token.expose()),
        Some(&b"admin-token"[..])
    );
    assert_eq!(config.workers.concurrency, 256);
    assert_eq!(
        Some(config.workers.plugin_threads),
        usize::try_from(default_plugin_threads()).ok()
    );

    // Sorted by name.
    let [audit, books] = &config.destinations[..] else {
        panic!("two destinations: {:?}", config.destinations);
    };
    assert_eq!(audit.name, "audit");
    assert!(
        matches!(&audit.kind, DestinationKind::File(f) if f.path == Path::new("data/events.jsonl"))
    );
    assert_eq!((audit.max_attempts, audit.concurrency), (3, 4));
    assert_eq!(audit.backoff.initial, Duration::from_secs(2));
    assert_eq!(audit.backoff.max, Duration::from_secs(60));
    assert_eq!(books.name, "books");
    let DestinationKind::Http(http) = &books.kind else {
        panic!("books is http: {:?}", books.kind);
    };
    assert_eq!(http.url.to_string(), "http://127.0.0.1:9000/events");
    assert_eq!(http.signing_key.expose(), b"books-key");
    assert_eq!(http.timeout, Duration::from_secs(5));
    assert_eq!((books.max_attempts, books.concurrency), (8, 64));
    assert_eq!(books.backoff.initial, Duration::from_secs(1));
    assert_eq!(books.backoff.max, Duration::from_secs(600));

    let [first, second] = &config.routes[..] else {
        panic!("two routes: {:?}", config.routes);
    };
    assert_eq!(first.name, "route-1");
    let patterns = |g: &[crate::config::Glob]| -> Vec<String> {
        g.iter().map(|g| g.pattern.clone()).collect()
    };
    assert_eq!(patterns(&first.sources), vec!["ledger".to_owned()]);
    assert_eq!(
        patterns(&first.types),
        vec![
            "ledger.transaction.*".to_owned(),
            "ledger.payout.?".to_owned()
        ]
    );
    assert_eq!(first.plugins, ["tag"]);
    assert_eq!(first.to, ["books", "audit"]);
    assert!(first.matches("ledger", "ledger.transaction.completed"));
    assert!(first.matches("ledger", "ledger.payout.x"));
    assert!(!first.matches("ledger", "ledger.payout.failed"));
    assert!(!first.matches("ledig", "ledger.transaction.completed"));
    assert_eq!(second.name, "everything");
    assert!(second.sources.is_empty() && second.types.is_empty() && second.plugins.is_empty());
    assert_eq!(second.to, ["audit"]);
    assert!(second.matches("ledig", "ledig.crypto_received"));
}

#[test]
fn invalid_glob_is_positioned_at_its_element() {
    let text = format!(
        "{DESTINATION}[[routes]]\nto = [\"out\"]\nmatch = {{ type = [\"a.*\", \"b[\"] }}\n"
    );
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("g.toml:5:26: routes[0].match.type[1]: invalid glob `b[`: "),
        "{found:?}"
    );
}

#[test]
fn a_plain_string_is_one_pattern_and_an_empty_list_is_an_error() {
    let text = format!(
        "{DESTINATION}[[routes]]\nto = [\"out\"]\n[routes.match]\ntype = \"ledig.*\"\n\
         source = []\n"
    );
    assert_eq!(
        issues(&text),
        vec![
            "g.toml:7:10: routes[0].match.source: an empty list is ambiguous: remove `source` \
             to match every source"
        ]
    );
    let text = format!("{DESTINATION}[[routes]]\nto = [\"out\"]\nmatch.type = \"ledig.*\"\n");
    let (config, _) = compile(Path::new("g.toml"), &text).expect("valid");
    assert!(config.routes[0].matches("any", "ledig.crypto_received"));
    assert!(!config.routes[0].matches("any", "ledger.x"));
}

#[test]
fn unknown_plugins_and_destinations_are_named_where_written() {
    let text = format!(
        "{DESTINATION}[plugins.known]\nwasm = \"k.wasm\"\n\
         [[routes]]\nplugins = [\"known\", \"missing\"]\nto = [\"out\", \"nowhere\", \"out\"]\n"
    );
    let found = issues(&text);
    assert_eq!(
        found,
        vec![
            "g.toml:6:21: routes[0].plugins[1]: unknown plugin `missing`: there is no \
             [plugins.missing]",
            "g.toml:7:14: routes[0].to[1]: unknown destination `nowhere`: there is no \
             [destinations.nowhere]",
            "g.toml:7:25: routes[0].to[2]: `out` is listed twice",
        ]
    );
}

#[test]
fn to_is_required_and_not_empty() {
    let text = format!("{DESTINATION}[[routes]]\nname = \"a\"\n[[routes]]\nto = []\n");
    assert_eq!(
        issues(&text),
        vec![
            "g.toml:3:1: routes[0].to: a route needs `to = [\"DESTINATION\", ...]`",
            "g.toml:6:6: routes[1].to: needs at least one destination",
        ]
    );
}

#[test]
fn route_names_are_valid_and_unique_defaults_included() {
    let text = format!(
        "{DESTINATION}[[routes]]\nname = \"route-2\"\nto = [\"out\"]\n\
         [[routes]]\nto = [\"out\"]\n[[routes]]\nname = \"no spaces\"\nto = [\"out\"]\n"
    );
    assert_eq!(
        issues(&text),
        vec![
            "g.toml:6:1: routes[1].name: `route-2` is already the name of routes[0]",
            "g.toml:9:8: routes[2].name: route names may only use letters, digits, `_` and `-`",
        ]
    );
}

#[test]
fn unknown_key_in_match_is_positioned() {
    let text = format!(
        "{DESTINATION}[[routes]]\nto = [\"out\"]\n[[routes]]\nto = [\"out\"]\n\
         match = {{ type = \"a.*\", sorce = [\"ledger\"] }}\n"
    );
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "g.toml:7:25: routes[1].match.sorce: unknown key `sorce` in [routes[1].match]"
        ),
        "{found:?}"
    );
    let found = issues(&format!("{DESTINATION}[[routes]]\ndestinations = []\n"));
    assert!(
        found[0].starts_with("g.toml:4:1: routes[0].destinations: unknown key `destinations`"),
        "{found:?}"
    );
}

#[test]
fn a_source_pattern_matching_no_source_is_a_warning() {
    let text = format!(
        "[sources.ledger]\nprovider = \"ledig\"\nunprotected = true\n{DESTINATION}\
         [[routes]]\nto = [\"out\"]\nmatch = {{ source = [\"ledg*\", \"ledgr\"] }}\n"
    );
    let found: Vec<String> = warnings(&text)
        .into_iter()
        .filter(|w| w.contains("routes["))
        .collect();
    assert_eq!(
        found,
        vec!["g.toml:8:30: routes[0].match.source[1]: `ledgr` matches no configured source"]
    );
}

#[test]
fn a_routes_plugin_retry_schedule_has_defaults_and_is_checked() {
    let plugin = "[plugins.p]\nwasm = \"p.wasm\"\n";
    let route = |keys: &str| {
        format!("{DESTINATION}{plugin}[[routes]]\nplugins = [\"p\"]\nto = [\"out\"]\n{keys}")
    };
    let compiled = |keys: &str| match compile(Path::new("g.toml"), &route(keys)) {
        Ok((c, _)) => c.routes[0].plugin_retry,
        Err(e) => panic!("{e}"),
    };
    let default = compiled("");
    assert_eq!(default.max_attempts, 10);
    assert_eq!(default.backoff.initial, Duration::from_secs(1));
    assert_eq!(default.backoff.max, Duration::from_secs(300));
    let set = compiled(
        "plugin_max_attempts = 3\nplugin_backoff_initial = \"20ms\"\nplugin_backoff_max = \"1s\"\n",
    );
    assert_eq!(set.max_attempts, 3);
    assert_eq!(set.backoff.initial, Duration::from_millis(20));
    assert_eq!(set.backoff.max, Duration::from_secs(1));

    // Lines: destination 1-2, plugin 3-4, route 5-7, then the keys from line 8.
    let found = issues(&route("plugin_max_attempts = 0\n"));
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("g.toml:8:23: routes[0].plugin_max_attempts: ")),
        "{found:#?}"
    );
    super::assert_has(
        &issues(&route("plugin_backoff_initial = \"0s\"\n")),
        "g.toml:8:26: routes[0].plugin_backoff_initial: must be longer than 0s",
    );
    super::assert_has(
        &issues(&route("plugin_backoff_initial = \"10m\"\n")),
        "g.toml:8:26: routes[0].plugin_backoff_initial: must be at most plugin_backoff_max \
         (5m, the default)",
    );
    // Retry settings on a route that runs no plugin cannot take effect: said, not fatal.
    let text = format!("{DESTINATION}[[routes]]\nto = [\"out\"]\nplugin_max_attempts = 3\n");
    let said = warnings(&text);
    assert!(
        said.iter().any(|w| w.contains(
            "routes[0].plugins: plugin retry settings on a route without plugins have no effect"
        )),
        "{said:#?}"
    );
}
