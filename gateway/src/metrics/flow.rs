//! Metrics of the work after the ack: routing, deliveries, the backlog, config reloads, and
//! what operators do through the admin API.
//! Names are part of the interface and live here; labels come from config names and fixed
//! result sets only.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

pub const DELIVERIES_TOTAL: &str = "gateway_deliveries_total";
pub const DELIVERY_DURATION: &str = "gateway_delivery_duration_seconds";
pub const ROUTED_EVENTS_TOTAL: &str = "gateway_routed_events_total";
pub const QUEUE_DEPTH: &str = "gateway_queue_depth";
pub const QUEUE_OLDEST_AGE: &str = "gateway_queue_oldest_age_seconds";
pub const DEAD_LETTERS: &str = "gateway_dead_letters";
pub const CONFIG_RELOADS_TOTAL: &str = "gateway_config_reloads_total";
pub const CONFIG_GENERATION: &str = "gateway_config_generation";
pub const ADMIN_REQUESTS_TOTAL: &str = "gateway_admin_requests_total";
pub const ADMIN_SIGN_INS_TOTAL: &str = "gateway_admin_sign_ins_total";
pub const ORDERING_BLOCKED_SUBJECTS: &str = "gateway_ordering_blocked_subjects";
pub const ORDERING_OLDEST_HELD_AGE: &str = "gateway_ordering_oldest_held_age_seconds";
pub const ORDERING_UNROUTED_HOLDS: &str = "gateway_ordering_unrouted_holds";

/// `result` of `gateway_deliveries_total`: one per attempt.
pub const DELIVERY_RESULTS: [&str; 3] = ["ok", "retry", "dead"];
/// `result` of `gateway_routed_events_total`: what routing made of an event.
pub const ROUTING_RESULTS: [&str; 5] = ["routed", "unrouted", "dropped", "retrying", "failed"];
/// `result` of `gateway_config_reloads_total`.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];
/// `action` of `gateway_admin_requests_total`: reads, the three that change what the workers
/// do (`skip`: an ordered subject's blocking delivery), and anything else (unknown endpoints,
/// wrong methods).
pub const ADMIN_ACTIONS: [&str; 5] = ["read", "replay", "redrive", "skip", "other"];
/// `result` of `gateway_admin_requests_total`.
pub const ADMIN_RESULTS: [&str; 4] = ["ok", "unauthorized", "rejected", "error"];
/// `result` of `gateway_admin_sign_ins_total`.
pub const SIGN_IN_RESULTS: [&str; 2] = ["ok", "failed"];

const DELIVERY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug)]
pub(super) struct Flow {
    pub(super) deliveries: IntCounterVec,
    pub(super) delivery_duration: HistogramVec,
    pub(super) routed: [IntCounter; 5],
    pub(super) queue_depth: IntGauge,
    pub(super) queue_oldest_age: Gauge,
    pub(super) dead_letters: IntGauge,
    pub(super) reloads: [IntCounter; 2],
    pub(super) generation: IntGauge,
    pub(super) admin_requests: IntCounterVec,
    pub(super) sign_ins: [IntCounter; 2],
    pub(super) blocked_subjects: IntGaugeVec,
    pub(super) oldest_held_age: GaugeVec,
    pub(super) unrouted_holds: IntGaugeVec,
}

