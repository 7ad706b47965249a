//! The store: where an acknowledged event lives. A 200 is only ever sent after [`Store::ingest`]
//! returned, and `ingest` only returns after the event is durable (committed and fsynced).
//!
//! Dedup and persist are one write: `ingest` inserts the (source, dedup key) pair if absent and
//! stores the event only when it was absent, so two concurrent retries cannot both pass. The
//! trait is shaped so a Postgres backend (insert-on-conflict) can sit behind it; the embedded
//! default is SQLite ([`SqliteStore`]). This module never sees HTTP or provider formats.

mod dedup_index;
mod retention;
mod schema;
mod sqlite;

pub use retention::prune_periodically;
pub use sqlite::{SqliteStore, WriterThread};

use bytes::Bytes;

/// One normalized event ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: String,
    pub dedup_key: String,
    pub event_type: String,
    /// The envelope as CloudEvents structured JSON.
    pub envelope: String,
    /// The body exactly as received, so the signature can be re-checked.
    pub raw_body: Bytes,
    /// JSON object of the headers that matter for re-verification.
    pub headers: String,
    pub received_at_ms: i64,
}

/// An authenticated body that could not be normalized, kept so nothing is lost.
#[derive(Debug, Clone)]
pub struct QuarantinedBody {
    pub source: String,
    pub reason: String,
    pub raw_body: Bytes,
    pub headers: String,
    pub received_at_ms: i64,
}

/// What `ingest` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// First time this (source, dedup key) was seen: the event is stored under this sequence.
    Stored { seq: i64 },
    /// Seen before (within the dedup window): nothing was written.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("store is shut down")]
    Closed,
}

/// The durable event store behind the webhook path.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Dedup and persist in one durable write; returns after commit.
    async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome, StoreError>;
    /// Keeps an authenticated body that could not be normalized; returns after commit.
    async fn quarantine(&self, body: QuarantinedBody) -> Result<(), StoreError>;
    /// A real (tiny) durable write, for `/readyz`.
    async fn check_writable(&self) -> Result<(), StoreError>;
    /// Forgets dedup keys first seen before `cutoff_ms`; returns how many.
    async fn prune_dedup(&self, cutoff_ms: i64) -> Result<u64, StoreError>;
}

/// Now as unix milliseconds.
pub(crate) fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
