//! The compile pass: raw TOML tables in, a [`GatewayConfig`] out, with every problem collected
//! (not just the first) and each one pointing at its file, line and key.
//!
//! This module owns the pass itself ([`Pass`]), the top-level walk and the small `[server]`
//! table; each larger table family has its own file: `store` (the backend and what is kept),
//! `sources` (providers, paths and their protection), `plugins` (limits and instance modes),
//! `service` (`[admin]`, `[workers]`),
//! `destinations` and `routes` (which also checks every name a route refers to). Defaults are
//! named constants next to the code that applies them.

mod destinations;
mod ordering;
mod plugins;
mod routes;
mod service;
mod sources;
mod store;
#[cfg(test)]
mod tests;

pub(super) use store::store_location;

use super::error::SourceText;
use super::raw::{HumanDuration, RawConfig, RawServer, SecretValue};
use super::secret::{Secret, SecretRef};
use super::{
    Backoff, ConfigError, ConfigIssue, ConfigWarning, ForwardedHeader, GatewayConfig,
    ServerSettings, TrustedProxies,
};
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Enough for every provider's concurrent deliveries (they send a few at a time) and the
/// load balancers' keep-alive pools, with room; the cap bounds what idle or stalled
/// connections cost (each may hold a request head of up to ~128 KiB until `header_timeout`).
const DEFAULT_MAX_CONNECTIONS: u64 = 1024;
const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=1_000_000;
const RUNTIME_THREADS: RangeInclusive<u64> = 1..=1024;
/// 64 bodies of the default `max_body` at once, or ~160,000 typical 400-byte ones.
const DEFAULT_MAX_BODY_BUFFER: u64 = 64 * 1024 * 1024;
const DEFAULT_WASM_CACHE: &str = "data/wasm-cache";

/// Collects issues while the pass walks the tables.
struct Pass<'a> {
    src: SourceText<'a>,
    errors: Vec<ConfigIssue>,
    warnings: Vec<ConfigWarning>,
}

impl Pass<'_> {
    fn error(&mut self, span: Range<usize>, key: impl Into<String>, msg: impl Into<String>) {
        let issue = self.src.issue(span, key, msg);
        self.errors.push(issue);
    }

    fn warn(&mut self, span: Range<usize>, key: impl Into<String>, msg: impl Into<String>) {
        let issue = self.src.issue(span, key, msg);
        self.warnings.push(issue);
    }

    /// Resolves the `env:`/`file:` reference written at a key that holds a secret, recording a
    /// positioned error on failure. Errors name the key and the kind of value, never the value.
    fn secret(&mut self, value: &Spanned<SecretValue<String>>, key: &str) -> Option<Secret> {
        match value.get_ref() {
            SecretValue::Written(text) => self.secret_reference(value.span(), text, key),
            SecretValue::WrongType(kind) => {
                self.wrong_secret_type(value.span(), key, "a secret reference string", kind);
                None
            }
        }
    }

    /// Resolves `text` as a `env:`/`file:` reference, recording a positioned error on failure.
    fn secret_reference(&mut self, span: Range<usize>, text: &str, key: &str) -> Option<Secret> {
        match SecretRef::parse(text).and_then(|r| r.resolve()) {
            Ok(secret) => Some(secret),
            Err(e) => {
                self.error(span, key, e.to_string());
                None
            }
        }
    }

    /// A key that holds a secret was written with another type than `expected`.
    fn wrong_secret_type(&mut self, span: Range<usize>, key: &str, expected: &str, kind: &str) {
        self.error(
            span,
            key,
            format!(
                "must be {expected} (`env:NAME` or `file:PATH`), not {kind}; the value is not \
                 shown, since this key holds a secret"
            ),
        );
    }

    /// An integer key that must lie in `range`, or `default` when absent. Out of range is
    /// recorded as an error (the value is still returned: any error fails the whole pass).
    fn count(
        &mut self,
        value: Option<&Spanned<u64>>,
        key: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> u64 {
        let Some(v) = value else {
            return default;
        };
        if !range.contains(v.get_ref()) {
            let (lo, hi) = range.into_inner();
            self.error(v.span(), key, format!("must be between {lo} and {hi}"));
        }
        *v.get_ref()
    }
}

