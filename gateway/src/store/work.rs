//! What the stages after the ack read from and write to the store: stored events waiting to be
//! routed, what routing one event decided ([`Processed`]), deliveries and their attempts, route
//! runs waiting for a plugin retry, and the admin API's views of all of them.
//!
//! These are plain values; the store decides how they are laid out on disk.

use super::stuck_amount::StuckAmount;
use serde::{Deserialize, Serialize};

/// An event as the workers take it from the store.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    /// The envelope's id (= dedup key).
    pub id: String,
    pub source: String,
    pub event_type: String,
    /// CloudEvents structured JSON, as stored at ingest.
    pub envelope: String,
}

/// An event claimed for routing.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub event: StoredEvent,
    /// An operator asked for it to go through the current routes again (it was routed
    /// before): its plugin steps are added to its history instead of replacing it.
    pub replay: bool,
}

/// Where an event stands after the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored, not yet routed.
    Pending,
    /// Asked to go through the current routes again (admin replay).
    Replay,
    /// At least one delivery was created.
    Routed,
    /// No route matched.
    Unrouted,
    /// Every matching route's plugins dropped it.
    Dropped,
    /// A route's plugin stage waits for a retry.
    Retrying,
    /// A route's plugin stage failed for good (a dead letter).
    Failed,
}

impl EventStatus {
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Replay,
        Self::Routed,
        Self::Unrouted,
        Self::Dropped,
        Self::Retrying,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Replay => "replay",
            Self::Routed => "routed",
            Self::Unrouted => "unrouted",
            Self::Dropped => "dropped",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One plugin call in one route's chain, kept with the event for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStep {
    pub route: String,
    pub plugin: String,
    /// pass, drop, emit, retry, fatal, trap or timeout.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub micros: u64,
}

/// One delivery attempt, kept in the delivery's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Unix milliseconds when the attempt started.
    pub at: i64,
    /// The HTTP status, if an answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    Delivered,
    /// Waiting for its next attempt at this unix millisecond.
    Pending {
        next_attempt_ms: i64,
    },
    /// No more attempts: a dead letter, with why.
    Dead {
        reason: String,
    },
    /// Not delivered on purpose, with why (an ordered destination's stale event with
    /// `stale = "drop"`); not a dead letter.
    Dropped {
        reason: String,
    },
}

/// The `deliveries` columns a state is stored as, on both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryStateColumns {
    /// pending, delivered, dead or dropped.
    pub(crate) status: &'static str,
    pub(crate) next_attempt_at: Option<i64>,
    /// What `last_error` becomes: the dead letter's reason, or what the last attempt of a
    /// pending delivery got (its error, else its HTTP status); `None` keeps what is there.
    pub(crate) last_error: Option<String>,
}

impl DeliveryState {
    /// How this state is stored, `last` being the latest attempt made.
    pub(crate) fn columns(&self, last: Option<&AttemptRecord>) -> DeliveryStateColumns {
        let (status, next_attempt_at, last_error) = match self {
            Self::Delivered => ("delivered", None, None),
            Self::Pending { next_attempt_ms } => (
                "pending",
                Some(*next_attempt_ms),
                last.and_then(|a| {
                    a.error
                        .clone()
                        .or_else(|| a.status.map(|s| format!("HTTP {s}")))
                }),
            ),
            Self::Dead { reason } => ("dead", None, Some(reason.clone())),
            Self::Dropped { reason } => ("dropped", None, Some(reason.clone())),
        };
        DeliveryStateColumns {
            status,
            next_attempt_at,
            last_error,
        }
    }
}

/// A delivery created by routing one event.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub route: String,
    pub destination: String,
    /// `webhook-id` header: the delivered envelope's id, the same on every attempt.
    pub webhook_id: String,
    /// What is delivered; `None` when it is the stored event's envelope unchanged.
    pub envelope: Option<String>,
    pub state: DeliveryState,
    /// Attempts already made (the first one runs before the delivery is recorded, except to
    /// an ordered destination, where the claim decides when it may run).
    pub attempts: Vec<AttemptRecord>,
    /// Where it stands among its subject's deliveries to an ordered destination; `None`:
    /// delivered on its own.
    pub order: Option<DeliveryOrder>,
    /// When `state` is dead: the amount of what it would send ([`StuckAmount::if_dead`]).
    pub stuck: Option<StuckAmount>,
}

