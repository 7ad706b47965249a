//! `[sources.NAME]`: which keys apply to which provider, the protection a Ledig source needs,
//! signing secrets that must resolve, and request paths that must be unique and must not
//! shadow the gateway's own endpoints.

use super::{Pass, positive, valid_name};
use crate::config::raw::{RawConfig, RawSource, SecretValue};
use crate::config::secret::Secret;
use crate::config::{
    LedgerSettings, LedigSettings, ProviderSettings, SignatureScheme, SourceSettings, TokenLocation,
};
use crate::providers::settings::DEFAULT_RETRY_WINDOW;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
const DEFAULT_TOKEN_HEADER: &str = "X-Ledig-Token";
/// Paths the gateway serves itself; a source cannot take them.
const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/admin"];

pub(super) fn compile_source(
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
            ("retry_window", raw.retry_window.as_ref().map(Spanned::span)),
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
    let Some(written) = raw.secrets.as_ref() else {
        pass.error(
            raw.provider.span(),
            format!("{table}.secrets"),
            "a Ledger source needs `secrets = [\"env:NAME\", ...]`",
        );
        return None;
    };
    let list = match written.get_ref() {
        SecretValue::Written(list) => Spanned::new(written.span(), list),
        SecretValue::WrongType(kind) => {
            pass.wrong_secret_type(
                written.span(),
                &format!("{table}.secrets"),
                "a list of secret references",
                kind,
            );
            return None;
        }
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
    let basic_auth = raw.basic_auth.as_ref().and_then(|written| {
        let b = match written.get_ref() {
            SecretValue::Written(b) => b,
            SecretValue::WrongType(kind) => {
                pass.wrong_secret_type(
                    written.span(),
                    &format!("{table}.basic_auth"),
                    "a table `{ username = \"...\", password = \"env:NAME\" }` whose password is a \
                     secret reference",
                    kind,
                );
                return None;
            }
        };
        let user_key = format!("{table}.basic_auth.username");
        // A user name is not secret: it may be written inline or as a reference.
        let user = if b.username.get_ref().starts_with("env:")
            || b.username.get_ref().starts_with("file:")
        {
            pass.secret_reference(b.username.span(), b.username.get_ref(), &user_key)
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
        allow_ips = super::ip_networks(pass, list, &format!("{table}.allow_ips"));
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
        retry_window: retry_window(pass, table, raw),
    })
}

/// `retry_window`: how long a copy of an object's latest state counts as Ledig's retry. At
/// least a second (two stored events of one object and state are told apart by their arrival
/// millisecond, so they must be that far apart), at most a year.
fn retry_window(pass: &mut Pass<'_>, table: &str, raw: &RawSource) -> Duration {
    let Some(v) = raw.retry_window.as_ref() else {
        return DEFAULT_RETRY_WINDOW;
    };
    let window = v.get_ref().0;
    if !(MIN_RETRY_WINDOW..=MAX_RETRY_WINDOW).contains(&window) {
        pass.error(
            v.span(),
            format!("{table}.retry_window"),
            "must be between 1s and 365d",
        );
        return DEFAULT_RETRY_WINDOW;
    }
    window
}

const MIN_RETRY_WINDOW: Duration = Duration::from_secs(1);
const MAX_RETRY_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// Paths must be unique and must not shadow the gateway's own endpoints.
pub(super) fn check_paths(pass: &mut Pass<'_>, raw: &RawConfig, sources: &[SourceSettings]) {
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
