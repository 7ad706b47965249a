//! What triggers a reload: a change to the config file or to any plugin .wasm it names
//! (watched with `notify`, debounced so an editor's write-rename-chmod is one reload), and
//! SIGHUP.
//!
//! Directories are watched rather than files, because editors and deploy tools replace a file
//! (write a new one, rename it over the old) and a watch on the old inode would go quiet.

use super::Reloader;
use crate::config::GatewayConfig;
use notify::{RecursiveMode, Watcher as _};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Quiet time after the last change before the reload starts.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Why a reload starts.
#[derive(Debug)]
enum Trigger {
    Changed(Vec<PathBuf>),
    Hangup,
}

/// The sources of reload triggers, installed before the gateway announces it is listening: a
/// SIGHUP or a config change right after the announcement must reload, not kill the process or
/// go unnoticed.
#[derive(Debug)]
pub struct Triggers {
    rx: mpsc::UnboundedReceiver<Trigger>,
    tx: mpsc::UnboundedSender<Trigger>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: Watched,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Triggers {
    /// Installs the SIGHUP handler and watches `config`'s file and plugins. Needs a tokio
    /// runtime. Failures are logged, not fatal: the gateway runs, with fewer ways to reload.
    pub fn install(config: &GatewayConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let file_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
                drop(file_tx.send(Trigger::Changed(event.paths)));
            }
        });
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP");
                None
            }
        };
        let mut watched = Watched::default();
        if let Some(w) = watcher.as_mut() {
            watched.update(w, &interesting_paths(config));
        }
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        Self {
            rx,
            tx,
            watcher,
            watched,
            hangup,
        }
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn watch(reloader: Arc<Reloader>, triggers: Triggers, shutdown: CancellationToken) {
    let Triggers {
        mut rx,
        tx,
        mut watcher,
        mut watched,
        hangup,
    } = triggers;
    if let Some(hangup) = hangup {
        tokio::spawn(forward_hangups(hangup, tx, shutdown.clone()));
    }

    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            t = rx.recv() => match t { Some(t) => t, None => return },
        };
        // The watched directories also hold other files (typically the store and its WAL,
        // written many times a second under load): their changes are ignored, and must not
        // hold the debounce open, or a reload would wait until the traffic stops.
        if !watched.is_relevant(&first) {
            continue;
        }
        // Debounce: keep taking triggers until no relevant one came for DEBOUNCE.
        let mut quiet = Box::pin(tokio::time::sleep(DEBOUNCE));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut quiet => break,
                t = rx.recv() => match t {
                    Some(t) if watched.is_relevant(&t) => {
                        quiet.as_mut().reset(tokio::time::Instant::now() + DEBOUNCE);
                    }
                    Some(_) => {}
                    None => return,
                },
            }
        }
        // A refused reload is logged and counted by the reloader.
        if let Ok(generation) = reloader.reload().await {
            tracing::debug!(generation, "reload applied");
        }
        if let Some(w) = watcher.as_mut() {
            watched.update(w, &interesting_paths(&reloader.current()));
        }
    }
}

async fn forward_hangups(
    mut hup: tokio::signal::unix::Signal,
    tx: mpsc::UnboundedSender<Trigger>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            s = hup.recv() => {
                if s.is_none() || tx.send(Trigger::Hangup).is_err() {
                    return;
                }
            }
        }
    }
}

/// The config file and every plugin .wasm of `config`, as absolute paths.
fn interesting_paths(config: &GatewayConfig) -> HashSet<PathBuf> {
    std::iter::once(config.file.clone())
        .chain(config.plugins.iter().map(|p| p.wasm.clone()))
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect()
}

/// The files that matter and the directories watched for them.
#[derive(Debug, Default)]
struct Watched {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Watched {
    fn update(&mut self, watcher: &mut notify::RecommendedWatcher, files: &HashSet<PathBuf>) {
        let dirs: HashSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for gone in self.dirs.difference(&dirs) {
            drop(watcher.unwatch(gone));
        }
        for new in dirs.difference(&self.dirs) {
            if let Err(e) = watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %new.display(), error = %e, "cannot watch directory; reload with SIGHUP");
            }
        }
        self.files = files.clone();
        self.dirs = dirs;
    }

    fn is_relevant(&self, trigger: &Trigger) -> bool {
        match trigger {
            Trigger::Hangup => true,
            Trigger::Changed(paths) => paths.iter().any(|p| self.files.contains(p)),
        }
    }
}
