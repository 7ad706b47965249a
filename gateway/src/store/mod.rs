//! The store: where an acknowledged event lives. A 200 is only ever sent after [`Store::ingest`]
//! returned, and `ingest` only returns after the event is durable (committed and fsynced).
//!
//! Dedup and persist are one write: `ingest` inserts the (source, dedup key) pair if absent and
//! stores the event only when it was absent, so two concurrent retries cannot both pass. For a
//! provider that signs no event id the pair is (source, object) instead, and "absent" means
//! "its latest stored state is not this one, or is older than the retry window"
//! ([`ObjectStateClaim`]); that too is decided and stored in the same write. The trait is
//! shaped so a Postgres backend (insert-on-conflict, an upsert guarded by the window) can sit
//! behind it; the embedded default is SQLite ([`SqliteStore`]). This module never sees HTTP or
//! provider formats.

mod dead_letters;
mod dedup_index;
mod envelope_cut;
mod event_filter;
mod object_states;
mod postgres;
mod retention;
mod schema;
mod sqlite;
mod stuck_amount;
mod views;
mod work;

#[cfg(test)]
mod conformance;

pub use dead_letters::{CurrencySum, DeadFilter, DeadLetterGroup};
pub use postgres::{
    CopyError, CopySummary, PgOptions, PgStore, SchemaStatus, copy_from_sqlite,
    latest_schema_version, target_of,
};
pub use retention::{Retention, prune_periodically};
pub use sqlite::backup::{BackupError, BackupSummary, DEFAULT_PAGES_PER_STEP, backup};
pub use sqlite::{SqliteStore, WriterThread};
pub use stuck_amount::StuckAmount;
pub use work::{
    AttemptDone, AttemptRecord, AuditRecord, Backlog, BlockedSubject, ClaimedEvent, DeliveryOrder,
    DeliveryState, DeliveryView, DueDelivery, DueRouteRun, EventDetail, EventFilter, EventStatus,
    EventSummary, NewDelivery, PluginStep, Processed, QuarantineEntry, RedriveSelection,
    RouteRunState, RouteRunUpdate, RouteRunView, StoredEvent, StoredSpan,
};

use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::Notify;

/// One normalized event ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: String,
    pub dedup_key: String,
    pub event_type: String,
    /// The envelope as CloudEvents structured JSON.
    pub envelope: String,
    /// The envelope's `subject` (the object the event is about), for the admin API's search;
    /// `None` when it has none or an empty one.
    pub subject: Option<String>,
    /// Where the envelope's `data` is a copy of part of `raw_body` (the usual case): the row
    /// then keeps those bytes once.
    pub data_span: Option<DataSpan>,
    /// The body exactly as received, so the signature can be re-checked.
    pub raw_body: Bytes,
    /// JSON object of the headers that matter for re-verification.
    pub headers: String,
    pub received_at_ms: i64,
    /// For a provider that signs no event id: what tells a retry of this event from a new one.
    /// `None`: the dedup key does (equal keys within the dedup window are one event).
    pub object_state: Option<ObjectStateClaim>,
    /// The event's ordering key as it arrived (before any plugin): while it is not routed yet
    /// it holds later deliveries of its subject to ordered destinations. `None`: no subject.
    pub order: Option<DeliveryOrder>,
}

/// The object a delivery is about and the state it reports (hashes made by the provider
/// stage). The store drops the delivery as a retry when `state` equals the latest state it
/// stored for (source, `object`) and that one arrived less than `retry_window_ms` before this
/// one; otherwise it stores the event and records `state` as the object's latest, in the same
/// commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStateClaim {
    pub object: [u8; 32],
    pub state: [u8; 32],
    pub retry_window_ms: i64,
}

/// Where the envelope's `data` value is, in the envelope and verbatim in the raw body (byte
/// offsets, `len` bytes in each). The store keeps the envelope without it and puts it back
/// from the body on every read, so a webhook's payload is written once, not twice; it checks
/// the bytes are equal first and stores the envelope whole if they are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSpan {
    pub in_envelope: usize,
    pub in_body: usize,
    pub len: usize,
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

/// What one step of a retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredEvents {
    pub deleted: u64,
    /// Where the next step starts; `None` once the pass reached events inside the retention.
    pub resume_after: Option<i64>,
}

