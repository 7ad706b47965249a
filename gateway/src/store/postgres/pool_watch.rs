//! Watches the PostgreSQL connection pool for the people on call: about once a second it sets
//! the pool gauges (`gateway_store_pool_connections{state}`, `gateway_store_pool_waiting`) and
//! checks that the database answers, logging when it stops (at once, then a reminder every
//! [`REMINDER`] while it stays down, so an outage of hours is not thousands of lines) and when
//! it is back.
//!
//! The check is one `SELECT 1` on a pooled connection, and only when one can be had without
//! waiting: a pool whose connections are all busy is working, not unreachable, and the check
//! must never queue behind (or ahead of) an ack. This module never writes, and stops by itself
//! once the store is dropped (it holds the pool weakly).

use super::{PgPool, describe};
use crate::metrics::Metrics;
use crate::metrics::events::{StorePoolState, StoreReachable, StoreUnreachable};
use std::time::{Duration, Instant};

/// How often the gauges are set and the database checked.
const TICK: Duration = Duration::from_secs(1);
/// While the database stays unreachable, one more line this often.
const REMINDER: Duration = Duration::from_secs(60);

/// What the last checks found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Up,
    /// Since then; the last line about it was written at `reminded`.
    Down {
        since: Instant,
        reminded: Instant,
    },
}

/// Starts the watch on the current runtime.
pub(super) fn spawn(pool: &PgPool, metrics: Metrics, place: String) {
    let weak = pool.weak();
    tokio::spawn(async move {
        let mut reach = Reach::Up;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(pool) = weak.upgrade() else {
                return;
            };
            report_state(&pool, &metrics);
            if let Some(answer) = check(&pool).await {
                reach = next(reach, answer, &place, Instant::now());
            }
            drop(pool);
        }
    });
}

fn report_state(pool: &PgPool, metrics: &Metrics) {
    let status = pool.status();
    StorePoolState {
        metrics,
        idle: status.available,
        busy: status.size.saturating_sub(status.available),
        waiting: status.waiting,
    }
    .emit();
}

/// Whether the database answered: `None` when no connection was free to ask with (every one
/// busy: the pool is in use, which says nothing against the database).
async fn check(pool: &PgPool) -> Option<Result<(), String>> {
    let no_wait = deadpool_postgres::Timeouts {
        wait: Some(Duration::ZERO),
        ..pool.timeouts()
    };
    let client = match pool.timeout_get(&no_wait).await {
        Ok(client) => client,
        Err(deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => {
            return None;
        }
        Err(e) => return Some(Err(e.to_string())),
    };
    match client.simple_query("SELECT 1").await {
        Ok(_) => Some(Ok(())),
        Err(e) => {
            // Not back into the pool: a connection that failed a `SELECT 1` is broken.
            drop(deadpool_postgres::Object::take(client));
            Some(Err(describe(&e)))
        }
    }
}

/// The state after one check's `answer`, writing the line the change (or a long outage) is
/// worth.
fn next(reach: Reach, answer: Result<(), String>, place: &str, now: Instant) -> Reach {
    match (reach, answer) {
        (Reach::Up, Ok(())) => Reach::Up,
        (Reach::Up, Err(error)) => {
            StoreUnreachable {
                place,
                error: &error,
                down_for: Duration::ZERO,
            }
            .emit();
            Reach::Down {
                since: now,
                reminded: now,
            }
        }
        (Reach::Down { since, .. }, Ok(())) => {
            StoreReachable {
                place,
                down_for: now.saturating_duration_since(since),
            }
            .emit();
            Reach::Up
        }
        (Reach::Down { since, reminded }, Err(error)) => {
            if now.saturating_duration_since(reminded) < REMINDER {
                return Reach::Down { since, reminded };
            }
            StoreUnreachable {
                place,
                error: &error,
                down_for: now.saturating_duration_since(since),
            }
            .emit();
            Reach::Down {
                since,
                reminded: now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_line_then_a_reminder_a_minute_and_one_line_when_back() {
        let start = Instant::now();
        let down = next(Reach::Up, Err("refused".into()), "p", start);
        assert_eq!(
            down,
            Reach::Down {
                since: start,
                reminded: start
            }
        );
        // Within the minute: no new line (the reminder time stays).
        let later = start + Duration::from_secs(30);
        assert_eq!(next(down, Err("refused".into()), "p", later), down);
        let much_later = start + REMINDER + Duration::from_secs(1);
        assert_eq!(
            next(down, Err("refused".into()), "p", much_later),
            Reach::Down {
                since: start,
                reminded: much_later
            }
        );
        assert_eq!(next(down, Ok(()), "p", much_later), Reach::Up);
        assert_eq!(next(Reach::Up, Ok(()), "p", much_later), Reach::Up);
    }
}

#[cfg(test)]
mod with_a_database {
    use super::super::{PgOptions, PgStore};
    use crate::metrics::Metrics;
    use std::time::{Duration, Instant};
    use throwaway_pg::{Cluster, StopMode};

    /// A gauge's value in the rendered metrics.
    fn gauge(metrics: &Metrics, series: &str) -> Option<i64> {
        metrics.render().lines().find_map(|l| {
            let value = l.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// Polls until the idle-connection gauge satisfies `ok`, for at most 20 s.
    async fn idle_becomes(metrics: &Metrics, ok: impl Fn(i64) -> bool, what: &str) {
        gauge_becomes(metrics, "idle", ok, what).await;
    }

    /// Polls the pool gauge of `state` (the store's background tasks check connections out
    /// now and then, so a single reading may catch one busy).
    async fn gauge_becomes(metrics: &Metrics, state: &str, ok: impl Fn(i64) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let series = format!("gateway_store_pool_connections{{state=\"{state}\"}}");
        loop {
            let value = gauge(metrics, &series);
            if value.is_some_and(&ok) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {state} = {value:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_gauges_follow_the_database_and_every_connection_has_the_statement_timeout() {
        let pg = Cluster::start().expect("a throwaway PostgreSQL cluster");
        pg.create_database("gateway").expect("createdb");
        let metrics = Metrics::new().expect("metrics");
        let options = PgOptions {
            statement_timeout: Duration::from_millis(1234),
            ..PgOptions::default()
        };
        let store = PgStore::connect(&pg.conninfo("gateway"), &options, metrics.clone())
            .await
            .expect("connects");
        assert_eq!(store.session_setting("statement_timeout").await, "1234ms");
        idle_becomes(&metrics, |n| n >= 1, "a connection checked out and back").await;
        gauge_becomes(&metrics, "busy", |n| n == 0, "every connection back").await;
        assert_eq!(gauge(&metrics, "gateway_store_pool_waiting"), Some(0));
        // Down: each check takes a broken connection out of the pool, until none is left.
        pg.stop(StopMode::Immediate).expect("stops");
        idle_becomes(&metrics, |n| n == 0, "broken connections dropped").await;
        pg.start_again().expect("starts");
        idle_becomes(&metrics, |n| n >= 1, "a new connection once it is back").await;
        drop(store);
    }
}
