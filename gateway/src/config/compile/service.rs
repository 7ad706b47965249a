//! `[admin]` and `[workers]`: settings of the gateway's own services rather than of one
//! source or destination.

use super::Pass;
use crate::config::raw::{RawAdmin, RawWorkers};
use crate::config::{AdminSettings, WorkerSettings};
use toml::Spanned;

const DEFAULT_CONCURRENCY: u64 = 256;
const MAX_CONCURRENCY: u64 = 65_536;
/// Each plugin thread can hold a pooled instance; past this the pool's reservation, not the
/// CPU, becomes the limit.
const MAX_PLUGIN_THREADS: u64 = 1024;

/// `[admin]`; `None` when the table is absent (the admin API is then not served) or invalid
/// (an error is recorded).
pub(super) fn compile_admin(
    pass: &mut Pass<'_>,
    admin: Option<&Spanned<RawAdmin>>,
) -> Option<AdminSettings> {
    let admin = admin?;
    let Some(token) = &admin.get_ref().token else {
        pass.error(
            admin.span(),
            "admin.token",
            "the admin API needs `token = \"env:NAME\"` (or remove [admin] to disable it)",
        );
        return None;
    };
    let token = pass.secret(token, "admin.token")?;
    Some(AdminSettings { token })
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
