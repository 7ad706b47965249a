//! Test harness: starts the real `gateway` binary on port 0 with a config and its own SQLite
//! file in a temp dir, talks to it over plain TCP (HTTP/1.1, one request per connection, so every
//! byte on the wire is what the test wrote), signs requests the way Ledger does (both schemes),
//! and reads the store read-only. It proves nothing by itself; the other modules do.
//!
//! A gateway is SIGKILLed when its handle drops. Its stderr goes to `stderr.log` in the temp
//! dir and is printed when the test panics, so a failure shows the gateway's own account.

use gateway_providers::signing::{LedgerSigner, StandardSigner};
use gateway_providers::{Secret, standard_webhooks_key};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The current Ledger secret: `whsec_` + base64 of 32 bytes, so both schemes can use it.
pub(crate) const LEDGER_SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItZTJlLXRlc3RzLTAwMDAwMDE=";
/// The rotated-out Ledger secret, still accepted during rotation.
pub(crate) const LEDGER_SECRET_OLD: &str = "whsec_b2xkLXNlY3JldC1rZXktZm9yLWUyZS10ZXN0cy0wMDI=";
/// A secret the gateway has never seen.
pub(crate) const LEDGER_SECRET_WRONG: &str = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZzE=";
pub(crate) const LEDIG_TOKEN: &str = "ledig-e2e-token-8c1f";
pub(crate) const LEDIG_USER: &str = "ops";
pub(crate) const LEDIG_PASSWORD: &str = "ledig-basic-pass";
/// The admin API's bearer token (`[admin] token = "env:E2E_ADMIN_TOKEN"`).
pub(crate) const ADMIN_TOKEN: &str = "admin-e2e-token-5d2a";

/// How long any single wait on the gateway may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// The knobs tests turn; everything else is the standard config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_body: &'static str,
    pub(crate) header_timeout: &'static str,
    pub(crate) request_timeout: &'static str,
    pub(crate) write_timeout: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body: "1MiB",
            header_timeout: "10s",
            request_timeout: "30s",
            write_timeout: "30s",
        }
    }
}

/// The standard config: one source per protection style, so each test can pick its door.
pub(crate) fn config(store: &Path, s: &Settings) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
max_body = "{max_body}"
header_timeout = "{header_timeout}"
request_timeout = "{request_timeout}"
write_timeout = "{write_timeout}"

[store]
path = "{store}"
dedup_window = "30d"

[sources.ledger]
provider = "ledger"
path = "/webhooks/ledger"
secrets = ["env:E2E_LEDGER_SECRET", "env:E2E_LEDGER_SECRET_OLD"]
signature = "any"
tolerance = "5m"

[sources.ledger-std]
provider = "ledger"
path = "/webhooks/ledger-std"
secrets = ["env:E2E_LEDGER_SECRET"]
signature = "standard-webhooks"
tolerance = "5m"

[sources.ledig]
provider = "ledig"
path = "/webhooks/ledig"
token = "env:E2E_LEDIG_TOKEN"
token_header = "X-Ledig-Token"

[sources.ledig-path]
provider = "ledig"
path = "/webhooks/ledig-path"
token = "env:E2E_LEDIG_TOKEN"
token_in_path = true

[sources.ledig-basic]
provider = "ledig"
path = "/webhooks/ledig-basic"
basic_auth = {{ username = "env:E2E_LEDIG_USER", password = "env:E2E_LEDIG_PASS" }}

[sources.ledig-local]
provider = "ledig"
path = "/webhooks/ledig-local"
token = "env:E2E_LEDIG_TOKEN"
token_header = "X-Ledig-Token"
allow_ips = ["127.0.0.1/32"]

[sources.ledig-remote-only]
provider = "ledig"
path = "/webhooks/ledig-remote-only"
allow_ips = ["10.0.0.0/8"]
"#,
        max_body = s.max_body,
        header_timeout = s.header_timeout,
        request_timeout = s.request_timeout,
        write_timeout = s.write_timeout,
        store = store.display()
    )
}

