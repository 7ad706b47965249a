//! `[plugins.NAME]`: instance mode and the hard limits one plugin call runs under (fuel,
//! deadline, memory, table size), plus the settings and environment it is granted. Loading the
//! `.wasm` itself is the plugins module's job; this only checks what the table says.

use super::{Pass, valid_name};
use crate::config::raw::{RawConfig, RawPlugin, SecretValue};
use crate::config::secret::SecretRef;
use crate::config::{
    HealthPolicy, InstanceMode, MAX_PLUGIN_MEMORY, MAX_TABLE_ELEMENTS, PluginLimits, PluginSettings,
};
use std::time::Duration;
use toml::Spanned;

pub(super) const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(100);
const DEFAULT_PLUGIN_MEMORY: u64 = 64 * 1024 * 1024;
const DEFAULT_TABLE_ELEMENTS: u64 = 100_000;
const DEFAULT_EVENTS_PER_INSTANCE: u64 = 10_000;
const MIN_PLUGIN_MEMORY: u64 = 1024 * 1024;
const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_PLUGIN_TIMEOUT: Duration = Duration::from_millis(1);
const MIN_FUEL: u64 = 10_000;
const DEFAULT_UNHEALTHY_AFTER: u64 = 10;
const MAX_UNHEALTHY_AFTER: u64 = 1_000_000;
const DEFAULT_UNHEALTHY_COOLDOWN: Duration = Duration::from_secs(30);
const MIN_UNHEALTHY_COOLDOWN: Duration = Duration::from_secs(1);
const MAX_UNHEALTHY_COOLDOWN: Duration = Duration::from_secs(3600);

pub(super) fn compile_plugin(
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
    let unhealthy_after = pass.count(
        raw.unhealthy_after.as_ref(),
        &format!("{table}.unhealthy_after"),
        0..=MAX_UNHEALTHY_AFTER,
        DEFAULT_UNHEALTHY_AFTER,
    );
    let cooldown = raw
        .unhealthy_cooldown
        .as_ref()
        .map_or(DEFAULT_UNHEALTHY_COOLDOWN, |c| {
            let d = c.get_ref().0;
            if !(MIN_UNHEALTHY_COOLDOWN..=MAX_UNHEALTHY_COOLDOWN).contains(&d) {
                pass.error(
                    c.span(),
                    format!("{table}.unhealthy_cooldown"),
                    "must be between 1s and 1h",
                );
            }
            d
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
        health: HealthPolicy {
            // Range-checked above: at most MAX_UNHEALTHY_AFTER.
            unhealthy_after: u32::try_from(unhealthy_after).unwrap_or(u32::MAX),
            cooldown,
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

/// Warns for every environment variable granted to a plugin (`plugins.NAME.env`) that a secret
/// reference of the config reads (`env:NAME`): the plugin could read that secret. A warning,
/// not an error: a plugin may be meant to have it (e.g. to sign something itself).
pub(super) fn warn_secret_grants(pass: &mut Pass<'_>, raw: &RawConfig) {
    let readers = secret_env_readers(raw);
    for (name, plugin) in &raw.plugins {
        let granted = plugin.get_ref().env.iter().flat_map(|l| l.get_ref().iter());
        for (i, var) in granted.enumerate() {
            let Some((_, key)) = readers.iter().find(|(v, _)| v == var.get_ref()) else {
                continue;
            };
            pass.warn(
                var.span(),
                format!("plugins.{name}.env[{i}]"),
                format!(
                    "grants the plugin {}, which {key} reads a secret from: the plugin can read \
                     that secret",
                    var.get_ref()
                ),
            );
        }
    }
}

/// `(variable, key)` for every `env:` reference at a key that holds a secret.
fn secret_env_readers(raw: &RawConfig) -> Vec<(String, String)> {
    let mut written: Vec<(String, String)> = Vec::new();
    let mut add = |key: String, value: &SecretValue<String>| {
        if let SecretValue::Written(text) = value {
            written.push((key, text.clone()));
        }
    };
    for (name, source) in &raw.sources {
        let source = source.get_ref();
        if let Some(SecretValue::Written(list)) = source.secrets.as_ref().map(|l| l.get_ref()) {
            for (i, entry) in list.iter().enumerate() {
                add(format!("sources.{name}.secrets[{i}]"), entry.get_ref());
            }
        }
        if let Some(token) = &source.token {
            add(format!("sources.{name}.token"), token.get_ref());
        }
        if let Some(SecretValue::Written(basic)) = source.basic_auth.as_ref().map(|b| b.get_ref()) {
            // A user name given as a reference counts: it is half of the credentials.
            let username = SecretValue::Written(basic.username.get_ref().clone());
            add(format!("sources.{name}.basic_auth.username"), &username);
            add(
                format!("sources.{name}.basic_auth.password"),
                basic.password.get_ref(),
            );
        }
    }
    if let Some(admin) = raw.admin.as_ref().map(Spanned::get_ref) {
        if let Some(token) = &admin.token {
            add("admin.token".to_owned(), token.get_ref());
        }
        for (i, entry) in admin.tokens.iter().enumerate() {
            if let Some(token) = &entry.get_ref().token {
                add(format!("admin.tokens[{i}].token"), token.get_ref());
            }
        }
    }
    for (name, destination) in &raw.destinations {
        if let Some(secret) = &destination.get_ref().secret {
            add(format!("destinations.{name}.secret"), secret.get_ref());
        }
    }
    if let Some(url) = &raw.store.url {
        add("store.url".to_owned(), url.get_ref());
    }
    written
        .into_iter()
        .filter_map(|(key, text)| match SecretRef::parse(&text) {
            Ok(SecretRef::Env(var)) => Some((var, key)),
            _ => None,
        })
        .collect()
}
