//! `loadgen stall`: the unauthenticated memory attack of issue 20 (item 4), reproducible. Starts
//! the gateway, then opens `--connections` connections at once, each sending the head of a
//! `POST /webhooks/ledger` that declares a body of `--body-size` bytes and then all of that body
//! but its last KiB, and stalls: the request never completes, so whatever the gateway keeps of
//! it stays until its `request_timeout`. The signature header reads well and is current but is
//! no one's signature (anyone can send it), or with `--unsigned` there is none.
//!
//! Prints the gateway's resident memory before the attack and its peak (`VmHWM` of
//! `/proc/PID/status`) after holding the connections for `--hold`, what the connections got
//! (answers by status, closes, still open), and whether a correctly signed delivery is accepted
//! once the attack is over. Linux only (it reads `/proc`).

use crate::child::Server;
use crate::cli::StallArgs;
use crate::ingest::{StoreKind, base_config, gateway_command};
use crate::signing::EventStreams;
use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

/// How much of the declared body each connection leaves unsent, so it never completes.
const UNSENT: usize = 1024;
/// Connections being opened at once (the kernel's accept queue is finite).
const CONNECTING: usize = 128;
/// File descriptors loadgen needs beside its connections.
const SPARE_FDS: u64 = 64;

/// What one attacking connection saw by the end of the hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// The gateway answered with this status (and closed, or not).
    Answered(u16),
    /// Closed or reset without an answer.
    Closed,
    /// Still open, unanswered: the gateway holds it.
    Open,
    /// Still connecting at the end of the hold (the gateway's accept queue was full).
    Connecting,
    /// Could not connect.
    NoConnection(String),
}