/// The standard config with `server_extra` (TOML lines) added to its `[server]` table.
pub(crate) fn config_with_server(store: &Path, s: &Settings, server_extra: &str) -> String {
    config(store, s).replace("[store]", &format!("{server_extra}\n\n[store]"))
}

/// The environment the standard config's secret references read.
pub(crate) fn env_vars() -> [(&'static str, &'static str); 7] {
    [
        ("E2E_ADMIN_TOKEN", ADMIN_TOKEN),
        ("E2E_SINK_SECRET", crate::sink::SINK_SECRET),
        ("E2E_LEDGER_SECRET", LEDGER_SECRET),
        ("E2E_LEDGER_SECRET_OLD", LEDGER_SECRET_OLD),
        ("E2E_LEDIG_TOKEN", LEDIG_TOKEN),
        ("E2E_LEDIG_USER", LEDIG_USER),
        ("E2E_LEDIG_PASS", LEDIG_PASSWORD),
    ]
}

pub(crate) fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

/// A running gateway; SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Gateway {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The stdout lines after the first (the admin listener's address, with `[admin] listen`).
    stdout: std::sync::Mutex<mpsc::Receiver<Option<std::io::Result<String>>>>,
    dir: Option<tempfile::TempDir>,
    pub(crate) db: PathBuf,
}

impl Gateway {
    /// The standard config with default limits.
    pub(crate) fn start() -> Self {
        Self::start_with(&Settings::default())
    }

    pub(crate) fn start_with(settings: &Settings) -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let db = dir.path().join("gateway.db");
        std::fs::write(dir.path().join("gateway.toml"), config(&db, settings))
            .expect("write config");
        Self::start_in(dir, db)
    }

    /// The standard config plus `extra` TOML (destinations, routes, plugins, `[admin]`...).
    pub(crate) fn start_with_extra(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let db = dir.path().join("gateway.db");
        let text = format!("{}\n{extra}", config(&db, &Settings::default()));
        std::fs::write(dir.path().join("gateway.toml"), text).expect("write config");
        Self::start_in(dir, db)
    }

    /// The directory holding `gateway.toml`, the store and `stderr.log`.
    pub(crate) fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("directory is held until kill")
            .path()
    }

    /// Starts (or restarts) a gateway on the `gateway.toml` and store already in `dir`.
    pub(crate) fn start_in(dir: tempfile::TempDir, db: PathBuf) -> Self {
        Self::start_in_with(dir, db, |_| {})
    }

    /// [`Gateway::start_in`], with `adjust` setting more of the command (its working directory,
    /// more environment variables) before it runs.
    pub(crate) fn start_in_with(
        dir: tempfile::TempDir,
        db: PathBuf,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let log_path = dir.path().join("stderr.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open stderr log");
        let mut command = Command::new(gateway_bin());
        command
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("gateway.toml"))
            .envs(env_vars())
            .env("RUST_LOG", "info");
        adjust(&mut command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn the gateway binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        // The reader keeps draining stdout after the first line, so a later print by the
        // gateway never meets a closed pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for line in lines {
                let _ = tx.send(Some(line));
            }
        });
        let first = rx.recv_timeout(PATIENCE);
        let line = match first {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("gateway printed no first line ({other:?}); stderr:\n{log}");
            }
        };
        let Some(addr) = line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("first stdout line is {line:?}, not `listening on http://ADDR`; stderr:\n{log}");
        };
        Self {
            child,
            addr,
            stdout: std::sync::Mutex::new(rx),
            dir: Some(dir),
            db,
        }
    }

    /// The admin listener's address, from the second stdout line (`[admin] listen` only).
    pub(crate) fn admin_addr(&self) -> SocketAddr {
        let rx = self.stdout.lock().expect("stdout lines");
        let line = match rx.recv_timeout(PATIENCE) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "no second stdout line ({other:?}); stderr:\n{}",
                self.stderr()
            ),
        };
        line.strip_prefix("admin listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("second stdout line is {line:?}"))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, then hand back the directory so the same config and store can be reused.
    pub(crate) fn kill(mut self) -> (tempfile::TempDir, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.take().expect("directory is held until kill");
        (dir, self.db.clone())
    }

    /// Sends `signal` (e.g. "TERM") and waits, polling, for the process to exit.
    pub(crate) fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(sent.success(), "kill -{signal} {} failed", self.pid());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the gateway") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit within {PATIENCE:?} of SIG{signal}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The gateway's log lines (stderr) that contain `needle`.
    pub(crate) fn log_lines(&self, needle: &str) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `seen()` holds after a config change, sending SIGHUP now and then: the
    /// watcher may miss a write in the first moments after the start (not more often than every
    /// 2 s: each one restarts the reload's 250 ms debounce). Fails the test, naming `what`,
    /// after [`PATIENCE`].
    pub(crate) fn wait_for_reload(&self, what: &str, seen: impl Fn() -> bool) {
        let started = Instant::now();
        let mut hangups = 0;
        while !seen() {
            let waited = started.elapsed();
            assert!(waited < PATIENCE, "{what}; stderr:\n{}", self.stderr());
            if waited > Duration::from_secs(2 * (hangups + 1)) {
                hangups += 1;
                let _ = Command::new("kill")
                    .arg("-HUP")
                    .arg(self.pid().to_string())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("stderr.log")).ok())
            .unwrap_or_default()
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Response {
        request(self.addr, method, path, headers, body)
    }

    /// A request to the admin API with the right bearer token.
    pub(crate) fn admin(&self, method: &str, path: &str) -> Response {
        let auth = ("Authorization", format!("Bearer {ADMIN_TOKEN}"));
        self.request(method, path, &[auth], b"")
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub(crate) fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
        self.request("POST", path, headers, body)
    }

    /// A Ledger delivery signed now with `X-Ledger-Signature` by the current secret.
    pub(crate) fn post_ledger(&self, body: &[u8]) -> Response {
        self.post(
            "/webhooks/ledger",
            &ledger_headers(LEDGER_SECRET, now(), body),
            body,
        )
    }

    /// A Ledig delivery with the right token in `X-Ledig-Token`.
    pub(crate) fn post_ledig(&self, body: &[u8]) -> Response {
        self.post(
            "/webhooks/ledig",
            &[
                ("Content-Type", "application/json".into()),
                ("X-Ledig-Token", LEDIG_TOKEN.into()),
            ],
            body,
        )
    }

    pub(crate) fn db(&self) -> rusqlite::Connection {
        open_db(&self.db)
    }

    pub(crate) fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- gateway stderr ({}) ----\n{}",
                self.addr,
                self.stderr()
            );
        }
    }
}

