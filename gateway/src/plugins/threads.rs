//! Where plugin calls run: a small tokio runtime of its own (`workers.plugin_threads` threads)
//! and the gate that lets at most that many calls run WebAssembly at once.
//!
//! A call holds a place at the gate while its wasm runs (including the 1 ms time slices it
//! yields at, so a busy call keeps its thread to itself, as before). While it waits in a host
//! call (a WASI sleep or poll) it gives the place back and holds no thread at all, so a plugin
//! that sleeps never starves the other plugins' calls; it takes a place again when the wait
//! ends. The caller's deadline is outside the gate: a wait is cut at the deadline whether or not
//! a place is free.
//!
//! Never runs anything but plugin calls (and the plugin chains that make them), so CPU-bound
//! wasm never runs on the threads that answer HTTP requests. The workers hand a batch of events
//! over in one task ([`PluginThreads::spawn`]), which spawns one task per event here: crossing
//! between the runtimes costs a thread wake-up, and once per call it cost ~14% of the
//! end-to-end rate.

use super::PluginError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// The plugin runtime and its gate; shared by every plugin of an engine.
#[derive(Debug)]
pub struct PluginThreads {
    /// `Some` until dropped; then shut down without waiting (see `Drop`).
    runtime: Option<Runtime>,
    handle: Handle,
    gate: Arc<Semaphore>,
}

impl PluginThreads {
    pub(super) fn start(threads: usize) -> Result<Self, PluginError> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-plugin")
            .enable_time()
            .build()
            .map_err(|e| PluginError::Engine(format!("cannot start the plugin threads: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            gate: Arc::new(Semaphore::new(threads)),
        })
    }

    /// Runs `work` (plugin chains: [`super::LoadedPlugin::call_async`] must be awaited here)
    /// on the plugin threads. A task it spawns with `tokio::spawn` runs here too.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(work)
    }

    /// Runs `call` on the calling thread (its timers on the plugin threads) until it ends.
    /// Panics if called from async code (tokio refuses to block a runtime thread); the gateway
    /// uses [`Self::spawn`], this is for the command line and tests.
    pub(super) fn block_on<F: Future>(&self, call: F) -> F::Output {
        self.handle.block_on(call)
    }

    /// Waits for a place at the gate: a call's deadline starts once it has one, so a call that
    /// waited behind busy plugins is not charged for it.
    pub(super) async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        // The gate is never closed; a call without a place would merely run ungated.
        Arc::clone(&self.gate).acquire_owned().await.ok()
    }

    /// `work` (one call's wasm) under the gate, starting with the place `admit` gave it.
    /// `yielded` is set by the epoch callback when the call pauses at the end of a time
    /// slice, as opposed to waiting in a host call.
    pub(super) fn gated<F: Future>(
        &self,
        place: Option<OwnedSemaphorePermit>,
        yielded: Arc<AtomicBool>,
        work: F,
    ) -> Gated<F> {
        Gated {
            work: Box::pin(work),
            gate: Arc::clone(&self.gate),
            place,
            waiting: None,
            yielded,
        }
    }
}

impl Drop for PluginThreads {
    fn drop(&mut self) {
        // Dropping a runtime waits for its work and panics inside async code (the engine can be
        // dropped there); calls still running are dropped, which cuts them off like a deadline.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// One call's wasm, holding a place at the gate whenever it runs (see the module docs).
pub(super) struct Gated<F> {
    work: Pin<Box<F>>,
    gate: Arc<Semaphore>,
    place: Option<OwnedSemaphorePermit>,
    waiting: Option<Acquire>,
    yielded: Arc<AtomicBool>,
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.place.is_none() {
            let gate = &this.gate;
            let waiting = this
                .waiting
                .get_or_insert_with(|| Box::pin(Arc::clone(gate).acquire_owned()));
            match waiting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(place) => {
                    this.waiting = None;
                    this.place = place.ok();
                }
            }
        }
        match this.work.as_mut().poll(cx) {
            Poll::Ready(out) => {
                this.place = None;
                Poll::Ready(out)
            }
            Poll::Pending => {
                // A time slice ended: keep the place. Anything else is a wait in a host call.
                if !this.yielded.swap(false, Ordering::AcqRel) {
                    this.place = None;
                }
                Poll::Pending
            }
        }
    }
}