pub(super) fn compile(
    file: &Path,
    text: &str,
) -> Result<(GatewayConfig, Vec<ConfigWarning>), ConfigError> {
    let src = SourceText { file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
        issues: vec![src.toml_issue(&e)],
    })?;
    let mut pass = Pass {
        src,
        errors: Vec::new(),
        warnings: Vec::new(),
    };

    let listen = match &raw.server.listen {
        None => DEFAULT_LISTEN.parse().ok(),
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                pass.error(
                    l.span(),
                    "server.listen",
                    format!("`{}` is not an address like 127.0.0.1:8080", l.get_ref()),
                );
                None
            }
        },
    };
    let max_body = raw.server.max_body.as_ref().map_or(DEFAULT_MAX_BODY, |b| {
        let size = b.get_ref().0;
        if size == 0 {
            pass.error(b.span(), "server.max_body", "must be larger than 0");
        }
        size
    });
    let header_timeout = positive(
        &mut pass,
        &raw.server.header_timeout,
        "server.header_timeout",
    )
    .unwrap_or(DEFAULT_HEADER_TIMEOUT);
    let request_timeout = positive(
        &mut pass,
        &raw.server.request_timeout,
        "server.request_timeout",
    )
    .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let write_timeout = positive(&mut pass, &raw.server.write_timeout, "server.write_timeout")
        .unwrap_or(DEFAULT_WRITE_TIMEOUT);
    let trusted_proxies = trusted_proxies(&mut pass, &raw.server);
    let max_connections = pass.count(
        raw.server.max_connections.as_ref(),
        "server.max_connections",
        MAX_CONNECTIONS,
        DEFAULT_MAX_CONNECTIONS,
    );
    let max_body_buffer = max_body_buffer(&mut pass, &raw.server, max_body);
    let runtime_threads = raw.server.runtime_threads.as_ref().map(|threads| {
        let n = pass.count(Some(threads), "server.runtime_threads", RUNTIME_THREADS, 1);
        service::to_usize(n)
    });
    let store = store::compile_store(&mut pass, &raw.store);

    let mut sources = Vec::new();
    for (name, source) in &raw.sources {
        if let Some(s) = sources::compile_source(&mut pass, name, source) {
            sources.push(s);
        }
    }
    sources::check_paths(&mut pass, &raw, &sources);
    let mut plugins = Vec::new();
    for (name, plugin) in &raw.plugins {
        if let Some(p) = plugins::compile_plugin(&mut pass, name, plugin) {
            plugins.push(p);
        }
    }
    plugins::warn_secret_grants(&mut pass, &raw);
    let wasm_cache_dir = raw
        .wasm
        .cache_dir
        .as_ref()
        .map_or(DEFAULT_WASM_CACHE, |d| d.get_ref().as_str())
        .into();
    if raw.sources.is_empty() {
        pass.warn(
            0..0,
            "sources",
            "no sources configured: every webhook path answers 404",
        );
    }
    let admin = service::compile_admin(&mut pass, raw.admin.as_ref());
    let workers = service::compile_workers(&mut pass, &raw.workers);
    let mut destinations = Vec::new();
    for (name, destination) in &raw.destinations {
        if let Some(d) = destinations::compile_destination(&mut pass, name, destination) {
            destinations.push(d);
        }
    }
    let routes = routes::compile_routes(&mut pass, &raw);

    if !pass.errors.is_empty() {
        return Err(ConfigError {
            issues: pass.errors,
        });
    }
    let (Some(listen), Some(store)) = (listen, store) else {
        return Err(ConfigError {
            issues: pass.errors,
        });
    };
    let config = GatewayConfig {
        file: file.to_path_buf(),
        server: ServerSettings {
            listen,
            max_body,
            header_timeout,
            request_timeout,
            write_timeout,
            trusted_proxies,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_body_buffer,
            runtime_threads,
        },
        store,
        sources,
        wasm_cache_dir,
        plugins,
        admin,
        workers,
        destinations,
        routes,
    };
    Ok((config, pass.warnings))
}

/// A duration key that must be longer than zero; `None` when absent or invalid.
fn positive(
    pass: &mut Pass<'_>,
    value: &Option<Spanned<HumanDuration>>,
    key: &str,
) -> Option<Duration> {
    let v = value.as_ref()?;
    if v.get_ref().0.is_zero() {
        pass.error(v.span(), key, "must be longer than 0s");
        return None;
    }
    Some(v.get_ref().0)
}

