//! Test harness: start the real `gateway` binary on port 0 with a config in a temp dir, talk
//! to it over plain TCP (HTTP/1.1, one request per connection, so every byte on the wire is
//! what the test wrote), sign requests the way Ledger does, and read the SQLite store.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Current Ledger secret (`whsec_` + base64 of 32 bytes) and the rotated-out one.
pub(crate) const LEDGER_SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItZTJlLXRlc3RzLTAwMDAwMDE=";
pub(crate) const LEDGER_SECRET_OLD: &str = "whsec_b2xkLXNlY3JldC1rZXktZm9yLWUyZS10ZXN0cy0wMDI=";
pub(crate) const LEDIG_TOKEN: &str = "ledig-e2e-token-8c1f";
pub(crate) const LEDIG_PASSWORD: &str = "ledig-basic-pass";

/// The sources every test gateway has; `extra` adds or overrides server settings.
pub(crate) fn config(store: &Path, server_extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
{server_extra}

[store]
path = "{store}"

[sources.ledger]
provider = "ledger"
path = "/webhooks/ledger"
secrets = ["env:E2E_LEDGER_SECRET", "env:E2E_LEDGER_SECRET_OLD"]
signature = "any"
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
basic_auth = {{ username = "ops", password = "env:E2E_LEDIG_PASS" }}
"#,
        store = store.display()
    )
}

pub(crate) fn env_vars() -> [(&'static str, &'static str); 4] {
    [
        ("E2E_LEDGER_SECRET", LEDGER_SECRET),
        ("E2E_LEDGER_SECRET_OLD", LEDGER_SECRET_OLD),
        ("E2E_LEDIG_TOKEN", LEDIG_TOKEN),
        ("E2E_LEDIG_PASS", LEDIG_PASSWORD),
    ]
}

pub(crate) fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

/// A running gateway; killed (SIGKILL) when dropped unless stopped before.
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
    pub(crate) db: PathBuf,
}

impl Gateway {
    /// Starts a gateway with the standard sources and default limits.
    pub(crate) fn start() -> Self {
        Self::start_with("")
    }

    pub(crate) fn start_with(server_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("gateway.db");
        std::fs::write(dir.path().join("gateway.toml"), config(&db, server_extra))
            .expect("write config");
        Self::start_in(dir, db)
    }

    /// Starts (or restarts) a gateway on an existing directory and database.
    pub(crate) fn start_in(dir: tempfile::TempDir, db: PathBuf) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("stderr.log"))
            .expect("stderr log");
        let mut child = Command::new(gateway_bin())
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("gateway.toml"))
            .envs(env_vars())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start gateway");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| {
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("unexpected first line {line:?}; stderr:\n{log}")
            })
            .parse()
            .expect("address");
        Self {
            child,
            addr,
            dir: Some(dir),
            db,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then hand back the directory so the same store can be reopened.
    pub(crate) fn kill(mut self) -> (tempfile::TempDir, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.take().expect("directory present until kill");
        (dir, self.db.clone())
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

    pub(crate) fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
        self.request("POST", path, headers, body)
    }

    /// A Ledger delivery signed with `X-Ledger-Signature` by `secret` at time `t`.
    pub(crate) fn post_ledger(&self, body: &[u8]) -> Response {
        self.post(
            "/webhooks/ledger",
            &ledger_headers(LEDGER_SECRET, now(), body),
            body,
        )
    }

    pub(crate) fn post_ledig(&self, body: &[u8]) -> Response {
        self.post(
            "/webhooks/ledig",
            &[("X-Ledig-Token", LEDIG_TOKEN.to_owned())],
            body,
        )
    }

    pub(crate) fn db(&self) -> rusqlite::Connection {
        open_db(&self.db)
    }

    pub(crate) fn metrics(&self) -> String {
        self.request("GET", "/metrics", &[], b"").body
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn open_db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open store read-only")
}

pub(crate) fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count query")
}

/// The stored envelope of the event with this dedup key.
pub(crate) fn envelope(conn: &rusqlite::Connection, source: &str, key: &str) -> serde_json::Value {
    let text: String = conn
        .query_row(
            "SELECT envelope FROM events WHERE source = ?1 AND dedup_key = ?2",
            [source, key],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no stored event {source}/{key}: {e}"));
    serde_json::from_str(&text).expect("envelope is JSON")
}

#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the documented error shape `{"ok":false,"error":"..."}` and status.
    pub(crate) fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.body);
        let v = self.json();
        assert_eq!(v["ok"], false, "{}", self.body);
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            self.body
        );
        assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{}", self.body);
    }

    pub(crate) fn assert_accepted(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, r#"{"ok":true}"#));
    }

    pub(crate) fn assert_duplicate(&self) {
        assert_eq!(
            (self.status, self.body.as_str()),
            (200, r#"{"ok":true,"duplicate":true}"#)
        );
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    read_response(&mut stream)
}

/// Reads a whole response from a connection the server closes after answering.
pub(crate) fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

pub(crate) fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub(crate) fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("fits")
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Ledger-Signature: t=<t>,v1=<hex>` keyed with the secret string as written.
pub(crate) fn ledger_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let tag = hmac(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(tag))
}

pub(crate) fn ledger_headers(secret: &str, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("X-Ledger-Signature", ledger_signature(secret, t, body)),
    ]
}

/// Standard Webhooks headers (`prefix` = "webhook" or "svix") signed with a `whsec_` secret.
pub(crate) fn standard_headers(
    prefix: &'static str,
    secret: &str,
    id: &str,
    t: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .expect("base64 secret");
    let tag = hmac(
        &key,
        &[id.as_bytes(), b".", t.to_string().as_bytes(), b".", body],
    );
    vec![
        (format!("{prefix}-id"), id.to_owned()),
        (format!("{prefix}-timestamp"), t.to_string()),
        (
            format!("{prefix}-signature"),
            format!("v1,{}", b64.encode(tag)),
        ),
    ]
}

pub(crate) fn fixture(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

pub(crate) fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(dir);
    let mut out: Vec<_> = std::fs::read_dir(&full)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read fixture"))
        })
        .collect();
    out.sort();
    out
}

/// Polls `check` until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}
