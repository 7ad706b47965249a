//! The compile pass: raw TOML tables in, a [`GatewayConfig`] out, with every problem collected
//! (not just the first) and each one pointing at its file, line and key.
//!
//! Rules that span several keys live here: which keys apply to which provider, unique paths,
//! the protection a Ledig source needs, secrets that must resolve. Defaults are named constants.

use super::error::SourceText;
use super::raw::{RawConfig, RawPlugin, RawSource};
use super::secret::{Secret, SecretRef};
use super::{
    ConfigError, ConfigIssue, ConfigWarning, GatewayConfig, InstanceMode, LedgerSettings,
    LedigSettings, MAX_PLUGIN_MEMORY, MAX_TABLE_ELEMENTS, PluginLimits, PluginSettings,
    ProviderSettings, ServerSettings, SignatureScheme, SourceSettings, StoreSettings,
    TokenLocation,
};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STORE_PATH: &str = "data/gateway.db";
const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
const DEFAULT_TOKEN_HEADER: &str = "X-Ledig-Token";
const DEFAULT_WASM_CACHE: &str = "data/wasm-cache";
const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(100);
const DEFAULT_PLUGIN_MEMORY: u64 = 64 * 1024 * 1024;
const DEFAULT_TABLE_ELEMENTS: u64 = 100_000;
const DEFAULT_EVENTS_PER_INSTANCE: u64 = 10_000;
const MIN_PLUGIN_MEMORY: u64 = 1024 * 1024;
const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_PLUGIN_TIMEOUT: Duration = Duration::from_millis(1);
const MIN_FUEL: u64 = 10_000;
/// Paths the gateway serves itself; a source cannot take them.
const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/admin"];

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

    /// Resolves a `env:`/`file:` reference, recording a positioned error on failure.
    fn secret(&mut self, value: &Spanned<String>, key: &str) -> Option<Secret> {
        match SecretRef::parse(value.get_ref()).and_then(|r| r.resolve()) {
            Ok(secret) => Some(secret),
            Err(e) => {
                self.error(value.span(), key, e.to_string());
                None
            }
        }
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
    let store_path = raw
        .store
        .path
        .as_ref()
        .map_or(DEFAULT_STORE_PATH, |p| p.get_ref().as_str());
    if store_path.is_empty() {
        let span = raw.store.path.as_ref().map_or(0..0, Spanned::span);
        pass.error(span, "store.path", "must not be empty");
    }
    let dedup_window = positive(&mut pass, &raw.store.dedup_window, "store.dedup_window")
        .unwrap_or(DEFAULT_DEDUP_WINDOW);

    let mut sources = Vec::new();
    for (name, source) in &raw.sources {
        if let Some(s) = compile_source(&mut pass, name, source) {
            sources.push(s);
        }
    }
    check_paths(&mut pass, &raw, &sources);
    let mut plugins = Vec::new();
    for (name, plugin) in &raw.plugins {
        if let Some(p) = compile_plugin(&mut pass, name, plugin) {
            plugins.push(p);
        }
    }
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

    if !pass.errors.is_empty() {
        return Err(ConfigError {
            issues: pass.errors,
        });
    }
    let Some(listen) = listen else {
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
        },
        store: StoreSettings {
            path: store_path.into(),
            dedup_window,
        },
        sources,
        wasm_cache_dir,
        plugins,
        admin: None,
        workers: super::WorkerSettings {
            concurrency: 256,
            plugin_threads: 2,
        },
        destinations: Vec::new(),
        routes: Vec::new(),
    };
    Ok((config, pass.warnings))
}

fn positive(
    pass: &mut Pass<'_>,
    value: &Option<Spanned<super::raw::HumanDuration>>,
    key: &str,
) -> Option<Duration> {
    let v = value.as_ref()?;
    if v.get_ref().0.is_zero() {
        pass.error(v.span(), key, "must be longer than 0s");
        return None;
    }
    Some(v.get_ref().0)
}