pub(crate) fn open_db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the store read-only")
}

pub(crate) fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One row of `events`, JSON columns parsed.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) dedup_key: String,
    pub(crate) event_type: String,
    pub(crate) envelope: Value,
    pub(crate) raw_body: Vec<u8>,
    pub(crate) headers: Value,
    pub(crate) received_at: i64,
}

fn event_where(conn: &rusqlite::Connection, filter: &str, args: [&str; 2]) -> StoredEvent {
    let sql = format!(
        "SELECT dedup_key, event_type, envelope, raw_body, headers, received_at \
         FROM stored_events WHERE {filter}"
    );
    let (dedup_key, event_type, envelope, raw_body, headers, received_at): (
        String,
        String,
        String,
        Vec<u8>,
        String,
        i64,
    ) = conn
        .query_row(&sql, args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap_or_else(|e| panic!("no single stored event where {filter} {args:?}: {e}"));
    StoredEvent {
        dedup_key,
        event_type,
        envelope: serde_json::from_str(&envelope).expect("envelope column is JSON"),
        raw_body,
        headers: serde_json::from_str(&headers).expect("headers column is JSON"),
        received_at,
    }
}

/// The seq the store gave the event of `source` with this id.
pub(crate) fn seq_of(gw: &Gateway, source: &str, id: &str) -> i64 {
    gw.db()
        .query_row(
            "SELECT seq FROM events WHERE source = ?1 AND dedup_key = ?2",
            [source, id],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no stored event {source}/{id}: {e}"))
}

/// The seq of the one stored event of `source` whose dedup key starts with `prefix`.
pub(crate) fn seq_with_prefix(gw: &Gateway, source: &str, prefix: &str) -> i64 {
    gw.db()
        .query_row(
            "SELECT seq FROM events WHERE source = ?1 AND dedup_key LIKE ?2",
            [source, &format!("{prefix}%")],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no single stored event {source}/{prefix}*: {e}"))
}

/// The stored event of `source` with this dedup key.
pub(crate) fn stored(conn: &rusqlite::Connection, source: &str, key: &str) -> StoredEvent {
    event_where(conn, "source = ?1 AND dedup_key = ?2", [source, key])
}

/// The one stored event of `source` with this event type.
pub(crate) fn stored_by_type(
    conn: &rusqlite::Connection,
    source: &str,
    event_type: &str,
) -> StoredEvent {
    event_where(
        conn,
        "source = ?1 AND event_type = ?2",
        [source, event_type],
    )
}

/// An HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn assert_json_content_type(&self) {
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "content-type {:?} for {} {}",
            self.header("content-type"),
            self.status,
            self.body
        );
    }

    /// The documented error answer: this status, exactly `{"ok":false,"error":"<non-empty>"}`.
    pub(crate) fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.body);
        let v = self.json();
        let obj = v.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 2, "only ok and error: {}", self.body);
        assert_eq!(v["ok"], false, "{}", self.body);
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "non-empty error string: {}",
            self.body
        );
        self.assert_json_content_type();
    }

    pub(crate) fn assert_accepted(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, r#"{"ok":true}"#));
        self.assert_json_content_type();
    }

    pub(crate) fn assert_duplicate(&self) {
        assert_eq!(
            (self.status, self.body.as_str()),
            (200, r#"{"ok":true,"duplicate":true}"#)
        );
        self.assert_json_content_type();
    }
}

