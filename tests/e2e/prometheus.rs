//! A real Prometheus (Debian's `prometheus` package) scrapes a running gateway: the documented
//! series arrive through its query API with the values the traffic implies, the scraped text
//! passes `promtool check metrics`, and the alert rules of `contrib/prometheus` load, evaluate
//! cleanly on the real series and use only metrics the gateway exports.
//!
//! Also the parts the other monitoring tests share: finding the tools, a gateway whose every
//! metric family has series (a destination, a plugin, a route), its traffic, and reading
//! metric names out of PromQL. Prometheus listens on port 0 and says where in its log; it is
//! killed when its handle drops. Nothing here waits a fixed time: every wait polls a deadline.

use crate::harness::*;
use crate::plugin_harness::CACHE_DIR;
use crate::reload::{ADMIN, http_destination, ledger_txn, wait_delivered};
use crate::sink::{Mode, Sink};
use plugin_artifacts::ECHO;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Requests of [`send_traffic`]: accepted (each a new event, delivered once), refused for a
/// wrong signature, and one duplicate.
/// Refusals are enough for GatewaySignatureFailures' floor (3 a minute) over its 5-minute
/// window, so the rule is seen matching real series.
pub(crate) const ACCEPTED: u32 = 12;
pub(crate) const REFUSED: u32 = 20;

/// The repository's root (contrib/ lives there).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A program from PATH. The monitoring tests always run: CI installs the tools (.ci/run), so
/// a missing one is a broken machine, said plainly.
pub(crate) fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: the monitoring tests need Debian 12's `prometheus` \
                 package (`apt-get install --no-install-recommends prometheus`; .ci/run \
                 installs it when `promtool` is missing)"
            )
        })
}

/// Runs `promtool ARGS` (with `stdin`), returning whether it succeeded and all it printed.
pub(crate) fn promtool(args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin).expect("feed promtool");
    drop(input);
    let out = child.wait_with_output().expect("promtool ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A gateway with a destination, a plugin and a route, so every metric family has series.
#[derive(Debug)]
pub(crate) struct Monitored {
    pub(crate) gw: Gateway,
    pub(crate) sink: Sink,
}

pub(crate) fn monitored_gateway() -> Monitored {
    let sink = Sink::start(Mode::Ok);
    let extra = format!(
        "{ADMIN}[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.echo]\nwasm = \"{ECHO}\"\n\n{}\
         [[routes]]\nname = \"payments\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"echo\"]\nto = [\"sink\"]\n",
        http_destination("sink", &sink)
    );
    let gw = Gateway::start_with_extra(&extra);
    Monitored { gw, sink }
}

/// [`ACCEPTED`] new signed Ledger events (ids `{tag}_N`), one duplicate, [`REFUSED`] signed
/// with a wrong secret, and a request for no path; returns the accepted ids.
pub(crate) fn send_traffic(m: &Monitored, tag: &str) -> HashSet<String> {
    let ids: HashSet<String> = (0..ACCEPTED).map(|i| format!("{tag}_{i}")).collect();
    for id in &ids {
        m.gw.post_ledger(&ledger_txn(id)).assert_accepted();
    }
    let again = ledger_txn(&format!("{tag}_0"));
    m.gw.post_ledger(&again).assert_duplicate();
    for i in 0..REFUSED {
        let body = ledger_txn(&format!("{tag}_forged_{i}"));
        let headers = ledger_headers(LEDGER_SECRET_WRONG, now(), &body);
        m.gw.post("/webhooks/ledger", &headers, &body)
            .assert_error(401);
    }
    assert_eq!(m.gw.get("/no-such-path").status, 404);
    ids
}

/// Every sample name in a text exposition: histograms as their `_bucket`, `_sum` and `_count`
/// series, which is what PromQL can select.
pub(crate) fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The gateway metric names (`gateway_*`) a PromQL expression selects: identifiers outside
/// string literals. Label names and functions never start with `gateway_`.
pub(crate) fn gateway_metrics_in(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = promql.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if d == c && !escaped {
                    break;
                }
                escaped = d == '\\' && !escaped;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
            let word = &promql[start..end];
            if word.starts_with("gateway_") {
                names.insert(word.to_owned());
            }
        }
    }
    names
}