fn compile_source(
    pass: &mut Pass<'_>,
    name: &str,
    source: &Spanned<RawSource>,
) -> Option<SourceSettings> {
    let table = format!("sources.{name}");
    if !valid_name(name) {
        pass.error(
            source.span(),
            &table,
            "source names may only use letters, digits, `_` and `-`",
        );
    }
    let raw = source.get_ref();
    let path = match &raw.path {
        Some(p) => {
            let text = p.get_ref();
            if !text.starts_with('/') || text.len() < 2 || text.ends_with('/') {
                pass.error(
                    p.span(),
                    format!("{table}.path"),
                    "must start with `/` and not end with `/`, e.g. \"/webhooks/ledger\"",
                );
            }
            text.clone()
        }
        None => format!("/webhooks/{name}"),
    };
    let provider = match raw.provider.get_ref().as_str() {
        "ledger" => ledger(pass, &table, raw).map(ProviderSettings::Ledger),
        "ledig" => ledig(pass, &table, source).map(ProviderSettings::Ledig),
        other => {
            pass.error(
                raw.provider.span(),
                format!("{table}.provider"),
                format!("unknown provider `{other}` (expected \"ledger\" or \"ledig\")"),
            );
            None
        }
    }?;
    Some(SourceSettings {
        name: name.to_owned(),
        path,
        provider,
    })
}

/// Records an error for each key that does not apply to the source's provider.
fn reject_keys(
    pass: &mut Pass<'_>,
    table: &str,
    provider: &str,
    keys: &[(&str, Option<Range<usize>>)],
) {
    for (key, span) in keys {
        if let Some(span) = span {
            pass.error(
                span.clone(),
                format!("{table}.{key}"),
                format!("`{key}` does not apply to provider \"{provider}\""),
            );
        }
    }
}

fn ledger(pass: &mut Pass<'_>, table: &str, raw: &RawSource) -> Option<LedgerSettings> {
    reject_keys(
        pass,
        table,
        "ledger",
        &[
            ("token", raw.token.as_ref().map(Spanned::span)),
            ("token_header", raw.token_header.as_ref().map(Spanned::span)),
            (
                "token_in_path",
                raw.token_in_path.as_ref().map(Spanned::span),
            ),
            ("basic_auth", raw.basic_auth.as_ref().map(Spanned::span)),
            ("allow_ips", raw.allow_ips.as_ref().map(Spanned::span)),
            ("unprotected", raw.unprotected.as_ref().map(Spanned::span)),
        ],
    );
    let scheme = match raw.signature.as_ref() {
        None => SignatureScheme::Any,
        Some(s) => match s.get_ref().as_str() {
            "ledger" => SignatureScheme::Ledger,
            "standard-webhooks" => SignatureScheme::StandardWebhooks,
            "any" => SignatureScheme::Any,
            other => {
                pass.error(
                    s.span(),
                    format!("{table}.signature"),
                    format!(
                        "unknown scheme `{other}` (expected \"ledger\", \"standard-webhooks\" or \"any\")"
                    ),
                );
                SignatureScheme::Any
            }
        },
    };
    let Some(list) = raw.secrets.as_ref() else {
        pass.error(
            raw.provider.span(),
            format!("{table}.secrets"),
            "a Ledger source needs `secrets = [\"env:NAME\", ...]`",
        );
        return None;
    };
    if list.get_ref().is_empty() {
        pass.error(
            list.span(),
            format!("{table}.secrets"),
            "needs at least one secret",
        );
    }
    let mut secrets = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let key = format!("{table}.secrets[{i}]");
        let Some(secret) = pass.secret(entry, &key) else {
            continue;
        };
        let standard_key = crate::providers::standard_webhooks_key(&secret);
        match (scheme, standard_key.is_some()) {
            (SignatureScheme::StandardWebhooks, false) => pass.error(
                entry.span(),
                &key,
                "Standard Webhooks secrets look like `whsec_<base64>`",
            ),
            (SignatureScheme::Any, false) => pass.warn(
                entry.span(),
                &key,
                "not a `whsec_<base64>` secret: it can only verify X-Ledger-Signature",
            ),
            _ => {}
        }
        secrets.push(secret);
    }
    let tolerance =
        positive(pass, &raw.tolerance, &format!("{table}.tolerance")).unwrap_or(DEFAULT_TOLERANCE);
    Some(LedgerSettings {
        secrets,
        scheme,
        tolerance,
    })
}

