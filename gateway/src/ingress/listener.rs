//! The accept loop and per-connection HTTP/1 settings, with graceful shutdown.
//!
//! Connections get a header-read timeout (a client that never finishes its headers is cut off),
//! a write timeout (a client that sends requests but never reads the answers, so that they
//! cannot be written, is cut off too) and a cap on header size (431 past it). At most
//! `server.max_connections` are served at once: at the cap, the next connection is accepted
//! but not read, and nothing else is accepted, until one closes (the kernel queues the new ones
//! meanwhile, and refuses them once its backlog is full). On
//! shutdown the listener closes at once, in-flight requests finish (their acks still wait for
//! the store), idle keep-alive connections close.

use super::{Gateway, Surface};
use crate::metrics::events::AcceptFailed;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

/// hyper's read buffer limit (`max_buf_size`; hyper's own default is ~400 KiB), which is what
/// caps a request head (request line + headers), though not at this figure: hyper compares it
/// with the buffer only after a read that left the head unfinished, and one read fills all the
/// capacity the buffer has grown to, which doubles as it grows. So a head is refused (431) at
/// 64-128 KiB, depending on how its bytes arrive, and always past 128 KiB. Measured on loopback:
/// sent in one write, heads up to 114,667 bytes are served and from 114,726 refused; sent 1 KB
/// at a time, refused from ~65.5 KB (`tests/e2e/hostile.rs` checks 90,000 served, 131,073 not).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long in-flight requests get to finish after a shutdown signal.
const GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a client may take to send a request head, and to take an answer.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    pub header: Duration,
    pub write: Duration,
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    timeouts: ConnectionTimeouts,
    surface: Surface,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Rate-limited: out of descriptors, this repeats every ACCEPT_BACKOFF.
                AcceptFailed { error: &e }.emit();
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // At the connection cap, the connection just accepted waits (unread) for one to close,
        // and the loop accepts nothing else meanwhile: the rest wait in the kernel's queue.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = gateway.connections.slot() => slot,
        };
        // Acks are small and latency-bound: do not wait to coalesce them.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let gw = Arc::clone(&gateway);
        let service = service_fn(move |req| {
            let gw = Arc::clone(&gw);
            async move { Ok::<_, Infallible>(gw.handle(req, peer, surface).await) }
        });
        // hyper has no write timeout: a client pipelining requests without reading the answers
        // would hold its connection (and the answers queued for it) for ever. The clock runs
        // only while a write is blocked, so it costs nothing on the normal path.
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(timeouts.write));
        let io = TokioIo::new(Box::pin(io));
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(GRACE_PERIOD) => {
            tracing::warn!("grace period over; closing remaining connections");
        }
    }
}
