//! The wait between attempts: exponential backoff with "equal jitter", honouring `Retry-After`.
//!
//! Owns the formula only; it never sleeps and never counts attempts (the caller does both).

use crate::config::Backoff;
use rand::Rng as _;
use std::time::Duration;

/// Wait before the next attempt, after `attempts_made` attempts (1-based; 0 is treated as 1).
///
/// With `ceiling = min(max, initial * 2^(n-1))`, the wait is uniformly random in
/// `[ceiling / 2, ceiling]`: random so that deliveries failed by one outage do not all come back
/// at once, and never near zero so a retry storm cannot hit a struggling receiver. It is at
/// least `retry_after` (itself capped at `max`, so a receiver cannot park a delivery for days)
/// and never more than `max`. Large `attempts_made` saturate at `max` instead of overflowing.
pub fn next_wait(backoff: &Backoff, attempts_made: u32, retry_after: Option<Duration>) -> Duration {
    let doublings = attempts_made.saturating_sub(1);
    let ceiling = 1u32
        .checked_shl(doublings)
        .and_then(|factor| backoff.initial.checked_mul(factor))
        .map_or(backoff.max, |d| d.min(backoff.max));
    let jittered = uniform(ceiling / 2, ceiling);
    let floor = retry_after.map_or(Duration::ZERO, |d| d.min(backoff.max));
    jittered.max(floor)
}

/// A uniformly random duration in `[low, high]`, at nanosecond resolution.
fn uniform(low: Duration, high: Duration) -> Duration {
    // u64 nanoseconds cover 584 years; anything longer is clamped, which no config reaches.
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (low, high) = (nanos(low), nanos(high));
    if low >= high {
        return Duration::from_nanos(high);
    }
    Duration::from_nanos(rand::rng().random_range(low..=high))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    fn assert_within(d: Duration, low: Duration, high: Duration) {
        assert!(d >= low && d <= high, "{d:?} not in [{low:?}, {high:?}]");
    }

    #[test]
    fn grows_exponentially_with_equal_jitter() {
        for _ in 0..200 {
            assert_within(
                next_wait(&B, 0, None),
                Duration::from_millis(500),
                B.initial,
            );
            assert_within(
                next_wait(&B, 1, None),
                Duration::from_millis(500),
                B.initial,
            );
            assert_within(
                next_wait(&B, 2, None),
                Duration::from_secs(1),
                Duration::from_secs(2),
            );
            assert_within(
                next_wait(&B, 4, None),
                Duration::from_secs(4),
                Duration::from_secs(8),
            );
            // 2^6 = 64s is past max: capped, and jittered below the cap.
            assert_within(next_wait(&B, 7, None), Duration::from_secs(30), B.max);
        }
    }

    #[test]
    fn never_exceeds_max_and_never_overflows() {
        for n in [8, 31, 32, 33, 64, 1000, u32::MAX] {
            for _ in 0..50 {
                assert_within(next_wait(&B, n, None), Duration::from_secs(30), B.max);
            }
        }
        let huge = Backoff {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::MAX,
        };
        assert!(next_wait(&huge, 40, None) <= Duration::MAX);
    }

    #[test]
    fn honours_retry_after_capped_at_max() {
        for _ in 0..50 {
            assert_eq!(
                next_wait(&B, 1, Some(Duration::from_secs(7))),
                Duration::from_secs(7)
            );
            assert_eq!(next_wait(&B, 1, Some(Duration::from_secs(3600))), B.max);
            // A short Retry-After does not shorten the backoff.
            assert_within(
                next_wait(&B, 4, Some(Duration::from_secs(1))),
                Duration::from_secs(4),
                Duration::from_secs(8),
            );
        }
    }

    #[test]
    fn zero_settings_give_zero() {
        let zero = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(
            next_wait(&zero, 3, Some(Duration::from_secs(5))),
            Duration::ZERO
        );
    }

    #[test]
    fn is_actually_random() {
        let waits: std::collections::HashSet<_> = (0..20).map(|_| next_wait(&B, 5, None)).collect();
        assert!(waits.len() > 1);
    }
}
