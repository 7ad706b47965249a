//! Closed loop, for the maximum rate: N keep-alive connections, each sending its next request as
//! soon as the previous one is answered, until the deadline. Latency is response time minus
//! actual send time (there is no schedule to fall behind). Also serves as the warm-up. With
//! `track`, the id and send time of every accepted event are kept (`loadgen e2e`). Given several
//! addresses (replicas), connection i goes to address i mod n, as a load balancer would spread
//! them.

use crate::client::Connection;
use crate::signing::EventSource;
use crate::stats::Stats;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Pause after a failed connect, so a dead server is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

pub(crate) async fn run(
    addrs: &[SocketAddr],
    sources: Vec<EventSource>,
    duration: Duration,
    track: bool,
) -> anyhow::Result<Stats> {
    anyhow::ensure!(!addrs.is_empty(), "no server address to send to");
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::with_capacity(sources.len());
    for (source, &addr) in sources.into_iter().zip(addrs.iter().cycle()) {
        tasks.push(tokio::spawn(connection(addr, source, until, track)));
    }
    let mut total = Stats::tracking(track)?;
    for task in tasks {
        total.merge(task.await??);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

async fn connection(
    addr: SocketAddr,
    mut source: EventSource,
    until: Instant,
    track: bool,
) -> anyhow::Result<Stats> {
    let mut stats = Stats::tracking(track)?;
    let mut conn: Option<Connection> = None;
    while Instant::now() < until {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    stats.error("connect", &e);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let d = source.next_delivery();
        let sent = Instant::now();
        match c.send(&d).await {
            Ok(answer) => {
                stats.record_sent(answer, d.repeat, &d.id, sent.into_std(), sent.elapsed());
            }
            Err(e) => {
                stats.error("request", &e);
                conn = None;
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::EventStreams;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::collections::HashSet;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// Answers like the gateway: the first delivery of an event id is accepted, a repeat is
    /// a duplicate.
    async fn fake_gateway() -> anyhow::Result<SocketAddr> {
        Ok(counted_gateway().await?.0)
    }

    /// A fake gateway and the number of requests it has answered.
    async fn counted_gateway() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let answered = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&answered);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                let counter = Arc::clone(&counter);
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let id = req.headers().get("x-ledger-event-id").cloned();
                    let new = id.is_some_and(|id| seen.lock().is_ok_and(|mut s| s.insert(id)));
                    let body: &'static [u8] = if new {
                        br#"{"ok":true}"#
                    } else {
                        br#"{"ok":true,"duplicate":true}"#
                    };
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            body,
                        ))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Ok((addr, answered))
    }

    #[tokio::test]
    async fn counts_accepted_and_duplicates_separately() -> anyhow::Result<()> {
        let addr = fake_gateway().await?;
        let mut streams = EventStreams::new(0.25, 0)?;
        let sources = (0..8).map(|_| streams.take()).collect();
        let stats = run(&[addr], sources, Duration::from_millis(300), true).await?;
        assert!(stats.accepted > 100, "{}", stats.accepted);
        assert!(stats.duplicate > 10, "{}", stats.duplicate);
        assert_eq!(stats.duplicate, stats.repeats_sent);
        assert_eq!((stats.non_200, stats.errors), (0, 0));
        let acked = stats.acked.unwrap_or_default();
        assert_eq!(acked.len() as u64, stats.accepted);
        let ids: HashSet<_> = acked.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids.len(), acked.len());
        Ok(())
    }

    #[tokio::test]
    async fn connections_are_spread_over_every_replica() -> anyhow::Result<()> {
        let (one, one_answered) = counted_gateway().await?;
        let (two, two_answered) = counted_gateway().await?;
        let mut streams = EventStreams::new(0.0, 0)?;
        let sources = (0..4).map(|_| streams.take()).collect();
        let stats = run(&[one, two], sources, Duration::from_millis(300), false).await?;
        let (a, b) = (
            one_answered.load(Ordering::Relaxed),
            two_answered.load(Ordering::Relaxed),
        );
        assert_eq!(a + b, stats.accepted);
        // Two connections each: neither replica can get much less than half.
        assert!(a > stats.accepted / 4 && b > stats.accepted / 4, "{a} {b}");
        Ok(())
    }

    #[tokio::test]
    async fn a_dead_server_is_counted_not_fatal() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        drop(listener);
        let sources = vec![EventStreams::new(0.0, 0)?.take()];
        let stats = run(&[addr], sources, Duration::from_millis(100), false).await?;
        assert!(stats.errors > 0 && stats.accepted == 0);
        assert!(stats.sample_error.is_some_and(|e| e.starts_with("connect")));
        Ok(())
    }
}