pub(crate) async fn run(args: StallArgs) -> anyhow::Result<()> {
    let connections = usize::try_from(args.connections).context("too many connections")?;
    check_fd_limit(connections)?;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| exe.with_file_name("gateway"));
    anyhow::ensure!(
        gateway.is_file(),
        "no gateway binary at {} (run `cargo build --release -p gateway -p loadgen` first, or pass --gateway PATH)",
        gateway.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("loadgen-stall-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let config = write_config(dir.path(), &args)?;
    let server = Server::start(
        "gateway",
        gateway_command(&gateway, &config),
        &dir.path().join("gateway.log"),
    )?;
    let pid = server.pid();
    let addr = server.addr;

    // One genuine delivery first, so the baseline includes a warm request path and store.
    genuine(addr)
        .await
        .context("the gateway refused a genuine delivery before the attack")?;
    let before = memory(pid)?;
    eprintln!(
        "gateway {pid} on {addr}: VmRSS {} before the attack; {} connections, each a {}-byte body \
         declared and {} sent, {}",
        mib(before.rss),
        args.connections,
        args.body_size,
        args.body_size.saturating_sub(UNSENT),
        if args.unsigned {
            "no signature header"
        } else {
            "a made-up current signature"
        }
    );

    let started = Instant::now();
    let hold_until = tokio::time::Instant::now() + args.hold;
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let attack: Vec<_> = (0..connections)
        .map(|_| {
            let connecting = Arc::clone(&connecting);
            let (body_size, unsigned) = (args.body_size, args.unsigned);
            tokio::spawn(
                async move { stall(addr, body_size, unsigned, connecting, hold_until).await },
            )
        })
        .collect();
    let mut peak_rss = before.rss;
    let mut sampler = tokio::time::interval(Duration::from_millis(100));
    while tokio::time::Instant::now() < hold_until {
        sampler.tick().await;
        peak_rss = peak_rss.max(memory(pid)?.rss);
    }
    let mut fates: BTreeMap<Fate, usize> = BTreeMap::new();
    for task in attack {
        let fate = task
            .await
            .unwrap_or_else(|e| Fate::NoConnection(e.to_string()));
        *fates.entry(fate).or_default() += 1;
    }
    let during = memory(pid)?;
    let held = started.elapsed();

    let after_ok = genuine(addr).await;
    let log_tail = server.log_tail();
    let stopped = server.stop();

    println!(
        "loadgen stall: {} connections x {}-byte bodies, held {held:.1?}",
        args.connections, args.body_size
    );
    println!("  gateway VmRSS before:          {}", mib(before.rss));
    println!("  gateway VmRSS at the end:      {}", mib(during.rss));
    println!(
        "  gateway peak RSS (VmHWM):      {}  (sampled VmRSS peak {})",
        mib(during.hwm),
        mib(peak_rss)
    );
    println!("  connections:");
    for (fate, n) in &fates {
        let what = match fate {
            Fate::Answered(status) => format!("answered {status}"),
            Fate::Closed => "closed without an answer".to_owned(),
            Fate::Open => "still open, unanswered (held by the gateway)".to_owned(),
            Fate::Connecting => "still connecting (the accept queue was full)".to_owned(),
            Fate::NoConnection(e) => format!("could not connect: {e}"),
        };
        println!("    {n:>6}  {what}");
    }
    match &after_ok {
        Ok(()) => println!("  a genuine signed delivery after the attack: accepted"),
        Err(e) => println!("  a genuine signed delivery after the attack: FAILED: {e:#}"),
    }
    match stopped {
        Ok((status, took)) => println!("  gateway stopped ({status}) in {took:.1?}"),
        Err(e) => println!("  gateway stop: {e:#}{log_tail}"),
    }
    after_ok
}

/// One attacking connection: head, most of the body, then nothing until `hold_until`.
async fn stall(
    addr: SocketAddr,
    body_size: usize,
    unsigned: bool,
    connecting: Arc<Semaphore>,
    hold_until: tokio::time::Instant,
) -> Fate {
    let permit = connecting.acquire_owned().await;
    let connect = tokio::net::TcpStream::connect(addr);
    let stream = match tokio::time::timeout_at(hold_until, connect).await {
        Err(_) => return Fate::Connecting,
        Ok(Err(e)) => return Fate::NoConnection(e.kind().to_string()),
        Ok(Ok(s)) => s,
    };
    drop(permit);
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!(
        "POST /webhooks/ledger HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {body_size}\r\n"
    );
    if !unsigned {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        head.push_str(&format!(
            "X-Ledger-Signature: t={t},v1={}\r\n",
            "ab".repeat(32)
        ));
    }
    head.push_str("\r\n");
    let body = vec![b' '; body_size.saturating_sub(UNSENT)];
    // Written while the answer is read: a gateway that stops reading must not stop us reading.
    let write = async move {
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
        // Keep the write side open (no FIN): the request stays incomplete.
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        status_of(&answer).map_or(Fate::Closed, Fate::Answered)
    };
    tokio::select! {
        () = write => Fate::Open,
        fate = read => fate,
        () = tokio::time::sleep_until(hold_until) => Fate::Open,
    }
}

/// The status of an HTTP answer's first line.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\r').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A correctly signed Ledger delivery on a connection of its own; `Ok` if accepted.
async fn genuine(addr: SocketAddr) -> anyhow::Result<()> {
    let d = EventStreams::new(0.0, 0)?.take().next_delivery();
    let mut conn = crate::client::Connection::open(addr).await?;
    match conn.send(&d).await? {
        crate::client::Answer::Accepted => Ok(()),
        other => bail!("answered {other:?}"),
    }
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in bytes.
fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // memory sizes
    let m = bytes as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

/// Both ends of every connection are in this machine's processes: this one and the gateway
/// (which inherits the limit) each need a descriptor per connection.
fn check_fd_limit(connections: usize) -> anyhow::Result<()> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<u64>().ok());
    let needed = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(SPARE_FDS);
    if let Some(soft) = soft
        && soft < needed
    {
        bail!(
            "the open-files limit is {soft}; {connections} connections need {needed}: run `ulimit -n {}` first",
            needed * 2
        );
    }
    Ok(())
}

/// The ingest config (one Ledger source), plus the caps given on the command line. Without
/// them the gateway's defaults apply; a gateway from before the caps refuses the keys.
fn write_config(dir: &Path, args: &StallArgs) -> anyhow::Result<std::path::PathBuf> {
    let mut server = String::new();
    if let Some(n) = args.max_connections {
        server.push_str(&format!("max_connections = {n}\n"));
    }
    if let Some(size) = &args.max_body_buffer {
        server.push_str(&format!("max_body_buffer = \"{size}\"\n"));
    }
    let text =
        base_config(dir, StoreKind::Sqlite)?.replacen("[store]", &format!("{server}\n[store]"), 1);
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