/// What one step of forgetting old dedup keys did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupPruneStep {
    /// Keys the dedup index forgot in this step.
    pub forgotten: u64,
    /// The pass is complete: every key first seen before the cutoff is forgotten.
    pub done: bool,
}

/// What `ingest` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// First time this (source, dedup key) was seen: the event is stored under this sequence.
    Stored { seq: i64 },
    /// Seen before (within the dedup window, or the latest state of its object within the
    /// retry window): nothing was written.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The SQLite file, or the PostgreSQL hosts and database (never the password).
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store schema: {0}")]
    Schema(String),
    #[error("store write failed: {0}")]
    Write(String),
    #[error("store read failed: {0}")]
    Read(String),
    #[error("store is shut down")]
    Closed,
}

/// The ack path's half of the store: what the webhook path writes (events, quarantined
/// bodies, readiness probes) and the cluster-wide forgetting of what only it reads (dedup keys,
/// object states, quarantine). Every backend implements it; one conformance suite
/// (`conformance.rs`) runs against each.
#[async_trait::async_trait]
pub trait Intake: Send + Sync + std::fmt::Debug + 'static {
    /// Dedup and persist in one durable write; returns after commit.
    async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome, StoreError>;
    /// Keeps an authenticated body that could not be normalized; returns after commit. A body
    /// this source sent before is counted on its row (`repeats`, `last_seen_at`) instead.
    async fn quarantine(&self, body: QuarantinedBody) -> Result<(), StoreError>;
    /// A real (tiny) durable write, for `/readyz`.
    async fn check_writable(&self) -> Result<(), StoreError>;
    /// One step of forgetting the dedup keys first seen before `cutoff_ms`: small, so the
    /// ingests sharing its commit are not held up. A pass repeats it until `done`.
    async fn prune_dedup(&self, cutoff_ms: i64) -> Result<DedupPruneStep, StoreError>;
    /// One step of forgetting the objects' latest states whose retry window ended before
    /// `now_ms` (a copy of them would be a new event anyway). A pass repeats it until `done`.
    async fn prune_object_states(&self, now_ms: i64) -> Result<DedupPruneStep, StoreError>;
    /// One step of a quarantine retention pass: deletes the quarantined bodies last seen
    /// before `cutoff_ms` among the next `limit` rows after id `after_id` (in arrival order).
    async fn expire_quarantine(
        &self,
        cutoff_ms: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<ExpiredEvents, StoreError>;
}