impl Flow {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                DELIVERIES_TOTAL,
                "Delivery attempts, by destination and result (ok, retry, dead).",
            ),
            &["destination", "result"],
        )?;
        let delivery_duration = HistogramVec::new(
            HistogramOpts::new(
                DELIVERY_DURATION,
                "Time per delivery attempt, by destination.",
            )
            .buckets(DELIVERY_BUCKETS.to_vec()),
            &["destination"],
        )?;
        let routed_vec = IntCounterVec::new(
            Opts::new(
                ROUTED_EVENTS_TOTAL,
                "Events routed, by what routing made of them.",
            ),
            &["result"],
        )?;
        let queue_depth = IntGauge::new(
            QUEUE_DEPTH,
            "Events waiting to be routed plus deliveries and plugin stages waiting for a retry.",
        )?;
        let queue_oldest_age = Gauge::new(
            QUEUE_OLDEST_AGE,
            "Seconds the oldest due work has waited for a worker: since the oldest event not yet \
             routed arrived, or since a delivery or plugin stage became due for its retry; 0 when \
             nothing is due.",
        )?;
        let dead_letters = IntGauge::new(
            DEAD_LETTERS,
            "Dead deliveries plus dead plugin stages, waiting for an operator.",
        )?;
        let reloads_vec = IntCounterVec::new(
            Opts::new(CONFIG_RELOADS_TOTAL, "Config reloads, by result."),
            &["result"],
        )?;
        let generation = IntGauge::new(
            CONFIG_GENERATION,
            "Number of the config generation in use (1 at start, +1 per applied reload).",
        )?;
        let admin_requests = IntCounterVec::new(
            Opts::new(
                ADMIN_REQUESTS_TOTAL,
                "Admin API requests, by action (read, replay, redrive, other) and result (ok, unauthorized, rejected, error).",
            ),
            &["action", "result"],
        )?;
        let blocked_subjects = IntGaugeVec::new(
            Opts::new(
                ORDERING_BLOCKED_SUBJECTS,
                "Subjects of an ordered destination whose next delivery failed (dead and holding \
                 the subject, or waiting for its next attempt), by destination.",
            ),
            &["destination"],
        )?;
        let oldest_held_age = GaugeVec::new(
            Opts::new(
                ORDERING_OLDEST_HELD_AGE,
                "Seconds the oldest delivery waiting behind a failed one of its subject has \
                 waited, by ordered destination; 0 when none waits.",
            ),
            &["destination"],
        )?;
        let unrouted_holds = IntGaugeVec::new(
            Opts::new(
                ORDERING_UNROUTED_HOLDS,
                "Subjects of an ordered destination whose next delivery waits behind an earlier \
                 event of the subject that is not routed yet (stored by a replica that died, \
                 until its lease runs out, or waiting for a plugin retry), by destination.",
            ),
            &["destination"],
        )?;
        registry.register(Box::new(blocked_subjects.clone()))?;
        registry.register(Box::new(oldest_held_age.clone()))?;
        registry.register(Box::new(unrouted_holds.clone()))?;
        // Every series exists from the start, so a dashboard sees refusals as a rise from 0.
        for action in ADMIN_ACTIONS {
            for result in ADMIN_RESULTS {
                admin_requests.with_label_values(&[action, result]);
            }
        }
        let sign_ins_vec = IntCounterVec::new(
            Opts::new(
                ADMIN_SIGN_INS_TOTAL,
                "Console sign-ins (POST /admin/session), by result (ok, failed: no such token).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(sign_ins_vec.clone()))?;
        registry.register(Box::new(admin_requests.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(delivery_duration.clone()))?;
        registry.register(Box::new(routed_vec.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(queue_oldest_age.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(reloads_vec.clone()))?;
        registry.register(Box::new(generation.clone()))?;
        Ok(Self {
            deliveries,
            delivery_duration,
            routed: ROUTING_RESULTS.map(|r| routed_vec.with_label_values(&[r])),
            queue_depth,
            queue_oldest_age,
            dead_letters,
            reloads: RELOAD_RESULTS.map(|r| reloads_vec.with_label_values(&[r])),
            generation,
            admin_requests,
            sign_ins: SIGN_IN_RESULTS.map(|r| sign_ins_vec.with_label_values(&[r])),
            blocked_subjects,
            oldest_held_age,
            unrouted_holds,
        })
    }
}

/// Pre-resolved handles for one destination.
#[derive(Debug, Clone)]
pub struct DestinationMetrics {
    pub(super) results: [IntCounter; 3],
    pub(super) duration: Histogram,
}

impl Flow {
    pub(super) fn for_destination(&self, name: &str) -> DestinationMetrics {
        DestinationMetrics {
            results: DELIVERY_RESULTS.map(|r| self.deliveries.with_label_values(&[name, r])),
            duration: self.delivery_duration.with_label_values(&[name]),
        }
    }
}
