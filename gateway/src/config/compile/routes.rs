//! `[[routes]]`: which events go through which plugins to which destinations. A route refers
//! to plugins and destinations by name, so this is also where those names are checked and
//! where a destination no route uses is reported.

use super::{Pass, valid_name};
use crate::config::raw::{Patterns, RawConfig, RawRoute};
use crate::config::{Backoff, Glob, PluginRetry, RouteSettings};
use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// A plugin that answers `retry` is run again after 1 s, 2 s, 4 s ... up to 5 min apart, ten
/// times in all, before its route run is a dead letter.
pub(crate) const DEFAULT_PLUGIN_RETRY: PluginRetry = PluginRetry {
    max_attempts: 10,
    backoff: Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
    },
};
const MAX_PLUGIN_ATTEMPTS: u64 = 100;

/// Every route, in file order; a route with an error is left out (the pass fails anyway).
pub(super) fn compile_routes(pass: &mut Pass<'_>, raw: &RawConfig) -> Vec<RouteSettings> {
    let mut ctx = RouteContext {
        raw,
        names: Vec::new(),
        used: BTreeSet::new(),
    };
    let mut routes = Vec::new();
    for (i, route) in raw.routes.iter().enumerate() {
        if let Some(r) = compile_route(pass, &mut ctx, i, route) {
            routes.push(r);
        }
    }
    for (name, destination) in &raw.destinations {
        if !ctx.used.contains(name.as_str()) {
            pass.warn(
                destination.span(),
                format!("destinations.{name}"),
                "no route sends events here",
            );
        }
    }
    routes
}

/// What routes share while they are compiled one by one.
struct RouteContext<'a> {
    raw: &'a RawConfig,
    /// Names of the routes compiled so far, by position.
    names: Vec<String>,
    /// Destinations some route sends to.
    used: BTreeSet<&'a str>,
}

fn compile_route<'a>(
    pass: &mut Pass<'_>,
    ctx: &mut RouteContext<'a>,
    i: usize,
    route: &'a Spanned<RawRoute>,
) -> Option<RouteSettings> {
    let at = format!("routes[{i}]");
    let raw = route.get_ref();
    let errors_before = pass.errors.len();
    let name = match &raw.name {
        Some(n) => {
            if !valid_name(n.get_ref()) {
                pass.error(
                    n.span(),
                    format!("{at}.name"),
                    "route names may only use letters, digits, `_` and `-`",
                );
            }
            n.get_ref().clone()
        }
        // 1-based, as an operator counts the `[[routes]]` in the file.
        None => format!("route-{}", i + 1),
    };
    if let Some(j) = ctx.names.iter().position(|n| *n == name) {
        let span = raw.name.as_ref().map_or(route.span(), Spanned::span);
        pass.error(
            span,
            format!("{at}.name"),
            format!("`{name}` is already the name of routes[{j}]"),
        );
    }
    ctx.names.push(name.clone());

    let (mut sources, mut types) = (Vec::new(), Vec::new());
    if let Some(m) = &raw.matches {
        let m = m.get_ref();
        let key = format!("{at}.match.source");
        for (span, key, glob) in globs(pass, m.source.as_ref(), &key, "source") {
            // Source names are known now, so a pattern that can never match is worth a word.
            if !ctx.raw.sources.keys().any(|s| glob.is_match(s)) {
                let msg = format!("`{}` matches no configured source", glob.pattern);
                pass.warn(span, key, msg);
            }
            sources.push(glob);
        }
        let key = format!("{at}.match.type");
        let found = globs(pass, m.types.as_ref(), &key, "type");
        types = found.into_iter().map(|(_, _, glob)| glob).collect();
    }

    let mut plugins = Vec::new();
    for (j, plugin) in raw
        .plugins
        .iter()
        .flat_map(|l| l.get_ref().iter())
        .enumerate()
    {
        let name = plugin.get_ref();
        if !ctx.raw.plugins.contains_key(name) {
            pass.error(
                plugin.span(),
                format!("{at}.plugins[{j}]"),
                format!("unknown plugin `{name}`: there is no [plugins.{name}]"),
            );
        }
        plugins.push(name.clone());
    }

    let max_attempts = pass.count(
        raw.plugin_max_attempts.as_ref(),
        &format!("{at}.plugin_max_attempts"),
        1..=MAX_PLUGIN_ATTEMPTS,
        u64::from(DEFAULT_PLUGIN_RETRY.max_attempts),
    );
    let plugin_retry = PluginRetry {
        // Range-checked above.
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
        backoff: super::backoff(
            pass,
            &at,
            ("plugin_backoff_initial", "plugin_backoff_max"),
            (&raw.plugin_backoff_initial, &raw.plugin_backoff_max),
            DEFAULT_PLUGIN_RETRY.backoff,
        ),
    };
    if raw.plugins.as_ref().is_none_or(|p| p.get_ref().is_empty()) {
        let written = [
            raw.plugin_max_attempts.as_ref().map(Spanned::span),
            raw.plugin_backoff_initial.as_ref().map(|d| d.span()),
            raw.plugin_backoff_max.as_ref().map(|d| d.span()),
        ];
        if let Some(span) = written.into_iter().flatten().next() {
            pass.warn(
                span,
                format!("{at}.plugins"),
                "plugin retry settings on a route without plugins have no effect",
            );
        }
    }

    let to = destinations(pass, ctx, &at, route);
    if pass.errors.len() > errors_before {
        return None;
    }
    Some(RouteSettings {
        name,
        sources,
        types,
        plugins,
        to,
        plugin_retry,
    })
}