fn ledig(pass: &mut Pass<'_>, table: &str, source: &Spanned<RawSource>) -> Option<LedigSettings> {
    let raw = source.get_ref();
    reject_keys(
        pass,
        table,
        "ledig",
        &[
            ("secrets", raw.secrets.as_ref().map(Spanned::span)),
            ("signature", raw.signature.as_ref().map(Spanned::span)),
            ("tolerance", raw.tolerance.as_ref().map(Spanned::span)),
        ],
    );
    let in_path = raw.token_in_path.as_ref().is_some_and(|b| *b.get_ref());
    if let (true, Some(h)) = (in_path, raw.token_header.as_ref()) {
        pass.error(
            h.span(),
            format!("{table}.token_header"),
            "set either `token_header` or `token_in_path = true`, not both",
        );
    }
    let token = match &raw.token {
        None => {
            for (key, span) in [
                ("token_header", raw.token_header.as_ref().map(Spanned::span)),
                (
                    "token_in_path",
                    raw.token_in_path.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    pass.error(
                        span,
                        format!("{table}.{key}"),
                        "has no effect without `token`",
                    );
                }
            }
            None
        }
        Some(t) => {
            let secret = pass.secret(t, &format!("{table}.token"));
            let location = if in_path {
                Some(TokenLocation::Path)
            } else {
                let header = raw
                    .token_header
                    .as_ref()
                    .map_or(DEFAULT_TOKEN_HEADER, |h| h.get_ref().as_str());
                match http::HeaderName::from_bytes(header.as_bytes()) {
                    Ok(name) => Some(TokenLocation::Header(name)),
                    Err(_) => {
                        let span = raw.token_header.as_ref().map_or(t.span(), Spanned::span);
                        pass.error(
                            span,
                            format!("{table}.token_header"),
                            format!("`{header}` is not a valid header name"),
                        );
                        None
                    }
                }
            };
            secret.zip(location)
        }
    };
    let basic_auth = raw.basic_auth.as_ref().and_then(|b| {
        let b = b.get_ref();
        let user_key = format!("{table}.basic_auth.username");
        // A user name is not secret: it may be written inline or as a reference.
        let user = if b.username.get_ref().starts_with("env:")
            || b.username.get_ref().starts_with("file:")
        {
            pass.secret(&b.username, &user_key)
        } else if b.username.get_ref().is_empty() {
            pass.error(b.username.span(), &user_key, "must not be empty");
            None
        } else {
            Some(Secret::new(b.username.get_ref().as_bytes().to_vec()))
        };
        let password = pass.secret(&b.password, &format!("{table}.basic_auth.password"));
        user.zip(password)
    });
    let mut allow_ips = Vec::new();
    if let Some(list) = &raw.allow_ips {
        if list.get_ref().is_empty() {
            pass.error(
                list.span(),
                format!("{table}.allow_ips"),
                "an empty allow-list admits nobody; remove the key or list addresses",
            );
        }
        for (i, entry) in list.get_ref().iter().enumerate() {
            let text = entry.get_ref();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => allow_ips.push(net),
                Err(_) => pass.error(
                    entry.span(),
                    format!("{table}.allow_ips[{i}]"),
                    format!("`{text}` is not an IP address or CIDR network"),
                ),
            }
        }
    }
    let protected = raw.token.is_some() || raw.basic_auth.is_some() || raw.allow_ips.is_some();
    match (&raw.unprotected, protected) {
        (None, false) => pass.error(
            source.span(),
            table,
            "a Ledig source needs `token`, `basic_auth` or `allow_ips` (Ledig signs nothing); \
             declare `unprotected = true` to accept unauthenticated webhooks",
        ),
        (Some(u), false) if *u.get_ref() => pass.warn(
            u.span(),
            format!("{table}.unprotected"),
            "this source accepts webhooks from anyone who knows its path",
        ),
        (Some(u), false) => pass.error(
            u.span(),
            format!("{table}.unprotected"),
            "`unprotected = false` but no protection is configured: add `token`, `basic_auth` or `allow_ips`",
        ),
        (Some(u), true) if *u.get_ref() => pass.error(
            u.span(),
            format!("{table}.unprotected"),
            "`unprotected = true` contradicts the protection configured for this source",
        ),
        _ => {}
    }
    Some(LedigSettings {
        token,
        basic_auth,
        allow_ips,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn compile_plugin(
    pass: &mut Pass<'_>,
    name: &str,
    plugin: &Spanned<RawPlugin>,
) -> Option<PluginSettings> {
    let table = format!("plugins.{name}");
    if !valid_name(name) {
        pass.error(
            plugin.span(),
            &table,
            "plugin names may only use letters, digits, `_` and `-`",
        );
    }
    let raw = plugin.get_ref();
    let errors_before = pass.errors.len();
    let max_events = raw.max_events_per_instance.as_ref();
    let mode = match raw.mode.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("fresh") => {
            if let Some(m) = max_events {
                pass.error(
                    m.span(),
                    format!("{table}.max_events_per_instance"),
                    "only applies to `mode = \"warm\"`",
                );
            }
            InstanceMode::Fresh
        }
        Some("warm") => {
            let n = max_events.map_or(DEFAULT_EVENTS_PER_INSTANCE, |m| *m.get_ref());
            if n == 0 {
                let span = max_events.map_or(plugin.span(), Spanned::span);
                pass.error(
                    span,
                    format!("{table}.max_events_per_instance"),
                    "must be at least 1",
                );
            }
            InstanceMode::Warm {
                max_events_per_instance: n,
            }
        }
        Some(other) => {
            let span = raw.mode.as_ref().map_or(plugin.span(), Spanned::span);
            pass.error(
                span,
                format!("{table}.mode"),
                format!("unknown mode `{other}` (expected \"fresh\" or \"warm\")"),
            );
            InstanceMode::Fresh
        }
    };
    let fuel = raw.fuel.as_ref().map(|f| {
        if *f.get_ref() < MIN_FUEL {
            pass.error(
                f.span(),
                format!("{table}.fuel"),
                format!("must be at least {MIN_FUEL}"),
            );
        }
        *f.get_ref()
    });
    let timeout = raw.timeout.as_ref().map_or(DEFAULT_PLUGIN_TIMEOUT, |t| {
        let d = t.get_ref().0;
        if !(MIN_PLUGIN_TIMEOUT..=MAX_PLUGIN_TIMEOUT).contains(&d) {
            pass.error(
                t.span(),
                format!("{table}.timeout"),
                "must be between 1ms and 60s",
            );
        }
        d
    });
    let memory = raw.memory.as_ref().map_or(DEFAULT_PLUGIN_MEMORY, |m| {
        let bytes = m.get_ref().0;
        if !(MIN_PLUGIN_MEMORY..=MAX_PLUGIN_MEMORY).contains(&bytes) {
            pass.error(
                m.span(),
                format!("{table}.memory"),
                "must be between 1MiB and 1GiB",
            );
        }
        bytes
    });
    let table_elements = raw
        .table_elements
        .as_ref()
        .map_or(DEFAULT_TABLE_ELEMENTS, |t| {
            if !(1..=MAX_TABLE_ELEMENTS).contains(t.get_ref()) {
                pass.error(
                    t.span(),
                    format!("{table}.table_elements"),
                    format!("must be between 1 and {MAX_TABLE_ELEMENTS}"),
                );
            }
            *t.get_ref()
        });
    let mut env = Vec::new();
    for (i, var) in raw.env.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
        match std::env::var(var.get_ref()) {
            Ok(value) => env.push((var.get_ref().clone(), value)),
            Err(_) => pass.error(
                var.span(),
                format!("{table}.env[{i}]"),
                format!("environment variable {} is not set", var.get_ref()),
            ),
        }
    }
    if raw.wasm.get_ref().is_empty() {
        pass.error(
            raw.wasm.span(),
            format!("{table}.wasm"),
            "must name a .wasm file",
        );
    }
    let at = pass.src.issue(raw.wasm.span(), format!("{table}.wasm"), "");
    if pass.errors.len() > errors_before {
        return None;
    }
    Some(PluginSettings {
        name: name.to_owned(),
        wasm: raw.wasm.get_ref().into(),
        mode,
        limits: PluginLimits {
            fuel,
            timeout,
            memory,
            table_elements,
        },
        settings: raw
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
        env,
        at,
    })
}

