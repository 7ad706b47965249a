//! `[admin]` and `[workers]`: settings of the gateway's own services rather than of one
//! source or destination.

use super::{Pass, valid_name};
use crate::config::raw::{RawAdmin, RawAdminToken, RawWorkers};
use crate::config::{AdminRole, AdminSettings, AdminToken, WorkerSettings};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_CONCURRENCY: u64 = 256;
const MAX_CONCURRENCY: u64 = 65_536;
/// Each plugin thread can hold a pooled instance; past this the pool's reservation, not the
/// CPU, becomes the limit.
const MAX_PLUGIN_THREADS: u64 = 1024;

/// Default and longest `admin.session_ttl`: a working day, and a week.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest token name: it is shown in the console and stored with every audit record.
const MAX_TOKEN_NAME: usize = 64;
/// The name the legacy single `token` signs in as.
pub(crate) const LEGACY_TOKEN_NAME: &str = "admin";

/// `[admin]`; `None` when the table is absent (the admin API is then not served) or invalid
/// (an error is recorded).
pub(super) fn compile_admin(
    pass: &mut Pass<'_>,
    admin: Option<&Spanned<RawAdmin>>,
) -> Option<AdminSettings> {
    let admin = admin?;
    let raw = admin.get_ref();
    let errors_before = pass.errors.len();
    let mut tokens = Vec::new();
    if let Some(token) = &raw.token
        && let Some(token) = pass.secret(token, "admin.token")
    {
        let legacy = AdminToken {
            name: LEGACY_TOKEN_NAME.to_owned(),
            role: AdminRole::Operator,
            token,
        };
        tokens.push((None, legacy));
    }
    for (i, entry) in raw.tokens.iter().enumerate() {
        if let Some(t) = compile_token(pass, i, entry) {
            tokens.push((Some(i), t));
        }
    }
    check_unique(pass, raw, &tokens);
    let tokens = tokens.into_iter().map(|(_, t)| t).collect();
    if raw.token.is_none() && raw.tokens.is_empty() {
        pass.error(
            admin.span(),
            "admin.token",
            "the admin API needs `token = \"env:NAME\"` or `[[admin.tokens]]` entries (or \
             remove [admin] to disable it)",
        );
    }
    let listen = raw.listen.as_ref().and_then(|l| {
        let parsed = l.get_ref().parse::<SocketAddr>().ok();
        if parsed.is_none() {
            pass.error(
                l.span(),
                "admin.listen",
                format!("`{}` is not an address like 127.0.0.1:9090", l.get_ref()),
            );
        }
        parsed
    });
    let session_ttl = match &raw.session_ttl {
        None => DEFAULT_SESSION_TTL,
        Some(t) => {
            let ttl = t.get_ref().0;
            if ttl < Duration::from_secs(60) || ttl > MAX_SESSION_TTL {
                pass.error(t.span(), "admin.session_ttl", "must be between 1m and 7d");
            }
            ttl
        }
    };
    (pass.errors.len() == errors_before).then_some(AdminSettings {
        listen,
        tokens,
        session_ttl,
    })
}

/// One `[[admin.tokens]]` entry (`i`: its position, for the key in messages).
fn compile_token(
    pass: &mut Pass<'_>,
    i: usize,
    entry: &Spanned<RawAdminToken>,
) -> Option<AdminToken> {
    let key = |k: &str| format!("admin.tokens[{i}].{k}");
    let raw = entry.get_ref();
    let missing = |pass: &mut Pass<'_>, k: &str, what: &str| {
        pass.error(
            entry.span(),
            key(k),
            format!("every admin token needs {what}"),
        );
    };
    let name = match &raw.name {
        None => {
            missing(pass, "name", "a `name` (shown in audit records)");
            None
        }
        Some(n) => {
            let text = n.get_ref();
            if text.len() > MAX_TOKEN_NAME || !valid_name(text) {
                pass.error(
                    n.span(),
                    key("name"),
                    format!(
                        "must be 1 to {MAX_TOKEN_NAME} letters, digits, `_` or `-` (it is \
                         shown in the console and stored in audit records)"
                    ),
                );
                None
            } else {
                Some(text.clone())
            }
        }
    };
    let role = match &raw.role {
        None => {
            missing(pass, "role", "a `role`: \"viewer\" or \"operator\"");
            None
        }
        Some(r) => {
            let role = AdminRole::parse(r.get_ref());
            if role.is_none() {
                pass.error(
                    r.span(),
                    key("role"),
                    format!(
                        "`{}` is not a role: \"viewer\" (reads only) or \"operator\" (also \
                         replays and redrives)",
                        r.get_ref()
                    ),
                );
            }
            role
        }
    };
    let token = match &raw.token {
        None => {
            missing(pass, "token", "a `token = \"env:NAME\"`");
            None
        }
        Some(t) => pass.secret(t, &key("token")),
    };
    Some(AdminToken {
        name: name?,
        role: role?,
        token: token?,
    })
}

/// Two tokens with one name would make audit records ambiguous, and two names with one token
/// would make the role of a request ambiguous.
fn check_unique(pass: &mut Pass<'_>, raw: &RawAdmin, tokens: &[(Option<usize>, AdminToken)]) {
    let mut names = HashSet::new();
    let mut values = HashSet::new();
    for (entry, t) in tokens {
        let span = entry
            .and_then(|j| raw.tokens.get(j))
            .map_or(0..0, Spanned::span);
        let at = entry.map_or_else(
            || "admin.token".to_owned(),
            |j| format!("admin.tokens[{j}]"),
        );
        if !names.insert(t.name.clone()) {
            let legacy_note = if t.name == LEGACY_TOKEN_NAME && raw.token.is_some() {
                " (the single `token` is the operator named \"admin\")"
            } else {
                ""
            };
            pass.error(
                span.clone(),
                format!("{at}.name"),
                format!("a second token named `{}`{legacy_note}", t.name),
            );
        }
        if !values.insert(Sha256::digest(t.token.expose())) {
            pass.error(
                span,
                format!("{at}.token"),
                "the same token as an earlier entry (each person or system needs a token of \
                 its own)",
            );
        }
    }
}

pub(super) fn compile_workers(pass: &mut Pass<'_>, raw: &RawWorkers) -> WorkerSettings {
    let concurrency = pass.count(
        raw.concurrency.as_ref(),
        "workers.concurrency",
        1..=MAX_CONCURRENCY,
        DEFAULT_CONCURRENCY,
    );
    let plugin_threads = pass.count(
        raw.plugin_threads.as_ref(),
        "workers.plugin_threads",
        1..=MAX_PLUGIN_THREADS,
        default_plugin_threads(),
    );
    WorkerSettings {
        concurrency: to_usize(concurrency),
        plugin_threads: to_usize(plugin_threads),
    }
}

/// One plugin thread per CPU: plugin calls are CPU-bound, more threads only queue in the OS.
pub(super) fn default_plugin_threads() -> u64 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u64::try_from(cpus).map_or(MAX_PLUGIN_THREADS, |n| n.min(MAX_PLUGIN_THREADS))
}

/// Counts are range-checked to far below `usize::MAX` on every supported target, so this only
/// saturates a value that already failed its range check (the pass fails anyway).
pub(super) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