/// The ordering key of a delivery to a destination with `ordering = "subject"`: of two
/// deliveries of one subject to one destination, the one with the smaller
/// (`provider_ms`, `provider_next_ms`, event seq, delivery id) goes first, and none is claimed
/// while an earlier one is waiting, in flight, or dead and holding the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOrder {
    /// The envelope's `subject` (the object the event is about).
    pub subject: String,
    /// The provider's time (the envelope's `time`), unix ms; 0 when it gave none, so the
    /// subject's events go in arrival order.
    pub provider_ms: i64,
    /// A second provider time that breaks ties of the first (`data.updatedAt`); 0 when absent.
    pub provider_next_ms: i64,
}

/// The plugin stage of one route on one event that did not finish: waiting for a retry, dead,
/// or (when a retry succeeds) done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRunState {
    Retry { next_attempt_ms: i64 },
    Dead,
    Done,
}

#[derive(Debug, Clone)]
pub struct RouteRunUpdate {
    /// The run being updated; `None` creates one.
    pub id: Option<i64>,
    pub route: String,
    pub state: RouteRunState,
    pub reason: String,
    /// Plugin-stage attempts made so far.
    pub attempts: u32,
}

/// Everything routing one event (or retrying one route on it) decided, written in ONE
/// transaction so a crash either keeps all of it or none (and the event is routed again).
#[derive(Debug, Clone)]
pub struct Processed {
    pub seq: i64,
    /// The event's new status; for a route-run retry the store derives it from all runs.
    pub status: EventStatus,
    pub steps: Vec<PluginStep>,
    pub deliveries: Vec<NewDelivery>,
    pub route_runs: Vec<RouteRunUpdate>,
    /// A replay or a route-run retry: add `steps` to the event's history instead of setting it.
    pub append: bool,
}

/// A delivery whose next attempt is due.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub event_seq: i64,
    pub route: String,
    pub destination: String,
    pub webhook_id: String,
    /// The envelope to send (the event's own when the delivery stored none).
    pub envelope: String,
    pub attempts: u32,
    /// An ordered delivery older than one of its subject already delivered to its
    /// destination (it arrived too late for the reorder window).
    pub stale: bool,
}

/// A route run whose plugin stage is due for another try, with its event.
#[derive(Debug, Clone)]
pub struct DueRouteRun {
    pub id: i64,
    pub route: String,
    pub attempts: u32,
    pub event: StoredEvent,
}

/// The outcome of one retried delivery attempt.
#[derive(Debug, Clone)]
pub struct AttemptDone {
    pub delivery_id: i64,
    pub attempt: AttemptRecord,
    pub state: DeliveryState,
    /// When `state` is dead and the delivery is ordered: its subject stays blocked until an
    /// operator redrives or skips it (`on_dead = "hold"`).
    pub holds_subject: bool,
    /// When `state` is dead: the amount of what it would send ([`StuckAmount::if_dead`]).
    pub stuck: Option<StuckAmount>,
}

/// A subject of an ordered destination whose deliveries wait behind one that failed (a dead
/// letter holding it, `on_dead = "hold"`, or a delivery waiting for its next attempt), or
/// behind an earlier event of the subject that is not routed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedSubject {
    pub destination: String,
    pub subject: String,
    /// The delivery everything else of the subject waits behind; `None` when it waits behind
    /// an event not routed yet (`event_seq`).
    pub delivery_id: Option<i64>,
    pub event_seq: i64,
    /// `dead` (held until a redrive or a skip), `pending` (failing, retrying), `unrouted`
    /// (stored, not routed yet: on PostgreSQL, possibly by a replica that died, until its
    /// lease runs out) or `plugin_retry` (its routing waits for a plugin retry).
    pub status: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Deliveries of the subject waiting behind it.
    pub waiting: u64,
    /// When the oldest of them was created (unix ms).
    pub oldest_waiting_since: Option<i64>,
}