/// The bytes of one HTTP/1.1 request with `Content-Length` and `Connection: close`.
pub(crate) fn request_bytes(
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One request on a fresh connection; `Err` if the connection fails (e.g. the gateway died).
pub(crate) fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.write_all(&request_bytes(method, path, headers, body))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::other(format!("incomplete response: {raw:?}")))
}

/// One request on a fresh connection; panics if there is no complete answer.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
}

/// The same as [`request`] over tokio, for tests that need many connections at once.
pub(crate) async fn request_async(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    stream.write_all(bytes).await.expect("send the request");
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("answer within the patience window")
        .expect("read the answer");
    parse_response(&raw).unwrap_or_else(|| panic!("incomplete response: {raw:?}"))
}

/// Reads until the server closes, tolerating a reset after a complete answer.
pub(crate) fn read_response(stream: &mut TcpStream) -> Response {
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("set read timeout");
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if raw.is_empty() => panic!("no answer: {e}"),
            Err(_) => break,
        }
    }
    parse_response(&raw).unwrap_or_else(|| panic!("incomplete response: {raw:?}"))
}

/// Parses status line, headers and a `Content-Length` body; `None` if the answer is cut short.
pub(crate) fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match length {
        Some(n) if body.len() < n => return None,
        Some(n) => &body[..n],
        None => body,
    };
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

pub(crate) fn now() -> i64 {
    now_ms() / 1000
}

pub(crate) fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("milliseconds fit in i64")
}

/// Parses an RFC 3339 timestamp (any precision, any offset) into Unix milliseconds.
pub(crate) fn rfc3339_ms(text: &str) -> i64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("milliseconds fit in i64")
}

/// `X-Ledger-Signature: t=<t>,v1=<hex>`, keyed with the secret string's raw bytes (the
/// project's one signer, which `gateway send` uses too; the verifier's own tests sign
/// independently of it).
pub(crate) fn ledger_signature(secret: &str, t: i64, body: &[u8]) -> String {
    LedgerSigner::new(secret.as_bytes()).header(t, body)
}