/// A running Prometheus scraping one gateway; killed when dropped.
#[derive(Debug)]
pub(crate) struct Prometheus {
    child: Child,
    pub(crate) addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every 200 ms and evaluates the contrib alert rules as often.
    pub(crate) fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = repo_root().join("contrib/prometheus/gateway-alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n  \
             evaluation_interval: 200ms\nrule_files:\n  - {}\nscrape_configs:\n  \
             - job_name: gateway\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).expect("create prometheus.log");
        let mut child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Port 0: the line after the bind says the real address.
            let bound = text
                .lines()
                .filter(|l| l.contains("msg=\"Listening on\""))
                .find_map(|l| l.split("address=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            if let Some(addr) = bound {
                break addr;
            }
            let exited = child.try_wait().expect("try_wait on prometheus");
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("prometheus did not start listening ({exited:?}); its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, addr, dir }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on the HTTP API's `data`; `None` until Prometheus answers with success.
    pub(crate) fn api(&self, path: &str) -> Option<Value> {
        // HTTP/1.0: the answer is the rest of the stream, never chunked.
        let mut stream = TcpStream::connect(self.addr).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).ok()?;
        let head = format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
        stream.write_all(head.as_bytes()).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let body: Value = serde_json::from_slice(&raw[split + 4..]).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// An instant query's samples: (labels, value).
    pub(crate) fn query(&self, promql: &str) -> Option<Vec<(Value, f64)>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        data["result"]
            .as_array()?
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), value))
            })
            .collect()
    }

    /// The single value of `promql` once `accept` takes it; fails after [`PATIENCE`].
    pub(crate) fn wait_value(&self, promql: &str, accept: impl Fn(f64) -> bool) -> f64 {
        let mut last = None;
        self.wait(&format!("`{promql}`"), || {
            let samples = self.query(promql)?;
            last = Some(samples.clone());
            match samples.as_slice() {
                [(_, v)] if accept(*v) => Some(*v),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("`{promql}`: last answer {last:?}"))
    }

    /// Polls `probe` until it gives a value; `None` once [`PATIENCE`] is over.
    pub(crate) fn wait<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = probe() {
                return Some(v);
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{what}: not within {PATIENCE:?}; prometheus log:\n{}",
                    self.log()
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_gateway_metrics_pass_promtool_check_metrics() {
    let m = monitored_gateway();
    let ids = send_traffic(&m, "lint");
    wait_delivered(&m.sink, &ids, "lint traffic", &m.gw);
    let text = m.gw.metrics();
    let (ok, problems) = promtool(&["check", "metrics"], text.as_bytes());
    assert!(
        ok && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}\non:\n{text}"
    );
}

#[test]
fn a_real_prometheus_scrapes_the_documented_series_and_evaluates_the_alert_rules() {
    let m = monitored_gateway();
    let prom = Prometheus::start(m.gw.addr);
    // A scrape before the traffic, so rates see the counters rise.
    prom.wait_value(r#"up{job="gateway"}"#, |v| v == 1.0);
    prom.wait_value("gateway_config_generation", |v| v == 1.0);

    let ids = send_traffic(&m, "prom");
    wait_delivered(&m.sink, &ids, "prometheus traffic", &m.gw);
    let (accepted, refused) = (f64::from(ACCEPTED), f64::from(REFUSED));
    for (promql, want) in [
        (
            r#"sum(gateway_requests_total{outcome="accepted"})"#,
            accepted,
        ),
        (r#"sum(gateway_requests_total{outcome="duplicate"})"#, 1.0),
        (
            r#"sum(gateway_requests_total{outcome="unauthorized"})"#,
            refused,
        ),
        (r#"sum(gateway_events_total{source="ledger"})"#, accepted),
        (
            r#"sum(gateway_routed_events_total{result="routed"})"#,
            accepted,
        ),
        (
            r#"sum(gateway_plugin_calls_total{plugin="echo"})"#,
            accepted,
        ),
        (r#"sum(gateway_deliveries_total{result="ok"})"#, accepted),
        (r#"sum(gateway_deliveries_total{result!="ok"})"#, 0.0),
        (r#"sum(gateway_unmatched_requests_total)"#, 1.0),
        ("gateway_queue_depth", 0.0),
        ("gateway_queue_oldest_age_seconds", 0.0),
        ("gateway_dead_letters", 0.0),
        (r#"sum(gateway_plugin_unhealthy)"#, 0.0),
    ] {
        prom.wait_value(promql, |v| v == want);
    }
    let rate = prom.wait_value(
        r#"sum(rate(gateway_requests_total{outcome="accepted"}[1m]))"#,
        |v| v > 0.0,
    );
    assert!(rate.is_finite(), "{rate}");
    // Debug build on a shared 2-core machine: generous, but far below the +Inf bucket.
    for histogram in [
        "gateway_ack_duration_seconds",
        "gateway_delivery_duration_seconds",
        "gateway_plugin_duration_seconds",
        "gateway_store_commit_duration_seconds",
    ] {
        let p99 = format!("histogram_quantile(0.99, sum by (le) (rate({histogram}_bucket[1m])))");
        let v = prom.wait_value(&p99, f64::is_finite);
        assert!(v > 0.0 && v < 5.0, "{p99} = {v}");
    }

    // The rules: every one evaluated without error, on names the gateway exports.
    let exported = exported_names(&m.gw.metrics());
    let rules = prom
        .wait("every alert rule evaluated", || {
            let data = prom.api("/api/v1/rules")?;
            let rules: Vec<Value> = data["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
            (evaluated && !rules.is_empty()).then_some(rules)
        })
        .expect("the alert rules are evaluated");
    assert_eq!(rules.len(), 11, "{rules:#?}");
    for rule in &rules {
        let (name, query) = (&rule["name"], rule["query"].as_str().unwrap_or_default());
        assert_eq!(rule["health"], "ok", "{name}: {rule}");
        let used = gateway_metrics_in(query);
        assert!(!used.is_empty(), "{name}: no gateway metric in {query}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{name} uses {unknown:?}, not exported:\n{exported:#?}"
        );
    }
    // The refused signatures are a real match for the rule (pending: it needs 5 minutes), and
    // a healthy gateway fires nothing.
    prom.wait_value(
        r#"count(ALERTS{alertname="GatewaySignatureFailures",alertstate="pending",source="ledger"})"#,
        |v| v == 1.0,
    );
    let firing = prom.query(r#"ALERTS{alertstate="firing"}"#);
    assert_eq!(firing, Some(vec![]), "{}", prom.log());
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = |q: &str| gateway_metrics_in(q).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, source) (rate(gateway_ack_duration_seconds_bucket{source=~"$source", x="gateway_no"}[$__rate_interval])))"#
        ),
        ["gateway_ack_duration_seconds_bucket"]
    );
    assert_eq!(
        names("gateway_a_total / on (x) gateway_b offset 1d and 'gateway_c'"),
        ["gateway_a_total", "gateway_b"]
    );
    assert!(names(r#"up{job="gateway"}"#).is_empty());
}
