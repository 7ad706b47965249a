//! Shutdown as a small type: a token cancelled by SIGTERM or SIGINT, which every long-running
//! task watches. Also keeps SIGXFSZ from killing the process: when a file-size limit is hit,
//! the failing write must surface as a store error (503), not as a crash.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// SIGXFSZ on Linux.
const SIGXFSZ: i32 = 25;

/// Installs the signal handlers and returns the token they cancel. Must run inside a runtime.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut xfsz = signal(SignalKind::from_raw(SIGXFSZ))?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        cancel.cancel();
    });
    tokio::spawn(async move {
        while xfsz.recv().await.is_some() {
            tracing::warn!("file size limit exceeded: store writes fail until it is raised");
        }
    });
    Ok(token)
}
