//! Operator consoles open on the overview during a phase (`loadgen ingest --consoles N`): each
//! polls `GET /admin/overview` every 5 s as the page does (its refresh), the first poll of each
//! at its own offset in the period so N consoles spread over it, on a keep-alive connection of
//! its own, with the admin token as a bearer. What they cost the ack is measured by running
//! the same open-loop phase alternately without and with them (see ingest.rs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The console's own refresh period (pages.js: `refreshEvery(5000, ...)`).
const PERIOD: Duration = Duration::from_secs(5);

/// The admin token the gateway's config names (`[admin] token = "env:..."`).
pub(crate) const ADMIN_TOKEN_ENV: &str = "LOADGEN_ADMIN_TOKEN";
pub(crate) const ADMIN_TOKEN: &str = "loadgen-console-token-0123456789";

/// Consoles polling until dropped; counts the overviews answered 200.
pub(crate) struct Consoles {
    tasks: Vec<JoinHandle<()>>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Consoles {
    pub(crate) fn open(addr: SocketAddr, n: u16) -> Self {
        Self::open_every(addr, n, PERIOD)
    }

    fn open_every(addr: SocketAddr, n: u16, period: Duration) -> Self {
        let answered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|i| {
                let offset = period.mul_f64(f64::from(i) / f64::from(n.max(1)));
                let (answered, failed) = (Arc::clone(&answered), Arc::clone(&failed));
                tokio::spawn(async move {
                    tokio::time::sleep(offset).await;
                    let mut ticks = tokio::time::interval(period);
                    let mut conn = None;
                    loop {
                        ticks.tick().await;
                        match poll(addr, &mut conn).await {
                            Ok(true) => answered.fetch_add(1, Ordering::Relaxed),
                            _ => {
                                conn = None;
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            tasks,
            answered,
            failed,
        }
    }

    /// Stops polling; (overviews answered 200, failed polls).
    pub(crate) fn close(self) -> (u64, u64) {
        for t in &self.tasks {
            t.abort();
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// One overview request on the console's connection (opened when there is none); whether it
/// was answered 200. The answer is read whole (Content-Length), as the page reads it.
async fn poll(addr: SocketAddr, conn: &mut Option<TcpStream>) -> anyhow::Result<bool> {
    if conn.is_none() {
        *conn = Some(TcpStream::connect(addr).await?);
    }
    let Some(stream) = conn.as_mut() else {
        anyhow::bail!("no connection");
    };
    let request = format!(
        "GET /admin/overview HTTP/1.1\r\nHost: loadgen\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(stream.read(&mut byte).await? == 1, "closed");
        head.push(byte[0]);
        anyhow::ensure!(head.len() < 16 * 1024, "head too long");
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(head.starts_with("http/1.1 200"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Instant;
    use tokio::net::TcpListener;

    /// Each console keeps its own connection and asks for the overview with the token, over
    /// and over; the answers are counted.
    #[tokio::test]
    async fn consoles_poll_the_overview_each_on_its_own_connection() -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(std::sync::Mutex::new(Vec::<(SocketAddr, String)>::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut stream, peer)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut byte = [0u8; 1];
                    while stream.read(&mut byte).await.unwrap_or(0) == 1 {
                        buf.push(byte[0]);
                        if buf.ends_with(b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf).into_owned();
                            log.lock().map(|mut l| l.push((peer, head))).ok();
                            buf.clear();
                            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        let consoles = Consoles::open_every(addr, 3, Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_secs(10);
        // A console sends its next poll only once the last one was answered, so with 12 polls
        // seen at least 9 answers have arrived whatever poll each console is in.
        loop {
            let n = seen.lock().map(|l| l.len()).unwrap_or(0);
            if n >= 12 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "only {n} polls");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (answered, failed) = consoles.close();
        let seen = seen.lock().map(|l| l.clone()).unwrap_or_default();
        assert!(
            answered >= 9 && failed == 0,
            "{answered} answered, {failed} failed"
        );
        let peers: HashSet<SocketAddr> = seen.iter().map(|(p, _)| *p).collect();
        assert_eq!(peers.len(), 3, "one connection per console");
        for (_, head) in &seen {
            assert!(
                head.starts_with("GET /admin/overview HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(
                head.contains(&format!("Authorization: Bearer {ADMIN_TOKEN}")),
                "{head}"
            );
        }
        Ok(())
    }
}