pub(crate) fn ledger_headers(secret: &str, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("X-Ledger-Signature", ledger_signature(secret, t, body)),
    ]
}

/// Standard Webhooks headers (`prefix` = "webhook" or "svix"): key = base64 after `whsec_`,
/// message `<id>.<timestamp>.<body>`, signature `v1,<base64>`.
pub(crate) fn standard_headers(
    prefix: &str,
    secret: &str,
    id: &str,
    t: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let key = standard_webhooks_key(&Secret::new(secret.as_bytes().to_vec()))
        .expect("a whsec_<base64> secret");
    vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (format!("{prefix}-id"), id.to_owned()),
        (format!("{prefix}-timestamp"), t.to_string()),
        (
            format!("{prefix}-signature"),
            StandardSigner::new(&key).header(id, t, body),
        ),
    ]
}

/// Borrows owned header pairs in the shape the request helpers take.
pub(crate) fn borrowed(headers: &[(String, String)]) -> Vec<(&str, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect()
}

/// JSON with object keys sorted and no white space, written independently of the gateway.
pub(crate) fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let members: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).expect("a string serializes"),
                        canonical_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        scalar => serde_json::to_string(scalar).expect("a scalar serializes"),
    }
}

/// A Ledig event's object hash, computed here independently of the gateway: SHA-256 over
/// `object/v1` and each part as its 8-byte big-endian length and its bytes.
pub(crate) fn ledig_object(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"object/v1");
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The object of an event with an `id` (or an alias: `field` = "alias").
pub(crate) fn ledig_object_of(event: &str, field: &str, value: &str) -> [u8; 32] {
    ledig_object(&[event.as_bytes(), field.as_bytes(), value.as_bytes()])
}

/// SHA-256 of a body's canonical form (keys sorted, no white space): a Ledig event's state.
pub(crate) fn ledig_state(body: &[u8]) -> [u8; 32] {
    let v: Value = serde_json::from_slice(body).expect("body is JSON");
    Sha256::digest(canonical_json(&v).as_bytes()).into()
}

/// The object of an event that names none: its content.
pub(crate) fn ledig_content_object(body: &[u8]) -> [u8; 32] {
    ledig_object(&[b"content", &ledig_state(body)])
}

/// Every stored key of `body` about `object` starts with this: `ledig:<object>:<state>:`
/// (24 hex digits each), then the arrival in unix ms.
pub(crate) fn ledig_key_prefix(object: &[u8; 32], body: &[u8]) -> String {
    format!(
        "ledig:{}:{}:",
        hex::encode(&object[..12]),
        hex::encode(&ledig_state(body)[..12])
    )
}

/// Every stored key of the event `event` about the object with this `id` starts with this.
pub(crate) fn ledig_id_prefix(event: &str, id: &str) -> String {
    format!(
        "ledig:{}:",
        hex::encode(&ledig_object_of(event, "id", id)[..12])
    )
}

/// The one stored event of `source` whose dedup key starts with `prefix`.
pub(crate) fn stored_with_prefix(
    conn: &rusqlite::Connection,
    source: &str,
    prefix: &str,
) -> StoredEvent {
    let like = format!("{prefix}%");
    event_where(conn, "source = ?1 AND dedup_key LIKE ?2", [source, &like])
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub(crate) fn fixture(path: &str) -> Vec<u8> {
    let full = fixtures_root().join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

/// Every `*.json` in a fixture folder as (file stem, bytes), sorted by name.
pub(crate) fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let full = fixtures_root().join(dir);
    let mut out: Vec<_> = std::fs::read_dir(&full)
        .unwrap_or_else(|e| panic!("fixture dir {}: {e}", full.display()))
        .map(|e| e.expect("read fixture dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_stem()
                .expect("a file has a stem")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("read fixture"))
        })
        .collect();
    out.sort();
    out
}

/// The value of one sample line (`series` is the metric name with its labels) in `/metrics`.
pub(crate) fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

/// Polls `probe` until it gives a value, or fails after [`PATIENCE`] saying `what`.
pub(crate) fn wait_until<T>(gw: &Gateway, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}; stderr:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
