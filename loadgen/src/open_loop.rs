//! Open loop, for latency at a fixed rate: request k is due at `start + k / rate`, whatever the
//! server did with the earlier ones. A dispatcher thread keeps the schedule (std sleeps are far
//! finer than tokio's 1 ms timer) and hands each due request to a free connection; if none is
//! free it waits for one. Latency is response time minus the INTENDED send time, so timer
//! lateness, waiting for a connection and queueing in the server all count (no coordinated
//! omission). The connections themselves run on the generator's tokio runtime. With `track`,
//! the id and intended send time of every accepted event are kept (`loadgen e2e`). Given several
//! addresses (replicas), connection i goes to address i mod n.

use crate::client::Connection;
use crate::signing::EventSource;
use crate::stats::Stats;
use anyhow::Context as _;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// How the schedule was kept: what the generator itself added to the measured latency.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub(crate) scheduled: u64,
    /// Due requests that found every connection busy and waited for one.
    pub(crate) waited: u64,
    /// From intended send time to hand-over to a connection, in microseconds.
    pub(crate) lag: Histogram<u64>,
}

pub(crate) async fn run(
    addrs: &[SocketAddr],
    sources: Vec<EventSource>,
    rate: f64,
    duration: Duration,
    track: bool,
) -> anyhow::Result<(Stats, Dispatch)> {
    anyhow::ensure!(!addrs.is_empty(), "no server address to send to");
    anyhow::ensure!(
        rate >= 1.0,
        "open-loop rate {rate:.1}/s is too low to schedule"
    );
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<usize>();
    let mut work = Vec::with_capacity(sources.len());
    let mut tasks = Vec::with_capacity(sources.len());
    for (i, (source, &addr)) in sources.into_iter().zip(addrs.iter().cycle()).enumerate() {
        let conn = Connection::open(addr).await?;
        let (tx, rx) = mpsc::channel(1);
        work.push(tx);
        idle_tx.send(i)?;
        tasks.push(tokio::spawn(worker(
            i,
            addr,
            conn,
            source,
            rx,
            idle_tx.clone(),
            track,
        )));
    }
    drop(idle_tx);
    let start = Instant::now() + Duration::from_millis(5);
    // The schedule keeper blocks in std sleeps: a thread of its own, off the runtime.
    let pacer =
        tokio::task::spawn_blocking(move || dispatch(start, rate, total, &work, &mut idle_rx));
    let mut stats = Stats::tracking(track)?;
    for task in tasks {
        stats.merge(task.await??);
    }
    stats.elapsed = start.elapsed();
    let dispatch = pacer.await.context("the dispatcher failed")??;
    Ok((stats, dispatch))
}

/// Keeps the schedule. Returning drops the work senders, which ends the workers.
fn dispatch(
    start: Instant,
    rate: f64,
    total: u64,
    work: &[mpsc::Sender<Instant>],
    idle: &mut mpsc::UnboundedReceiver<usize>,
) -> anyhow::Result<Dispatch> {
    let mut d = Dispatch {
        scheduled: 0,
        waited: 0,
        lag: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    let period_ns = 1e9 / rate;
    for k in 0..total {
        let intended = start + Duration::from_nanos((k as f64 * period_ns) as u64);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let free = match idle.try_recv() {
            Ok(i) => i,
            Err(TryRecvError::Empty) => {
                d.waited += 1;
                match idle.blocking_recv() {
                    Some(i) => i,
                    None => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let lag = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX);
        d.lag.saturating_record(lag.max(1));
        // A connection that reported itself free has taken its previous job: the slot is empty.
        if let Some(tx) = work.get(free)
            && tx.try_send(intended).is_ok()
        {
            d.scheduled += 1;
        }
    }
    Ok(d)
}

/// One connection: sends each job it is handed, then reports itself free.
async fn worker(
    me: usize,
    addr: SocketAddr,
    conn: Connection,
    mut source: EventSource,
    mut jobs: mpsc::Receiver<Instant>,
    idle: mpsc::UnboundedSender<usize>,
    track: bool,
) -> anyhow::Result<Stats> {
    let mut stats = Stats::tracking(track)?;
    let mut conn = Some(conn);
    while let Some(intended) = jobs.recv().await {
        let c = match conn.as_mut() {
            Some(c) => Some(c),
            None => match Connection::open(addr).await {
                Ok(c) => Some(conn.insert(c)),
                Err(e) => {
                    stats.error("connect", &e);
                    None
                }
            },
        };
        if let Some(c) = c {
            let d = source.next_delivery();
            match c.send(&d).await {
                Ok(answer) => {
                    stats.record_sent(answer, d.repeat, &d.id, intended, intended.elapsed());
                }
                Err(e) => {
                    stats.error("request", &e);
                    conn = None;
                }
            }
        }
        if idle.send(me).is_err() {
            break;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::EventStreams;

    #[tokio::test]
    async fn keeps_the_schedule_and_answers_every_request() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(crate::bare::accept_loop(listener));
        let mut streams = EventStreams::new(0.2, 0)?;
        let sources = (0..4).map(|_| streams.take()).collect();
        let (stats, dispatch) =
            run(&[addr], sources, 2000.0, Duration::from_millis(500), true).await?;
        assert_eq!(dispatch.scheduled, 1000);
        assert_eq!((stats.accepted, stats.non_200, stats.errors), (1000, 0, 0));
        assert!(stats.repeats_sent > 100, "{}", stats.repeats_sent);
        // The last request is due at 499.5 ms: the phase cannot end before.
        assert!(
            stats.elapsed >= Duration::from_millis(499),
            "{:?}",
            stats.elapsed
        );
        assert!(stats.latency.len() == 1000 && stats.latency.min() >= 1);
        // Repeats are answered 200 by the bare server too: every answer counts as accepted.
        assert_eq!(stats.acked.map(|a| a.len()), Some(1000));
        Ok(())
    }
}
