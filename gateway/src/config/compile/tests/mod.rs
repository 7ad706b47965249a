//! Tests of the compile pass, through its one entry point and the rendered
//! `file:line:col: key: message` text an operator reads. The existing tables' tests are here;
//! the newer tables have their own files.

mod destinations;
mod routes;
mod secrets;
mod store;

use super::compile;
use super::plugins::DEFAULT_PLUGIN_TIMEOUT;
use crate::config::{ForwardedHeader, InstanceMode};
use std::path::Path;

/// Every error of `text`, rendered; empty when it compiles.
fn issues(text: &str) -> Vec<String> {
    match compile(Path::new("g.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.issues.iter().map(ToString::to_string).collect(),
    }
}

/// Every warning of `text`, rendered; panics with the errors when it does not compile.
fn warnings(text: &str) -> Vec<String> {
    match compile(Path::new("g.toml"), text) {
        Ok((_, w)) => w.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Asserts that `found` holds exactly the issue `expected` (`file:line:col: key: message`).
#[track_caller]
fn assert_has(found: &[String], expected: &str) {
    assert!(
        found.iter().any(|i| i == expected),
        "expected {expected:?} among {found:#?}"
    );
}

/// Secret files for `file:` references: tests run in parallel, so they must not change the
/// process environment.
struct SecretFiles(tempfile::TempDir);

impl SecretFiles {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    /// A `file:` reference to a new file holding `value`.
    fn reference(&self, name: &str, value: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, value).expect("write secret file");
        format!("file:{}", path.display())
    }
}

#[test]
fn plugin_limits_out_of_range_are_reported() {
    let text =
        "[plugins.p]\nwasm = \"p.wasm\"\nmemory = \"8GiB\"\ntimeout = \"0s\"\nmode = \"tepid\"\n";
    let found = issues(text);
    assert!(
        found
            .iter()
            .any(|i| i.starts_with("g.toml:3:10: plugins.p.memory")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|i| i.contains("plugins.p.timeout")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|i| i.contains("plugins.p.mode")),
        "{found:?}"
    );
}

#[test]
fn plugin_defaults_apply() {
    let text = "[plugins.p]\nwasm = \"p.wasm\"\nsettings = { threshold = \"10\" }\n";
    let (config, _) = compile(Path::new("g.toml"), text).expect("valid");
    let p = &config.plugins[0];
    assert_eq!(p.mode, InstanceMode::Fresh);
    assert_eq!(p.limits.timeout, DEFAULT_PLUGIN_TIMEOUT);
    assert_eq!(p.settings.get("threshold").map(String::as_str), Some("10"));
    assert_eq!(p.issue("x").to_string(), "g.toml:2:8: plugins.p.wasm: x");
}

#[test]
fn unknown_key_names_table_line_and_key() {
    let found = issues("[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("g.toml:3:1: server.lisen: unknown key `lisen`"),
        "{found:?}"
    );
}

#[test]
fn missing_env_secret_is_reported_with_its_index() {
    let text =
        "[sources.l]\nprovider = \"ledger\"\nsecrets = [\"env:GATEWAY_TEST_SURELY_UNSET\"]\n";
    let found = issues(text);
    assert_eq!(
        found,
        vec![
            "g.toml:3:12: sources.l.secrets[0]: environment variable GATEWAY_TEST_SURELY_UNSET is not set"
        ]
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = "[server]\nlisten = \"nope\"\nmax_body = \"1MiB\"\n[sources.a]\nprovider = \"ledig\"\ntolerance = \"5m\"\n[sources.b]\nprovider = \"paypal\"\n";
    let found = issues(text);
    assert!(
        found.iter().any(|i| i.contains("server.listen")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|i| i.contains("sources.a.tolerance")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|i| i.contains("needs `token`")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|i| i.contains("sources.b.provider")),
        "{found:?}"
    );
}

#[test]
fn unprotected_ledig_source_is_accepted_with_a_warning() {
    let text = "[sources.l]\nprovider = \"ledig\"\nunprotected = true\n";
    let (config, warnings) = compile(Path::new("g.toml"), text).expect("valid");
    assert_eq!(config.sources[0].path, "/webhooks/l");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].to_string().contains("sources.l.unprotected"));
}

#[test]
fn a_ledig_retry_window_is_a_day_by_default_and_bounded() {
    use crate::config::ProviderSettings;
    let window = |extra: &str| {
        let text = format!("[sources.l]\nprovider = \"ledig\"\nunprotected = true\n{extra}");
        compile(Path::new("g.toml"), &text).map(|(c, _)| match &c.sources[0].provider {
            ProviderSettings::Ledig(l) => l.retry_window,
            ProviderSettings::Ledger(_) => panic!("a Ledig source"),
        })
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(window("").expect("compiles"), day);
    assert_eq!(
        window("retry_window = \"2h\"\n").expect("compiles"),
        std::time::Duration::from_secs(7200)
    );
    for bad in ["0s", "500ms", "400d"] {
        let found = issues(&format!(
            "[sources.l]\nprovider = \"ledig\"\nunprotected = true\nretry_window = \"{bad}\"\n"
        ));
        assert_has(
            &found,
            "g.toml:4:16: sources.l.retry_window: must be between 1s and 365d",
        );
    }
    // Ledger sources have signed ids: the key does not apply.
    let found = issues(
        "[sources.s]\nprovider = \"ledger\"\nsecrets = [\"whsec_eA==\"]\nretry_window = \"1h\"\n",
    );
    assert!(
        found
            .iter()
            .any(|i| i.contains("sources.s.retry_window: `retry_window` does not apply")),
        "{found:?}"
    );
}

#[test]
fn reserved_and_duplicate_paths_are_rejected() {
    let text = "[sources.a]\nprovider = \"ledig\"\nunprotected = true\npath = \"/metrics\"\n[sources.b]\nprovider = \"ledig\"\nunprotected = true\npath = \"/metrics\"\n";
    let found = issues(text);
    assert_eq!(
        found.iter().filter(|i| i.contains("reserved")).count(),
        2,
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.contains("already the path of source `a`"))
    );
}

#[test]
fn retention_is_optional_and_never_shorter_than_the_dedup_window() {
    let compiled = |text: &str| compile(Path::new("g.toml"), text).map(|(c, _)| c.store);
    let store = compiled("").expect("defaults compile");
    assert_eq!(
        store.retention, None,
        "events are kept unless retention is set"
    );
    let store = compiled("[store]\nretention = \"90d\"\n").expect("compiles");
    assert_eq!(
        store.retention,
        Some(std::time::Duration::from_secs(90 * 24 * 3600))
    );
    let store = compiled("[store]\ndedup_window = \"1h\"\nretention = \"1h\"\n").expect("compiles");
    assert_eq!(store.retention, Some(std::time::Duration::from_secs(3600)));
    assert_has(
        &issues("[store]\nretention = \"7d\"\n"),
        "g.toml:2:13: store.retention: must be at least store.dedup_window (30days): duplicates \
         are recognized from stored events",
    );
    assert_has(
        &issues("[store]\nretention = \"0s\"\n"),
        "g.toml:2:13: store.retention: must be longer than 0s",
    );
}

#[test]
fn quarantine_retention_defaults_to_thirty_days_and_is_never_zero() {
    let compiled = |text: &str| compile(Path::new("g.toml"), text).map(|(c, _)| c.store);
    let day = std::time::Duration::from_secs(24 * 3600);
    let store = compiled("").expect("defaults compile");
    assert_eq!(store.quarantine_retention, 30 * day);
    let store = compiled("[store]\nquarantine_retention = \"7d\"\n").expect("compiles");
    assert_eq!(store.quarantine_retention, 7 * day);
    assert_has(
        &issues("[store]\nquarantine_retention = \"0s\"\n"),
        "g.toml:2:24: store.quarantine_retention: must be longer than 0s",
    );
}

#[test]
fn trusted_proxies_are_addresses_or_networks() {
    let server = |text: &str| compile(Path::new("g.toml"), text).map(|(c, _)| c.server);
    let s = server("").expect("defaults compile");
    assert!(
        s.trusted_proxies.networks.is_empty(),
        "no proxy is trusted by default"
    );
    assert_eq!(s.trusted_proxies.header, ForwardedHeader::XForwardedFor);
    let s = server("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").expect("compiles");
    assert_eq!(s.trusted_proxies.networks.len(), 2);
    assert_has(
        &issues("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]\n"),
        "g.toml:2:34: server.trusted_proxies[1]: `lb.internal` is not an IP address or CIDR network",
    );
}

#[test]
fn the_forwarding_header_is_one_of_two_and_needs_trusted_proxies() {
    let server = |text: &str| compile(Path::new("g.toml"), text).map(|(c, _)| c.server);
    let s =
        server("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\nforwarded_header = \"Forwarded\"\n")
            .expect("compiles");
    assert_eq!(s.trusted_proxies.header, ForwardedHeader::Forwarded);
    assert_has(
        &issues("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\nforwarded_header = \"x-real-ip\"\n"),
        "g.toml:3:20: server.forwarded_header: unknown header `x-real-ip` (expected \"x-forwarded-for\" or \"forwarded\")",
    );
    assert_has(
        &warnings("[server]\nforwarded_header = \"forwarded\"\n"),
        "g.toml:2:20: server.forwarded_header: has no effect without `server.trusted_proxies`",
    );
}

#[test]
fn networks_written_ipv4_mapped_are_the_ipv4_networks_they_name() {
    let text = "[server]\ntrusted_proxies = [\"::ffff:10.0.0.0/104\", \"::ffff:192.0.2.1\", \"::1\"]\n\
                [sources.l]\nprovider = \"ledig\"\nallow_ips = [\"::ffff:203.0.113.0/120\", \"2001:db8::/32\"]\n";
    let (config, warnings) = compile(Path::new("g.toml"), text).expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    let nets = |list: &[ipnet::IpNet]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        nets(&config.server.trusted_proxies.networks),
        ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]
    );
    let crate::providers::settings::ProviderSettings::Ledig(ledig) = &config.sources[0].provider
    else {
        panic!("a Ledig source");
    };
    assert_eq!(nets(&ledig.allow_ips), ["203.0.113.0/24", "2001:db8::/32"]);
}

