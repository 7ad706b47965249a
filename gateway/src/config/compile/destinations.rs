//! `[destinations.NAME]`: where routed events are delivered (an HTTP endpoint or an append-only
//! file) and how deliveries are retried. Whether any route uses a destination is checked in
//! `routes`, which sees both tables.

use super::service::to_usize;
use super::{Pass, valid_name};
use crate::config::raw::{RawDestination, SecretValue};
use crate::config::secret::Secret;
use crate::config::{
    Backoff, DestinationKind, DestinationSettings, FileDestinationSettings, HttpDestinationSettings,
};
use crate::delivery::address_policy::literal_ip_range;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// A receiver slower than this is better treated as down: the attempt fails and is retried.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_MAX_ATTEMPTS: u64 = 8;
const MAX_ATTEMPTS: u64 = 100;
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10 * 60);
const DEFAULT_CONCURRENCY: u64 = 64;
const MAX_CONCURRENCY: u64 = 10_000;

pub(super) fn compile_destination(
    pass: &mut Pass<'_>,
    name: &str,
    destination: &Spanned<RawDestination>,
) -> Option<DestinationSettings> {
    let table = format!("destinations.{name}");
    if !valid_name(name) {
        pass.error(
            destination.span(),
            &table,
            "destination names may only use letters, digits, `_` and `-`",
        );
    }
    let raw = destination.get_ref();
    let errors_before = pass.errors.len();
    let kind = match (&raw.http, &raw.file) {
        (Some(url), None) => http(pass, &table, raw, url).map(DestinationKind::Http),
        (None, Some(path)) => file(pass, &table, raw, path).map(DestinationKind::File),
        (Some(_), Some(path)) => {
            pass.error(
                path.span(),
                format!("{table}.file"),
                "set either `http` or `file`, not both",
            );
            None
        }
        (None, None) => {
            pass.error(
                destination.span(),
                &table,
                "a destination needs `http = \"URL\"` or `file = \"PATH\"`",
            );
            None
        }
    };
    let max_attempts = pass.count(
        raw.max_attempts.as_ref(),
        &format!("{table}.max_attempts"),
        1..=MAX_ATTEMPTS,
        DEFAULT_MAX_ATTEMPTS,
    );
    let backoff = super::backoff(
        pass,
        &table,
        ("backoff_initial", "backoff_max"),
        (&raw.backoff_initial, &raw.backoff_max),
        Backoff {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
        },
    );
    let concurrency = pass.count(
        raw.concurrency.as_ref(),
        &format!("{table}.concurrency"),
        1..=MAX_CONCURRENCY,
        DEFAULT_CONCURRENCY,
    );
    let ordering = super::ordering::compile_ordering(pass, &table, raw);
    if pass.errors.len() > errors_before {
        return None;
    }
    Some(DestinationSettings {
        name: name.to_owned(),
        kind: kind?,
        // Range-checked above: at most MAX_ATTEMPTS.
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
        backoff,
        concurrency: to_usize(concurrency),
        ordering,
    })
}

fn http(
    pass: &mut Pass<'_>,
    table: &str,
    raw: &RawDestination,
    url: &Spanned<String>,
) -> Option<HttpDestinationSettings> {
    let key = format!("{table}.http");
    let allow_private_network = raw
        .allow_private_network
        .as_ref()
        .is_some_and(|a| *a.get_ref());
    let uri = match url.get_ref().parse::<http::Uri>() {
        Ok(uri) => match url_problem(&uri, allow_private_network) {
            None => Some(uri),
            Some(problem) => {
                pass.error(url.span(), &key, problem);
                None
            }
        },
        // The URL is not echoed: it may carry a token in its query string.
        Err(e) => {
            pass.error(url.span(), &key, format!("not a valid URL: {e}"));
            None
        }
    };
    let signing_key = match &raw.secret {
        None => {
            pass.error(
                url.span(),
                format!("{table}.secret"),
                "an http destination needs `secret = \"env:NAME\"`: the `whsec_...` secret \
                 its receiver verifies signatures with",
            );
            None
        }
        Some(secret) => signing_key(pass, &format!("{table}.secret"), secret),
    };
    let timeout = raw.timeout.as_ref().map_or(DEFAULT_HTTP_TIMEOUT, |t| {
        let d = t.get_ref().0;
        if d.is_zero() || d > MAX_HTTP_TIMEOUT {
            pass.error(
                t.span(),
                format!("{table}.timeout"),
                "must be longer than 0s and at most 5m",
            );
        }
        d
    });
    Some(HttpDestinationSettings {
        url: uri?,
        signing_key: signing_key?,
        timeout,
        allow_private_network,
    })
}

/// What makes a parsed URL unusable as a delivery target, if anything.
fn url_problem(uri: &http::Uri, allow_private_network: bool) -> Option<String> {
    if let (false, Some(range)) = (allow_private_network, literal_ip_range(uri)) {
        return Some(format!(
            "the address is {range}: deliveries to loopback, private, link-local and metadata \
             addresses are refused unless the destination sets `allow_private_network = true`"
        ));
    }
    match (uri.scheme_str(), uri.authority()) {
        // The HTTP client would not send these as credentials, and secrets do not belong
        // inline in the config: the receiver authenticates deliveries by their signature.
        (Some("http" | "https"), Some(a)) if a.as_str().contains('@') => {
            Some("user info (`user:password@`) in the URL is not supported".to_owned())
        }
        (Some("http" | "https"), Some(a)) if !a.host().is_empty() => None,
        (Some("http" | "https"), _) => Some("the URL has no host".to_owned()),
        (Some(other), _) => Some(format!(
            "scheme `{other}` is not supported: use http:// or https://"
        )),
        (None, _) => Some("needs an absolute http:// or https:// URL".to_owned()),
    }
}

/// The HMAC key of a destination's `whsec_<base64>` secret: what the receiver's Standard
/// Webhooks library derives from the same string.
fn signing_key(
    pass: &mut Pass<'_>,
    key: &str,
    written: &Spanned<SecretValue<String>>,
) -> Option<Secret> {
    let secret = pass.secret(written, key)?;
    match crate::providers::standard_webhooks_key(&secret) {
        Some(bytes) if !bytes.is_empty() => Some(Secret::new(bytes)),
        // Name the reference (it resolved, so it is `env:` or `file:`), never the value: this
        // message may end up in a log.
        _ => {
            let reference = match written.get_ref() {
                SecretValue::Written(reference) => reference.as_str(),
                SecretValue::WrongType(_) => "",
            };
            pass.error(
                written.span(),
                key,
                format!(
                    "`{reference}` must hold a Standard Webhooks secret: `whsec_` followed by \
                     base64"
                ),
            );
            None
        }
    }
}

fn file(
    pass: &mut Pass<'_>,
    table: &str,
    raw: &RawDestination,
    path: &Spanned<String>,
) -> Option<FileDestinationSettings> {
    for (key, span) in [
        ("secret", raw.secret.as_ref().map(Spanned::span)),
        ("timeout", raw.timeout.as_ref().map(Spanned::span)),
        (
            "allow_private_network",
            raw.allow_private_network.as_ref().map(Spanned::span),
        ),
    ] {
        if let Some(span) = span {
            pass.error(
                span,
                format!("{table}.{key}"),
                "applies only to http destinations",
            );
        }
    }
    if path.get_ref().is_empty() {
        pass.error(
            path.span(),
            format!("{table}.file"),
            "must name a file, e.g. \"data/events.jsonl\"",
        );
        return None;
    }
    Some(FileDestinationSettings {
        path: path.get_ref().into(),
    })
}