/// Paths must be unique and must not shadow the gateway's own endpoints.
fn check_paths(pass: &mut Pass<'_>, raw: &RawConfig, sources: &[SourceSettings]) {
    for (i, s) in sources.iter().enumerate() {
        let span = raw
            .sources
            .get(&s.name)
            .map(|r| r.get_ref().path.as_ref().map_or(r.span(), Spanned::span))
            .unwrap_or(0..0);
        let key = format!("sources.{}.path", s.name);
        if RESERVED_PATHS
            .iter()
            .any(|r| s.path == *r || s.path.starts_with(&format!("{r}/")))
        {
            pass.error(
                span.clone(),
                &key,
                format!("`{}` is reserved by the gateway", s.path),
            );
        }
        if let Some(other) = sources[..i].iter().find(|o| o.path == s.path) {
            pass.error(
                span,
                &key,
                format!(
                    "`{}` is already the path of source `{}`",
                    s.path, other.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_limits_out_of_range_are_reported() {
        let text = "[plugins.p]\nwasm = \"p.wasm\"\nmemory = \"8GiB\"\ntimeout = \"0s\"\nmode = \"tepid\"\n";
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

    fn issues(text: &str) -> Vec<String> {
        match compile(Path::new("g.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.issues.iter().map(ToString::to_string).collect(),
        }
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
}