/// A retry schedule from its two keys in `table` (`keys`: the initial and the longest wait),
/// each falling back to `default`: the initial wait must not be zero (a failing receiver would
/// be retried in a tight loop) and not exceed the longest.
fn backoff(
    pass: &mut Pass<'_>,
    table: &str,
    keys: (&str, &str),
    values: (
        &Option<Spanned<HumanDuration>>,
        &Option<Spanned<HumanDuration>>,
    ),
    default: Backoff,
) -> Backoff {
    let (initial_key, max_key) = keys;
    let (raw_initial, raw_max) = values;
    let initial = raw_initial
        .as_ref()
        .map_or(default.initial, |d| d.get_ref().0);
    let max = raw_max.as_ref().map_or(default.max, |d| d.get_ref().0);
    if let (Some(i), true) = (raw_initial, initial.is_zero()) {
        pass.error(
            i.span(),
            format!("{table}.{initial_key}"),
            "must be longer than 0s",
        );
    } else if max < initial {
        // Point at whichever of the two is written; with both, the longest wait is the odd
        // one. (The defaults alone are consistent, so one of them is written.)
        if let Some(m) = raw_max {
            pass.error(
                m.span(),
                format!("{table}.{max_key}"),
                format!(
                    "must be at least {initial_key} ({})",
                    humantime::format_duration(initial)
                ),
            );
        } else if let Some(i) = raw_initial {
            pass.error(
                i.span(),
                format!("{table}.{initial_key}"),
                format!(
                    "must be at most {max_key} ({}, the default)",
                    humantime::format_duration(max)
                ),
            );
        }
    }
    Backoff { initial, max }
}

/// `server.max_body_buffer`: at least `max_body` (else a body of the largest accepted size
/// could never be read); by default 64 MiB, or `max_body` if that is larger.
fn max_body_buffer(pass: &mut Pass<'_>, raw: &RawServer, max_body: u64) -> u64 {
    let Some(b) = raw.max_body_buffer.as_ref() else {
        return DEFAULT_MAX_BODY_BUFFER.max(max_body);
    };
    let size = b.get_ref().0;
    if size < max_body {
        pass.error(
            b.span(),
            "server.max_body_buffer",
            format!("must be at least server.max_body ({max_body} bytes)"),
        );
    }
    size
}

/// `server.trusted_proxies` and the header they write the client into.
fn trusted_proxies(pass: &mut Pass<'_>, raw: &RawServer) -> TrustedProxies {
    let networks = raw
        .trusted_proxies
        .as_ref()
        .map(|list| ip_networks(pass, list, "server.trusted_proxies"))
        .unwrap_or_default();
    let header = match raw.forwarded_header.as_ref() {
        None => ForwardedHeader::XForwardedFor,
        Some(h) => {
            let header = match h.get_ref().to_ascii_lowercase().as_str() {
                "x-forwarded-for" => ForwardedHeader::XForwardedFor,
                "forwarded" => ForwardedHeader::Forwarded,
                other => {
                    pass.error(
                        h.span(),
                        "server.forwarded_header",
                        format!(
                            "unknown header `{other}` (expected \"x-forwarded-for\" or \"forwarded\")"
                        ),
                    );
                    ForwardedHeader::XForwardedFor
                }
            };
            if networks.is_empty() {
                pass.warn(
                    h.span(),
                    "server.forwarded_header",
                    "has no effect without `server.trusted_proxies`",
                );
            }
            header
        }
    };
    TrustedProxies { networks, header }
}

/// A list of IP addresses and CIDR networks (`10.0.0.0/8`, `203.0.113.7`, `2001:db8::/32`);
/// each entry that is neither is a positioned error.
fn ip_networks(
    pass: &mut Pass<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    key: &str,
) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let text = entry.get_ref();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => {
                if covers_ipv4_mapped(&net) {
                    pass.warn(
                        entry.span(),
                        format!("{key}[{i}]"),
                        format!(
                            "`{text}` does not match IPv4 clients, which are compared as IPv4 \
                             addresses (also on a dual-stack listener); add 0.0.0.0/0 or the \
                             IPv4 networks meant"
                        ),
                    );
                }
                nets.push(canonical_network(net));
            }
            Err(_) => pass.error(
                entry.span(),
                format!("{key}[{i}]"),
                format!("`{text}` is not an IP address or CIDR network"),
            ),
        }
    }
    nets
}

/// A network written in IPv4-mapped form (`::ffff:10.0.0.0/104`, `::ffff:203.0.113.7`) as the
/// IPv4 network it is (`10.0.0.0/8`, `203.0.113.7/32`): client addresses are compared in their
/// canonical form, so an IPv4 client of a dual-stack listener (which the socket shows as
/// `::ffff:a.b.c.d`) matches it like any other IPv4 client.
fn canonical_network(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map_or(net, |v4net| ipnet::IpNet::V4(v4net.trunc())),
            None => net,
        },
        other => other,
    }
}

/// An IPv6 network wider than the IPv4-mapped range and holding all of it (`::/0`,
/// `::ffff:0:0/80`): it used to match the IPv4 clients of a dual-stack listener, and no longer
/// does, since those are compared as IPv4 addresses.
fn covers_ipv4_mapped(net: &ipnet::IpNet) -> bool {
    let mapped = std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped();
    matches!(net, ipnet::IpNet::V6(v6) if v6.prefix_len() < 96 && v6.contains(&mapped))
}

/// Names that become metric labels and store keys: letters, digits, `_` and `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