#[test]
fn an_ipv6_network_holding_every_ipv4_mapped_address_is_warned_about() {
    let found = warnings(
        "[sources.l]\nprovider = \"ledig\"\nallow_ips = [\"0.0.0.0/0\", \"::/0\", \"2001:db8::/32\"]\n",
    );
    assert_eq!(
        found,
        [
            "g.toml:3:27: sources.l.allow_ips[1]: `::/0` does not match IPv4 clients, which are \
          compared as IPv4 addresses (also on a dual-stack listener); add 0.0.0.0/0 or the IPv4 \
          networks meant"
        ]
    );
}

#[test]
fn connection_and_body_buffer_caps_have_defaults_ranges_and_a_floor() {
    let server = |text: &str| compile(Path::new("g.toml"), text).map(|(c, _)| c.server);
    let s = server("").expect("defaults compile");
    assert_eq!(
        (s.max_connections, s.max_body_buffer),
        (1024, 64 * 1024 * 1024)
    );
    let s = server("[server]\nmax_body = \"100MiB\"\n").expect("compiles");
    assert_eq!(s.max_body_buffer, 100 * 1024 * 1024, "never below max_body");
    let s = server("[server]\nmax_connections = 10\nmax_body_buffer = \"2MiB\"\n").expect("ok");
    assert_eq!(
        (s.max_connections, s.max_body_buffer),
        (10, 2 * 1024 * 1024)
    );
    assert_has(
        &issues("[server]\nmax_connections = 0\n"),
        "g.toml:2:19: server.max_connections: must be between 1 and 1000000",
    );
    assert_has(
        &issues("[server]\nmax_body = \"1MiB\"\nmax_body_buffer = \"512KiB\"\n"),
        "g.toml:3:19: server.max_body_buffer: must be at least server.max_body (1048576 bytes)",
    );
}

#[test]
fn runtime_threads_are_tokios_default_unless_set_within_range() {
    let server = |text: &str| compile(Path::new("g.toml"), text).map(|(c, _)| c.server);
    let s = server("").expect("defaults compile");
    assert_eq!(s.runtime_threads, None, "unset: tokio's own default");
    let s = server("[server]\nruntime_threads = 3\n").expect("compiles");
    assert_eq!(s.runtime_threads, Some(3));
    assert_has(
        &issues("[server]\nruntime_threads = 0\n"),
        "g.toml:2:19: server.runtime_threads: must be between 1 and 1024",
    );
    assert_has(
        &issues("[server]\nruntime_threads = 1025\n"),
        "g.toml:2:19: server.runtime_threads: must be between 1 and 1024",
    );
}
