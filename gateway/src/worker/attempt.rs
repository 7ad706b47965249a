//! One delivery attempt as the workers see it: send, then decide what the delivery's state is
//! (delivered, waiting for attempt n+1, or dead) from the destination's answer, the attempts
//! left and the backoff. Used for first attempts and retries alike.

use super::pipeline::Target;
use crate::delivery::{AttemptVerdict, Outgoing, next_wait};
use crate::metrics::flow_events::DeliveryAttempted;
use crate::store::{AttemptRecord, DeliveryState};

/// Sends one attempt. `attempts_before` counts the attempts already made.
pub(super) async fn attempt(
    target: &Target,
    webhook_id: &str,
    body: &str,
    attempts_before: u32,
) -> (AttemptRecord, DeliveryState) {
    let at = crate::store::unix_ms();
    let report = target
        .destination
        .attempt(&Outgoing {
            webhook_id,
            envelope_json: body,
        })
        .await;
    let made = attempts_before.saturating_add(1);
    let what = report
        .error
        .clone()
        .or_else(|| report.status.map(|s| format!("HTTP {s}")))
        .unwrap_or_else(|| "failed".to_owned());
    let state = match report.verdict {
        AttemptVerdict::Delivered => DeliveryState::Delivered,
        AttemptVerdict::Stop => DeliveryState::Dead {
            reason: format!("the destination refused it for good: {what}"),
        },
        AttemptVerdict::Retry if made >= target.settings.max_attempts => DeliveryState::Dead {
            reason: format!("gave up after {made} attempts; last: {what}"),
        },
        AttemptVerdict::Retry => {
            let wait = next_wait(&target.settings.backoff, made, report.retry_after);
            DeliveryState::Pending {
                next_attempt_ms: crate::store::unix_ms()
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
            }
        }
    };
    DeliveryAttempted {
        metrics: &target.metrics,
        destination: &target.settings.name,
        webhook_id,
        result: match state {
            DeliveryState::Delivered => "ok",
            DeliveryState::Pending { .. } => "retry",
            DeliveryState::Dead { .. } => "dead",
            DeliveryState::Dropped { .. } => "dropped",
        },
        attempt: made,
        status: report.status,
        error: report.error.as_deref(),
        elapsed: report.elapsed,
    }
    .emit();
    let record = AttemptRecord {
        at,
        status: report.status,
        error: report.error,
        duration_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
    };
    (record, state)
}
