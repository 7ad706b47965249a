//! The two caps that bound what unauthenticated clients can make the gateway hold, whatever
//! their number: open connections (`server.max_connections`) and bytes of request bodies in
//! memory across all requests (`server.max_body_buffer`). `max_body` and the timeouts bound one
//! request; these bound all of them together, so holding many requests open cannot grow memory
//! without limit either.
//!
//! At the connection cap the listener holds the connection it just accepted, unread, and
//! accepts no other until a connection closes (the kernel queues new ones meanwhile); when the
//! body budget is used up, the request that needs more is answered 503 (the caller's business).
//! Both limits follow a reload. This module only counts; it never answers a request or closes
//! a connection.

use crate::metrics::Metrics;
use crate::metrics::events::{BodyBytesHeld, ConnectionCapReached, ConnectionCounted};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Open connections, capped.
#[derive(Debug)]
pub(super) struct ConnectionCap {
    open: AtomicUsize,
    limit: AtomicUsize,
    /// Woken when a connection closes or the limit changes.
    changed: Notify,
    metrics: Metrics,
}

/// One open connection's place under the cap; freed when dropped.
#[derive(Debug)]
pub(super) struct ConnectionSlot {
    cap: Arc<ConnectionCap>,
}

impl ConnectionCap {
    pub(super) fn new(limit: usize, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            changed: Notify::new(),
            metrics,
        })
    }

    pub(super) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// A slot for a connection just accepted, waiting while the cap is reached (counted once
    /// per wait: a connection that had to wait). Only the accept loop calls this, so the check
    /// and the increment need no lock.
    pub(super) async fn slot(self: &Arc<Self>) -> ConnectionSlot {
        let mut counted = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a close between the check and the wait wakes it.
            changed.as_mut().enable();
            let limit = self.limit.load(Ordering::Relaxed);
            if self.open.load(Ordering::Acquire) < limit {
                self.open.fetch_add(1, Ordering::AcqRel);
                ConnectionCounted {
                    metrics: &self.metrics,
                    opened: true,
                }
                .emit();
                return ConnectionSlot {
                    cap: Arc::clone(self),
                };
            }
            if !counted {
                counted = true;
                ConnectionCapReached {
                    metrics: &self.metrics,
                    limit,
                }
                .emit();
            }
            changed.await;
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.cap.open.fetch_sub(1, Ordering::AcqRel);
        ConnectionCounted {
            metrics: &self.cap.metrics,
            opened: false,
        }
        .emit();
        self.cap.changed.notify_one();
    }
}

/// Bytes of request bodies in memory, across all requests, capped.
#[derive(Debug)]
pub(super) struct BodyBudget {
    held: AtomicU64,
    limit: AtomicU64,
    metrics: Metrics,
}

/// The body bytes one request holds; given back when dropped.
#[derive(Debug)]
pub(super) struct BodyLease<'a> {
    budget: &'a BodyBudget,
    bytes: u64,
}

/// Taking more would pass `server.max_body_buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BudgetExhausted {
    pub(super) limit: u64,
}

impl BodyBudget {
    pub(super) fn new(limit: u64, metrics: Metrics) -> Self {
        Self {
            held: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
            metrics,
        }
    }

    pub(super) fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// An empty lease for one request's body.
    pub(super) fn lease(&self) -> BodyLease<'_> {
        BodyLease {
            budget: self,
            bytes: 0,
        }
    }

    /// Whether `bytes` more would fit now (a hint: nothing is taken).
    pub(super) fn would_fit(&self, bytes: u64) -> bool {
        let held = self.held.load(Ordering::Relaxed);
        held.saturating_add(bytes) <= self.limit()
    }
}

impl BodyLease<'_> {
    /// Takes `bytes` more for this request, or fails without taking any.
    pub(super) fn grow(&mut self, bytes: u64) -> Result<(), BudgetExhausted> {
        if bytes == 0 {
            return Ok(());
        }
        let budget = self.budget;
        let limit = budget.limit();
        budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= limit)
            })
            .map_err(|_| BudgetExhausted { limit })?;
        self.bytes += bytes;
        BodyBytesHeld {
            metrics: &budget.metrics,
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
        }
        .emit();
        Ok(())
    }
}

impl Drop for BodyLease<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        BodyBytesHeld {
            metrics: &self.budget.metrics,
            bytes: -i64::try_from(self.bytes).unwrap_or(i64::MAX),
        }
        .emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn metrics() -> Metrics {
        Metrics::new().expect("metrics")
    }

    #[test]
    fn leases_take_up_to_the_limit_and_give_back_when_dropped() {
        let m = metrics();
        let budget = BodyBudget::new(100, m.clone());
        let mut a = budget.lease();
        a.grow(60).expect("fits");
        let mut b = budget.lease();
        assert_eq!(b.grow(50), Err(BudgetExhausted { limit: 100 }));
        assert!(!budget.would_fit(41));
        b.grow(40).expect("exactly the limit fits");
        assert!(m.render().contains("gateway_body_buffer_bytes 100"));
        drop(a);
        assert!(budget.would_fit(60));
        b.grow(60).expect("what a gave back");
        drop(b);
        assert_eq!(budget.held.load(Ordering::Relaxed), 0);
        assert!(m.render().contains("gateway_body_buffer_bytes 0"));
        // A lower limit after a reload applies to what is taken next.
        budget.set_limit(10);
        assert!(budget.lease().grow(11).is_err());
    }

    #[tokio::test]
    async fn the_cap_waits_for_a_connection_to_close_and_counts_the_wait() {
        let m = metrics();
        let cap = ConnectionCap::new(2, m.clone());
        let a = cap.slot().await;
        let _b = cap.slot().await;
        let third = tokio::spawn({
            let cap = Arc::clone(&cap);
            async move { cap.slot().await }
        });
        let waited = |m: &Metrics| {
            m.render()
                .contains(r#"gateway_limit_reached_total{limit="connections"} 1"#)
        };
        // The third waits (and says so once) until one of the two closes.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !waited(&m) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the wait is counted");
        assert!(!third.is_finished());
        assert!(m.render().contains("gateway_open_connections 2"));
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("a slot once one closed")
            .expect("no panic");
        assert!(m.render().contains("gateway_open_connections 2"));
        // A higher limit (a reload) lets the next one in at once.
        cap.set_limit(3);
        let _d = tokio::time::timeout(Duration::from_secs(10), cap.slot())
            .await
            .expect("room after the reload");
        assert!(waited(&m), "counted once per wait");
    }
}