/// Checks `to`: present, not empty, each name a configured destination, none twice.
fn destinations<'a>(
    pass: &mut Pass<'_>,
    ctx: &mut RouteContext<'a>,
    at: &str,
    route: &'a Spanned<RawRoute>,
) -> Vec<String> {
    let key = format!("{at}.to");
    let Some(list) = &route.get_ref().to else {
        pass.error(
            route.span(),
            key,
            "a route needs `to = [\"DESTINATION\", ...]`",
        );
        return Vec::new();
    };
    if list.get_ref().is_empty() {
        pass.error(list.span(), &key, "needs at least one destination");
    }
    let mut to: Vec<String> = Vec::new();
    for (j, entry) in list.get_ref().iter().enumerate() {
        let name = entry.get_ref();
        match ctx.raw.destinations.get_key_value(name) {
            Some((known, _)) => {
                ctx.used.insert(known.as_str());
            }
            None => pass.error(
                entry.span(),
                format!("{key}[{j}]"),
                format!("unknown destination `{name}`: there is no [destinations.{name}]"),
            ),
        }
        if to.contains(name) {
            // Each listed destination gets its own delivery: twice would deliver twice.
            pass.error(
                entry.span(),
                format!("{key}[{j}]"),
                format!("`{name}` is listed twice"),
            );
        }
        to.push(name.clone());
    }
    to
}

/// Compiles a `match.source` or `match.type` value into globs, each with the position and key
/// of the element it came from; invalid patterns are recorded as errors and left out.
fn globs(
    pass: &mut Pass<'_>,
    value: Option<&Spanned<Patterns>>,
    key: &str,
    what: &str,
) -> Vec<(Range<usize>, String, Glob)> {
    let Some(value) = value else {
        return Vec::new();
    };
    let written: Vec<(Range<usize>, String, &str)> = match value.get_ref() {
        Patterns::One(p) => vec![(value.span(), key.to_owned(), p.as_str())],
        Patterns::Many(list) => list
            .iter()
            .enumerate()
            .map(|(j, p)| (p.span(), format!("{key}[{j}]"), p.get_ref().as_str()))
            .collect(),
    };
    if written.is_empty() {
        // A missing key matches everything, but an empty list reads as "nothing": make the
        // operator say which one they mean.
        pass.error(
            value.span(),
            key,
            format!("an empty list is ambiguous: remove `{what}` to match every {what}"),
        );
    }
    let mut globs = Vec::new();
    for (span, key, pattern) in written {
        match Glob::new(pattern) {
            Ok(glob) => globs.push((span, key, glob)),
            Err(e) => pass.error(span, key, format!("invalid glob `{pattern}`: {}", e.kind())),
        }
    }
    globs
}