/// Which events an admin listing or replay selects. No field set selects all; a time or seq
/// bound selects all too when it lies outside what is stored (see [`StoredSpan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Exactly this event.
    pub seq: Option<i64>,
    pub source: Option<String>,
    /// An exact type, or a glob (`payment.*`: `*` stands for any run of characters).
    pub event_type: Option<String>,
    /// The provider's event id (the envelope's `id`, which is the dedup key).
    pub id: Option<String>,
    /// The envelope's `subject`, exactly (the object the event is about).
    pub subject: Option<String>,
    pub status: Option<EventStatus>,
    /// Received at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Received before (unix ms).
    pub until_ms: Option<i64>,
    /// Only events with a smaller seq (pagination: newest first).
    pub before_seq: Option<i64>,
}

/// The oldest and the newest stored event (by seq): whether a time or seq bound excludes any
/// stored event can be told from them without reading the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSpan {
    pub oldest_seq: i64,
    /// Unix ms.
    pub oldest_received_at: i64,
    pub newest_seq: i64,
    /// Unix ms.
    pub newest_received_at: i64,
}

/// An authenticated body that could not be normalized, as the admin API shows it. The body is
/// given as text when it is UTF-8 (most are: JSON with a syntax error) and always as base64,
/// so what was received can be looked at exactly. The same body sent again by the same source
/// is one entry: `repeats` counts its arrivals, `received_at` is the first (with its reason and
/// headers), `last_seen_at` the latest.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineEntry {
    pub id: i64,
    pub source: String,
    pub reason: String,
    pub received_at: i64,
    pub repeats: i64,
    pub last_seen_at: i64,
    pub size: usize,
    pub headers: serde_json::Value,
    pub body_text: Option<String>,
    pub body_base64: String,
}

/// An event in an admin listing.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub seq: i64,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: String,
    pub received_at: i64,
    /// The payload's amount and currency, when it has an amount (for people, not decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// One event with everything that happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub summary: EventSummary,
    pub envelope: serde_json::Value,
    pub headers: serde_json::Value,
    pub plugin_results: Vec<PluginStep>,
    pub deliveries: Vec<DeliveryView>,
    pub route_runs: Vec<RouteRunView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub event_seq: i64,
    pub route: String,
    pub destination: String,
    pub webhook_id: String,
    pub status: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub history: Vec<AttemptRecord>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteRunView {
    pub id: i64,
    pub event_seq: i64,
    pub route: String,
    pub status: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    pub reason: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a redrive sends back to work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveSelection {
    /// Every dead delivery and every dead route run.
    All,
    /// These dead deliveries.
    Deliveries(Vec<i64>),
    /// These dead route runs.
    RouteRuns(Vec<i64>),
    /// Every route run waiting for its retry: due now (a new config generation may have fixed
    /// what they wait for). Their attempt counts stay.
    WaitingRouteRuns,
}

/// Counts for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Events stored but not yet routed (incl. replays) plus deliveries and route runs
    /// waiting for a retry.
    pub queue_depth: u64,
    /// Dead deliveries plus dead route runs.
    pub dead_letters: u64,
    /// When the work that has waited longest became due (unix ms): the arrival of the oldest
    /// event not yet routed, or the earliest next attempt of a delivery or route run waiting
    /// for a retry (possibly in the future). Replays are not included: nothing records when
    /// they were asked for. `None`: nothing waits.
    pub first_due_at_ms: Option<i64>,
}

/// One replay or redrive an operator asked for (`GET /admin/audit`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    /// Assigned by the store (0 when recording).
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// The admin token's name.
    pub actor: String,
    /// `replay` or `redrive`.
    pub action: String,
    /// What was selected: the filter, or the event, delivery or route run.
    pub selection: String,
    /// How many events or dead letters it marked.
    pub count: u64,
}