/// The durable event store behind the webhook path: the ack path ([`Intake`]), the work after
/// the ack and the admin API's reads and actions.
#[async_trait::async_trait]
pub trait Store: Intake {
    /// One step of a retention pass: deletes the finished events received before `cutoff_ms`
    /// among the next `limit` events after `after_seq` (in arrival order), with their routing
    /// records. Events with a dead letter or work still waiting are kept.
    async fn expire_events(
        &self,
        cutoff_ms: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<ExpiredEvents, StoreError>;

    // --- The work after the ack (routing, delivery) ---
    //
    // Work is CLAIMED: an event, a delivery's next attempt or a plugin retry handed to this
    // process is handed to no other worker, in this process or (PostgreSQL) in another replica,
    // until its result is recorded or the claim is released. On PostgreSQL a claim is a lease
    // the store renews while the process lives; when a replica dies its claims run out and
    // another replica takes the work over. A result is recorded only while its claim is held.

    /// Woken when there may be new work to claim: after a commit on this process that created
    /// some, and (PostgreSQL) when another replica announces some. Claiming also polls.
    fn work_signal(&self) -> Arc<Notify>;
    /// Claims up to `limit` events waiting to be routed: new ones (oldest first) and those an
    /// operator asked to replay.
    async fn claim_events(&self, limit: u32) -> Result<Vec<ClaimedEvent>, StoreError>;
    /// Records what routing each claimed event (or claimed plugin retry) decided, all in one
    /// transaction, and ends those claims; returns after commit. A result whose claim this
    /// process no longer holds (its lease ran out and another replica took the work) is not
    /// written: the other replica's result stands.
    async fn complete(&self, processed: Arc<Vec<Processed>>) -> Result<(), StoreError>;
    /// Claims deliveries whose next attempt is due at `now_ms`, most overdue first.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// Records one retried attempt and the delivery's new state, and ends its claim (a lost
    /// claim writes nothing, as for `complete`).
    async fn record_attempt(&self, done: AttemptDone) -> Result<(), StoreError>;
    /// Claims route runs whose plugin stage is due for another try; `complete` ends them.
    async fn claim_due_route_runs(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueRouteRun>, StoreError>;
    /// Gives back every claim this process holds without a result, so other replicas can take
    /// the work at once instead of after the lease (at shutdown, after the drain).
    async fn release_claims(&self) -> Result<(), StoreError>;
    /// Queue depth and dead letters, for the gauges.
    async fn backlog(&self) -> Result<Backlog, StoreError>;
    /// Whether this process runs the cluster-wide jobs (retention, pruning, the backlog
    /// gauges) now: always with SQLite; with PostgreSQL, the one replica holding the leader
    /// lock, so they run once per cluster, not once per replica.
    fn runs_cluster_jobs(&self) -> bool;

    // --- The admin API ---

    /// Newest first, at most `limit`.
    async fn list_events(
        &self,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<EventSummary>, StoreError>;
    async fn event(&self, seq: i64) -> Result<Option<EventDetail>, StoreError>;
    /// The oldest and the newest stored event; `None` when there is none.
    async fn stored_span(&self) -> Result<Option<StoredSpan>, StoreError>;
    /// Quarantined bodies, newest first: of `source` if given, with an id below `before` if
    /// given, at most `limit`.
    async fn list_quarantine(
        &self,
        source: Option<String>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<QuarantineEntry>, StoreError>;
    /// Dead deliveries and dead route runs, newest first, at most `limit` of each.
    async fn dead_letters(
        &self,
        limit: u32,
    ) -> Result<(Vec<DeliveryView>, Vec<RouteRunView>), StoreError>;
    /// Every dead delivery grouped by destination and reason, with the amounts stuck there.
    async fn dead_letter_groups(&self) -> Result<Vec<DeadLetterGroup>, StoreError>;
    /// How many dead deliveries `filter` selects, and the highest id among them.
    async fn count_dead(&self, filter: DeadFilter) -> Result<(u64, Option<i64>), StoreError>;
    /// The ids of the next `limit` dead deliveries `filter` selects with an id above `after`
    /// and at most `through`, in id order.
    async fn dead_page(
        &self,
        filter: DeadFilter,
        after: i64,
        through: i64,
        limit: u32,
    ) -> Result<Vec<i64>, StoreError>;
    /// Marks the selected routed events for replay through the current routes (events not
    /// yet routed are left alone: they are on their way). Returns how many were marked.
    async fn request_replay(&self, filter: EventFilter, limit: u32) -> Result<u64, StoreError>;
    /// How many events `request_replay` with the same filter and limit would mark now (the
    /// console's dry run).
    async fn count_replay(&self, filter: EventFilter, limit: u32) -> Result<u64, StoreError>;
    /// Stores who replayed or redrove what (`record.id` is assigned).
    async fn record_audit(&self, record: AuditRecord) -> Result<(), StoreError>;
    /// Audit records, newest first, with an id below `before` if given, at most `limit`.
    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Sends dead letters back to work: deliveries get a fresh set of attempts now, route runs
    /// a fresh plugin retry. Returns how many. A redriven delivery to an ordered destination
    /// keeps its place: its subject's later deliveries still wait behind it.
    async fn redrive(&self, selection: RedriveSelection) -> Result<u64, StoreError>;
    /// The subjects of ordered destinations whose next delivery failed (dead and holding the
    /// subject, or waiting for its next attempt), with the delivery they wait behind; at most
    /// `limit`, by that delivery's id.
    async fn blocked_subjects(&self, limit: u32) -> Result<Vec<BlockedSubject>, StoreError>;
    /// Lets the subject a delivery holds go on without it: a dead one stops holding, a
    /// waiting one is dropped (recorded as skipped). Returns 1 when it did, 0 when the
    /// delivery holds nothing (delivered, unordered, not there).
    async fn skip_blocking(&self, delivery_id: i64) -> Result<u64, StoreError>;
}

/// Now as unix milliseconds.
pub(crate) fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
