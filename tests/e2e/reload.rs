//! Hot reload of a running gateway: the config file (replaced atomically the way deploy tools
//! do it, or rewritten in place the way an editor may), every plugin `.wasm` it names, and
//! SIGHUP. Under steady load from concurrent senders a good change takes effect for the events
//! that arrive after it, a bad one is refused with its file, line and key while the running
//! routes keep delivering, and not one valid request gets anything but 200 meanwhile. Replacing
//! a plugin component changes what is delivered without a restart. Reloads are observed through
//! `gateway_config_generation` and `gateway_config_reloads_total{result}`.

use crate::harness::*;
use crate::plugin_harness::CACHE_DIR;
use crate::sink::{Mode, Received, SINK_SECRET, Sink, verify};
use plugin_artifacts::{ECHO, UNIFY_PAYMENTS};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers shared with `admin_api`.
// ---------------------------------------------------------------------------------------------

/// The whole config file `Gateway::start_with_extra(extra)` writes: the standard config + `extra`.
pub(crate) fn full_config(db: &Path, extra: &str) -> String {
    format!("{}\n{extra}", config(db, &Settings::default()))
}

/// Replaces `path` the way deploy tools do: write a temporary file beside it, then rename it
/// over the old one (the old inode never changes; watchers of the file itself go quiet).
pub(crate) fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp-deploy");
    std::fs::write(&tmp, text).expect("write the temporary config");
    std::fs::rename(&tmp, path).expect("rename the new config into place");
}

/// Rewrites `path` in place (truncate + write, same inode), as `echo > file` or some editors do.
pub(crate) fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).expect("rewrite the config in place");
}

/// The value of `series` in `/metrics`, or 0 when the series is absent.
pub(crate) fn metric_or_zero(gw: &Gateway, series: &str) -> f64 {
    let text = gw.metrics();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The admin API, enabled with the harness's token.
pub(crate) const ADMIN: &str = "[admin]\ntoken = \"env:E2E_ADMIN_TOKEN\"\n\n";

pub(crate) const GENERATION: &str = "gateway_config_generation";
pub(crate) const RELOADS_OK: &str = r#"gateway_config_reloads_total{result="ok"}"#;
pub(crate) const RELOADS_ERROR: &str = r#"gateway_config_reloads_total{result="error"}"#;

/// Polls `/metrics` until `series` has exactly `value`; panics (with the gateway's stderr)
/// after [`PATIENCE`]. Returns when it got there.
pub(crate) fn wait_metric(gw: &Gateway, series: &str, value: f64) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = metric_or_zero(gw, series);
        if (now - value).abs() < f64::EPSILON {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now}, not {value}, {PATIENCE:?} after the change; stderr:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The reload counters and the generation, read from one `/metrics` scrape.
pub(crate) fn reload_state(gw: &Gateway) -> (f64, f64, f64) {
    let text = gw.metrics();
    (
        metric(&text, GENERATION),
        metric(&text, RELOADS_OK),
        metric(&text, RELOADS_ERROR),
    )
}

/// A Ledger `transaction.created` with this id (a unique event per id).
pub(crate) fn ledger_txn(id: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"transaction.created","createdAt":1763856000000,"data":{{"id":"txn_{id}","amount":"1.00"}}}}"#
    )
    .into_bytes()
}

/// An HTTP destination table pointing at `sink`, with quick retries.
pub(crate) fn http_destination(name: &str, sink: &Sink) -> String {
    format!(
        "[destinations.{name}]\nhttp = \"{}\"\nsecret = \"env:E2E_SINK_SECRET\"\n\
         allow_private_network = true\nmax_attempts = 3\nbackoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n\n",
        sink.url()
    )
}

/// Polls the sink until every id in `ids` was delivered (2xx) to it; returns what it got.
/// Polls every 100 ms (the sink's own `wait_for` clones everything every 10 ms, too often for
/// thousands of deliveries).
pub(crate) fn wait_delivered(
    sink: &Sink,
    ids: &HashSet<String>,
    what: &str,
    gw: &Gateway,
) -> Vec<Received> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = sink.delivered();
        let seen: HashSet<&str> = got.iter().filter_map(Received::event_id).collect();
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !seen.contains(id.as_str()))
            .collect();
        if missing.is_empty() {
            return got;
        }
        if Instant::now() >= deadline {
            let mut sample: Vec<&&String> = missing.iter().take(10).collect();
            sample.sort();
            panic!(
                "{what}: {} of {} event(s) not delivered within {PATIENCE:?} (e.g. {sample:?}); \
                 the sink got {} delivery(ies); stderr:\n{}",
                missing.len(),
                ids.len(),
                got.len(),
                gw.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the process is still running (not exited, not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) STATE ...`: the state follows the last `)`.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// 1-based line of the first line of `text` that starts with `start`.
fn line_starting(text: &str, start: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(start))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no line starting {start:?}"))
}

// ---------------------------------------------------------------------------------------------
// a) Reloads under load.
// ---------------------------------------------------------------------------------------------

const SENDERS: usize = 8;
/// Each sender sends at most one request per interval: 8 x 40/s = at most 320 requests/s.
const SEND_INTERVAL: Duration = Duration::from_millis(25);
/// Every load phase lasts at least this long and this many acks.
const PHASE_TIME: Duration = Duration::from_millis(1500);
const PHASE_ACKS: usize = 300;

#[derive(Debug, Clone)]
struct Ack {
    id: String,
    /// When the request was about to be sent.
    started: Instant,
}

#[derive(Debug, Default)]
struct Load {
    acks: Mutex<Vec<Ack>>,
    acked: AtomicUsize,
    /// Every answer to a valid request that was not `200 {"ok":true}`, and every failed request.
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    /// Starts [`SENDERS`] paced senders against `addr`.
    fn start(addr: SocketAddr) -> (Arc<Self>, Vec<std::thread::JoinHandle<()>>) {
        let load = Arc::new(Self::default());
        let senders = (0..SENDERS)
            .map(|n| {
                let load = Arc::clone(&load);
                std::thread::spawn(move || sender(addr, n, &load))
            })
            .collect();
        (load, senders)
    }

    /// Stops the senders and waits until each has sent its last request.
    fn finish(&self, senders: Vec<std::thread::JoinHandle<()>>) {
        self.stop.store(true, Ordering::SeqCst);
        for s in senders {
            s.join().expect("sender thread did not panic");
        }
    }

    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    /// Waits until at least `PHASE_TIME` passed and `PHASE_ACKS` more acks came in.
    fn run_phase(&self, what: &str, gw: &Gateway) {
        self.run_for(what, gw, PHASE_TIME, PHASE_ACKS);
    }

    /// Waits until at least `time` passed and `acks` more acks came in; panics on a failure.
    fn run_for(&self, what: &str, gw: &Gateway, time: Duration, acks: usize) {
        let start = Instant::now();
        let target = self.acked.load(Ordering::SeqCst) + acks;
        let deadline = start + PATIENCE;
        while start.elapsed() < time || self.acked.load(Ordering::SeqCst) < target {
            let failures = self.failures.lock().expect("failures").clone();
            assert!(
                failures.is_empty(),
                "{what}: valid requests failed: {failures:?}; stderr:\n{}",
                gw.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "{what}: only {} acks so far, wanted {target}; stderr:\n{}",
                self.acked.load(Ordering::SeqCst),
                gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends unique signed Ledger events, paced, until told to stop; records acks and failures.
fn sender(addr: SocketAddr, n: usize, load: &Load) {
    let begin = Instant::now();
    for i in 0u32.. {
        if load.stop.load(Ordering::SeqCst) {
            return;
        }
        let due = begin + SEND_INTERVAL * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = format!("evt_reload_{n}_{i}");
        let body = ledger_txn(&id);
        let started = Instant::now();
        let answer = try_request(
            addr,
            "POST",
            "/webhooks/ledger",
            &ledger_headers(LEDGER_SECRET, now(), &body),
            &body,
        );
        match answer {
            Ok(r) if r.status == 200 && r.body == r#"{"ok":true}"# => {
                load.acks.lock().expect("acks").push(Ack { id, started });
                load.acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => load
                .failures
                .lock()
                .expect("failures")
                .push(format!("{id}: {} {}", r.status, r.body)),
            Err(e) => load
                .failures
                .lock()
                .expect("failures")
                .push(format!("{id}: no answer: {e}")),
        }
    }
}

/// Config A: every Ledger transaction to `first` (and the admin API, to watch the backlog).
fn routes_first_only(first: &Sink) -> String {
    format!(
        "{ADMIN}{}[[routes]]\nname = \"main\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         to = [\"first\"]\n",
        http_destination("first", first)
    )
}

/// Config B: A plus a route `mirror` sending the same events to `second`; `mirror_types` is
/// its type match.
fn routes_with_mirror(first: &Sink, second: &Sink, mirror_types: &str, broken: bool) -> String {
    let typo = if broken { "retries = 3\n" } else { "" };
    format!(
        "{ADMIN}{}{}\n{typo}\n[[routes]]\nname = \"main\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         to = [\"first\"]\n\n[[routes]]\nname = \"mirror\"\nmatch = {{ type = [\"{mirror_types}\"] }}\n\
         to = [\"second\"]\n",
        http_destination("first", first),
        http_destination("second", second).trim_end(),
    )
}

/// Ids of the acks whose request started at or after `from` (and before `to`, if given).
fn ids_started(acks: &[Ack], from: Instant, to: Option<Instant>) -> HashSet<String> {
    acks.iter()
        .filter(|a| a.started >= from && to.is_none_or(|t| a.started < t))
        .map(|a| a.id.clone())
        .collect()
}

#[test]
fn config_reloads_under_load_lose_nothing_and_apply_to_later_events() {
    let first = Sink::start(Mode::Ok);
    let second = Sink::start(Mode::Ok);
    let gw = Gateway::start_with_extra(&routes_first_only(&first));
    let path = gw.dir().join("gateway.toml");
    assert_eq!(reload_state(&gw), (1.0, 0.0, 0.0), "generation 1 at start");

    let (load, senders) = Load::start(gw.addr);
    load.run_phase("before any reload", &gw);

    // (1) A new route to a second sink, deployed atomically (temp file + rename).
    let good = full_config(
        &gw.db,
        &routes_with_mirror(&first, &second, "ledger.transaction.*", false),
    );
    write_atomic(&path, &good);
    let mirror_live = wait_metric(&gw, GENERATION, 2.0);
    assert_eq!(reload_state(&gw), (2.0, 1.0, 0.0), "one good reload");
    load.run_phase("after the mirror route was added", &gw);

    // (2) A broken config (unknown key), written in place: refused, the running config stays.
    let broken = full_config(
        &gw.db,
        &routes_with_mirror(&first, &second, "ledger.transaction.*", true),
    );
    write_in_place(&path, &broken);
    wait_metric(&gw, RELOADS_ERROR, 1.0);
    assert_eq!(
        reload_state(&gw),
        (2.0, 1.0, 1.0),
        "the broken config is refused and generation 2 keeps running"
    );
    let line = line_starting(&broken, "retries = 3");
    let stderr = gw.stderr();
    let at = format!("{}:{line}:", path.display());
    let problem = stderr
        .lines()
        .find(|l| l.contains(&at))
        .unwrap_or_else(|| panic!("no log line names {at}; stderr:\n{stderr}"));
    assert!(
        problem.contains("destinations.second.retries"),
        "the problem names the key: {problem}"
    );
    load.run_phase("after the broken config", &gw);

    // Everything sent since the mirror route went live reached the second sink too, including
    // the events that arrived while the broken file was on disk.
    let mirrored = ids_started(&load.acks(), mirror_live, None);
    assert!(mirrored.len() >= 2 * PHASE_ACKS, "{}", mirrored.len());
    wait_delivered(&second, &mirrored, "events after the mirror route", &gw);

    // (3) Back to a good config (deployed atomically): the mirror now matches only wallet
    // events, so the transactions sent from now on reach the first sink only.
    let narrowed = full_config(
        &gw.db,
        &routes_with_mirror(&first, &second, "ledger.wallet.*", false),
    );
    write_atomic(&path, &narrowed);
    let narrowed_live = wait_metric(&gw, GENERATION, 3.0);
    assert_eq!(
        reload_state(&gw),
        (3.0, 2.0, 1.0),
        "two good reloads, one refused"
    );
    load.run_phase("after the mirror was narrowed", &gw);

    load.finish(senders);
    let failures = load.failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "{} valid request(s) were not answered 200 {{\"ok\":true}}: {failures:?}",
        failures.len()
    );
    let acks = load.acks();
    let acked: HashSet<String> = acks.iter().map(|a| a.id.clone()).collect();
    assert_eq!(acked.len(), acks.len(), "ids are unique");

    // Every acked event reached the first sink, exactly once, signed.
    let got = wait_delivered(&first, &acked, "acked events to the first sink", &gw);
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for r in &got {
        let id = r.event_id().expect("webhook-id");
        *per_id.entry(id).or_default() += 1;
        assert!(verify(SINK_SECRET, r), "bad signature on {id}");
        assert!(acked.contains(id), "delivered an event nobody sent: {id}");
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");

    // Once every event is routed (its routing result, first attempts included, is committed),
    // the second sink holds none of the transactions sent after the mirror was narrowed.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = gw.admin("GET", "/admin/events?status=pending&limit=1");
        assert_eq!(r.status, 200, "{}", r.body);
        if r.json()["events"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events still pending {PATIENCE:?} after the last was delivered: {}; stderr:\n{}",
            r.body,
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = ids_started(&acks, narrowed_live, None);
    assert!(late.len() >= PHASE_ACKS, "{}", late.len());
    let wrongly: Vec<String> = second
        .received()
        .into_iter()
        .filter_map(|r| r.event_id().map(str::to_owned))
        .filter(|id| late.contains(id))
        .collect();
    assert!(
        wrongly.is_empty(),
        "{} event(s) sent after generation 3 went live still reached the old mirror: {:?}",
        wrongly.len(),
        &wrongly[..wrongly.len().min(10)]
    );
    assert_eq!(
        reload_state(&gw),
        (3.0, 2.0, 1.0),
        "no other reload happened"
    );
}

/// The long run (`--ignored soak_`): 20 rounds of three reloads under load (a new route
/// deployed atomically, a broken file written in place, a missing plugin deployed atomically,
/// then back to the first config): 40 good reloads, 40 refused, zero non-200 answers, every
/// acked event delivered once to the sink every config routes to.
#[test]
#[ignore = "soak: minutes; run with `--ignored soak_`"]
fn soak_eighty_reloads_under_load_lose_nothing() {
    const ROUNDS: usize = 20;
    let first = Sink::start(Mode::Ok);
    let second = Sink::start(Mode::Ok);
    let gw = Gateway::start_with_extra(&routes_first_only(&first));
    let path = gw.dir().join("gateway.toml");
    let mirror = full_config(
        &gw.db,
        &routes_with_mirror(&first, &second, "ledger.transaction.*", false),
    );
    let broken = full_config(
        &gw.db,
        &routes_with_mirror(&first, &second, "ledger.transaction.*", true),
    );
    let missing_plugin = full_config(
        &gw.db,
        &format!(
            "{ADMIN}{}[plugins.gone]\nwasm = \"{}\"\n\n[[routes]]\nname = \"main\"\n\
             match = {{ type = [\"ledger.transaction.*\"] }}\nplugins = [\"gone\"]\nto = [\"first\"]\n",
            http_destination("first", &first),
            gw.dir().join("no-such-plugin.wasm").display()
        ),
    );
    let first_only = full_config(&gw.db, &routes_first_only(&first));

    let (load, senders) = Load::start(gw.addr);
    let started = Instant::now();
    let (mut good, mut refused) = (0.0, 0.0);
    let phase = Duration::from_millis(250);
    // (what, config text, deployed atomically rather than rewritten in place, applied)
    let steps = [
        ("mirror route added", &mirror, true, true),
        ("broken file refused", &broken, false, false),
        ("missing plugin refused", &missing_plugin, true, false),
        ("back to the first config", &first_only, true, true),
    ];
    for round in 1..=ROUNDS {
        for (what, text, atomic, applied) in steps {
            if atomic {
                write_atomic(&path, text);
            } else {
                write_in_place(&path, text);
            }
            if applied {
                good += 1.0;
                wait_metric(&gw, RELOADS_OK, good);
            } else {
                refused += 1.0;
                wait_metric(&gw, RELOADS_ERROR, refused);
            }
            load.run_for(&format!("round {round}: {what}"), &gw, phase, 20);
        }
    }
    load.finish(senders);
    let loaded_for = started.elapsed();
    let failures = load.failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "{} valid request(s) were not answered 200: {failures:?}",
        failures.len()
    );
    assert_eq!(
        reload_state(&gw),
        (1.0 + good, good, refused),
        "every good change applied, every bad one refused"
    );
    let acked: HashSet<String> = load.acks().into_iter().map(|a| a.id).collect();
    let got = wait_delivered(&first, &acked, "acked events to the first sink", &gw);
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for r in &got {
        let id = r.event_id().expect("webhook-id");
        *per_id.entry(id).or_default() += 1;
        assert!(verify(SINK_SECRET, r), "bad signature on {id}");
    }
    let twice = per_id.values().filter(|n| **n > 1).count();
    eprintln!(
        "reload soak: {} reloads ({good} applied, {refused} refused) in {loaded_for:.1?} under \
         load; {} requests acknowledged, 0 failed, {} delivered to the first sink, {twice} twice",
        good + refused,
        acked.len(),
        per_id.len(),
    );
    assert_eq!(twice, 0, "delivered more than once");
}

// ---------------------------------------------------------------------------------------------
// b) Replacing a plugin component.
// ---------------------------------------------------------------------------------------------

/// A Ledger crypto deposit: `unify-payments` turns it into `payment.received`.
fn deposit(id: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"transaction.created","createdAt":1763856000000,"data":{{"id":"txn_{id}","type":"crypto_deposit","status":"funds_received","amount":"250.00","sourceCurrency":"usdt","txHash":"0x9f1c2b7a"}}}}"#
    )
    .into_bytes()
}

/// Starts a gateway whose config names `plugin.wasm` in its own temp dir (a copy of `wasm`),
/// run by route `deposits` on every Ledger transaction, delivering to `sink`.
fn start_with_plugin_copy(wasm: &str, sink: &Sink) -> (Gateway, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let plugin = dir.path().join("plugin.wasm");
    std::fs::copy(wasm, &plugin).expect("copy the first component");
    let extra = format!(
        "[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.p]\nwasm = \"{}\"\ntimeout = \"1s\"\n\n{}\
         [[routes]]\nname = \"deposits\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"p\"]\nto = [\"sink\"]\n",
        plugin.display(),
        http_destination("sink", sink)
    );
    std::fs::write(dir.path().join("gateway.toml"), full_config(&db, &extra))
        .expect("write config");
    (Gateway::start_in(dir, db), plugin)
}

/// Waits for the delivery of the envelope with this `id` and returns its body. (The
/// `webhook-id` header is the id itself when it is a plain token, else a `hashed-` form: ids
/// with `.`, such as `evt_1:payment.received`, are not allowed there by Standard Webhooks.)
pub(crate) fn delivered_body(sink: &Sink, id: &str) -> Value {
    let is_it = |r: &Received| r.answered == 200 && r.json()["id"] == id;
    let got = sink.wait_for(PATIENCE, &format!("delivery of {id}"), |r| {
        r.iter().any(is_it)
    });
    let r = got.iter().find(|r| is_it(r)).expect("found above");
    assert!(verify(SINK_SECRET, r), "signed");
    let plain = !id.contains('.');
    assert_eq!(
        r.event_id() == Some(id),
        plain,
        "webhook-id {:?} for id {id}",
        r.webhook_id
    );
    r.json()
}

#[test]
fn replacing_a_plugin_component_takes_effect_without_a_restart() {
    let sink = Sink::start(Mode::Ok);
    let (gw, plugin) = start_with_plugin_copy(ECHO, &sink);
    let pid = gw.pid();
    assert_eq!(reload_state(&gw), (1.0, 0.0, 0.0));

    // echo: the deposit is delivered as it came.
    gw.post_ledger(&deposit("evt_swap_1")).assert_accepted();
    let before = delivered_body(&sink, "evt_swap_1");
    assert_eq!(before["type"], "ledger.transaction.created", "{before}");
    assert_eq!(before["data"]["type"], "crypto_deposit", "{before}");
    assert_eq!(before["data"]["amount"], "250.00", "{before}");

    // unify-payments copied over the same file (in place): the next deposit comes out as
    // `payment.received`, from the same process.
    std::fs::copy(UNIFY_PAYMENTS, &plugin).expect("copy the second component over the first");
    wait_metric(&gw, GENERATION, 2.0);
    assert_eq!(reload_state(&gw), (2.0, 1.0, 0.0));
    gw.post_ledger(&deposit("evt_swap_2")).assert_accepted();
    let after = delivered_body(&sink, "evt_swap_2:payment.received");
    assert_eq!(after["type"], "payment.received", "{after}");
    assert_eq!(
        after["data"],
        json!({"amount": "250.00", "currency": "USDT", "provider": "ledger",
               "provider_reference": "0x9f1c2b7a", "status": "pending",
               "original_type": "ledger.transaction.created"}),
        "{after}"
    );

    // A file that is not a component: refused, the loaded unify-payments keeps running.
    std::fs::write(&plugin, b"not a wasm component").expect("break the component");
    wait_metric(&gw, RELOADS_ERROR, 1.0);
    assert_eq!(reload_state(&gw), (2.0, 1.0, 1.0));
    gw.post_ledger(&deposit("evt_swap_3")).assert_accepted();
    let kept = delivered_body(&sink, "evt_swap_3:payment.received");
    assert_eq!(kept["type"], "payment.received", "{kept}");

    assert_eq!(gw.pid(), pid);
    assert!(alive(pid), "the gateway process is still the one started");
    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_plugin_calls_total{plugin="p",result="pass"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"gateway_plugin_calls_total{plugin="p",result="emit"}"#
        ),
        2.0
    );
    assert_eq!(sink.received().len(), 3, "one delivery per event");
}

// ---------------------------------------------------------------------------------------------
// c) SIGHUP.
// ---------------------------------------------------------------------------------------------

fn hangup(gw: &Gateway) {
    let sent = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(gw.pid().to_string())
        .status()
        .expect("run kill(1)");
    assert!(sent.success(), "kill -HUP {}", gw.pid());
}

fn start_for_hangups(sink: &Sink) -> (Gateway, String) {
    let extra = format!(
        "{}[[routes]]\nname = \"all\"\nto = [\"sink\"]\n",
        http_destination("sink", sink)
    );
    (Gateway::start_with_extra(&extra), extra)
}

#[test]
fn sighup_reloads_an_unchanged_file_and_refuses_a_broken_one() {
    let sink = Sink::start(Mode::Ok);
    let (gw, extra) = start_for_hangups(&sink);
    let path = gw.dir().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("read config");

    // The same bytes deployed again: the watcher reloads, so it (and the SIGHUP listener,
    // installed before it) is certainly running. A change made in the first moments after the
    // listening line can go unseen (see the test below), so the deploy is repeated if no
    // reload follows within a few seconds.
    let mut tries = 0;
    while !try_reload_by_touch(&gw, &path, &text) {
        tries += 1;
        assert!(
            tries < 5,
            "no reload after {tries} deploys; stderr:\n{}",
            gw.stderr()
        );
    }
    let (g, ok, err) = reload_state(&gw);
    assert_eq!((ok, err), (g - 1.0, 0.0), "only good reloads so far");

    // Nothing changes on disk from here: each reload below is the signal's alone.
    hangup(&gw);
    wait_metric(&gw, GENERATION, g + 1.0);
    assert_eq!(reload_state(&gw), (g + 1.0, ok + 1.0, 0.0));
    hangup(&gw);
    wait_metric(&gw, GENERATION, g + 2.0);
    assert_eq!(reload_state(&gw), (g + 2.0, ok + 2.0, 0.0));
    assert!(alive(gw.pid()));

    // A broken file: the watcher refuses it once, SIGHUP refuses it again; the generation
    // before it keeps running.
    let broken = full_config(&gw.db, &format!("{extra}colour = \"blue\"\n"));
    write_in_place(&path, &broken);
    wait_metric(&gw, RELOADS_ERROR, 1.0);
    hangup(&gw);
    wait_metric(&gw, RELOADS_ERROR, 2.0);
    assert_eq!(reload_state(&gw), (g + 2.0, ok + 2.0, 2.0));
    let stderr = gw.stderr();
    let at = format!(
        "{}:{}:",
        path.display(),
        line_starting(&broken, "colour = ")
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains(&at) && l.contains("routes[0].colour"))
            .count(),
        2,
        "both refusals name {at} and the key; stderr:\n{stderr}"
    );
    gw.post_ledger(&ledger_txn("evt_after_hup"))
        .assert_accepted();
    let body = delivered_body(&sink, "evt_after_hup");
    assert_eq!(body["type"], "ledger.transaction.created");
    assert!(alive(gw.pid()));
}

/// A reload of a config with a secret written inline with the wrong type (issue 20) is refused
/// and logged with the file, line and key, never the value; the running config stays.
#[test]
fn a_refused_reload_never_logs_a_secret_written_with_the_wrong_type() {
    const SECRET: &str = "ledig-token-never-in-the-log-7f3e";
    let sink = Sink::start(Mode::Ok);
    let (gw, extra) = start_for_hangups(&sink);
    let path = gw.dir().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("read config");
    let ledig_token = "token = \"env:E2E_LEDIG_TOKEN\"\ntoken_header";
    for (broken, key) in [
        (
            text.replacen(
                ledig_token,
                &format!("token = {{ value = \"{SECRET}\" }}\ntoken_header"),
                1,
            ),
            "sources.ledig.token",
        ),
        (
            text.replacen(
                ledig_token,
                &format!("token = [\"{SECRET}\"]\ntoken_header"),
                1,
            ),
            "sources.ledig.token",
        ),
        (
            full_config(
                &gw.db,
                &format!("{extra}[admin]\ntoken = {{ value = \"{SECRET}\" }}\n"),
            ),
            "admin.token",
        ),
    ] {
        assert_ne!(broken, text, "{key}: the case changed the config");
        let refused_before = metric_or_zero(&gw, RELOADS_ERROR);
        write_in_place(&path, &broken);
        // The watcher may see the change first; SIGHUP makes sure of a reload either way.
        hangup(&gw);
        wait_until(&gw, "the broken config is refused", || {
            (metric_or_zero(&gw, RELOADS_ERROR) > refused_before).then_some(())
        });
        let stderr = gw.stderr();
        assert!(
            !stderr.contains(SECRET) && !stderr.contains(&SECRET[..16]),
            "{key}: the secret is in the log:\n{stderr}"
        );
        let at = format!("{}:", path.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&at) && l.contains(&format!("{key}: "))),
            "the refusal names the file and {key}; stderr:\n{stderr}"
        );
    }
    // The running config never changed: the Ledig token from the environment still opens it.
    gw.post_ledig(br#"{"event":"crypto_received","data":{"id":"dep_reload_secret"}}"#)
        .assert_accepted();
    assert!(alive(gw.pid()));
}

/// Deploys `text` (unchanged) atomically; whether a reload followed within 5 s.
fn try_reload_by_touch(gw: &Gateway, path: &Path, text: &str) -> bool {
    let before = metric_or_zero(gw, RELOADS_OK);
    write_atomic(path, text);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if metric_or_zero(gw, RELOADS_OK) > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A gateway started by bash, which reads its `listening on` line and at once (builtin `kill`:
/// no fork or exec in between, as an init system's reload would) sends it SIGHUP, then prints
/// `PID LINE`. Both processes are killed on drop.
struct HungUpAtStart {
    bash: std::process::Child,
    pid: u32,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl HungUpAtStart {
    fn start(extra: &str) -> Self {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("gateway.db");
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, full_config(&db, extra)).expect("write config");
        let script = r#"exec 3< <(exec "$0" run --config "$1" 2>>"$2"); pid=$!
IFS= read -r line <&3; kill -HUP "$pid"; echo "$pid $line"; exec cat <&3 >/dev/null"#;
        let mut bash = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(gateway_bin())
            .arg(&config_path)
            .arg(dir.path().join("stderr.log"))
            .envs(env_vars())
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn bash");
        let mut first = String::new();
        std::io::BufReader::new(bash.stdout.take().expect("piped"))
            .read_line(&mut first)
            .expect("read the first line");
        let (pid, line) = first
            .trim()
            .split_once(' ')
            .unwrap_or_else(|| panic!("first line {first:?}"));
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("first line {first:?}"));
        Self {
            bash,
            pid: pid.parse().expect("a pid"),
            addr,
            dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for HungUpAtStart {
    fn drop(&mut self) {
        drop(
            std::process::Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .status(),
        );
        drop(self.bash.kill());
        drop(self.bash.wait());
    }
}

/// Init systems send SIGHUP whenever the operator reloads, possibly right after the start: once
/// the gateway has said it listens, SIGHUP must reload it, never terminate it (the default
/// action of SIGHUP for a process that has not installed its handler yet).
#[test]
fn sighup_right_after_the_listening_line_reloads_instead_of_killing() {
    let gw = HungUpAtStart::start("");
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            alive(gw.pid),
            "SIGHUP right after `listening on` killed the gateway; stderr:\n{}",
            gw.stderr()
        );
        if try_request(gw.addr, "GET", "/metrics", &[], b"")
            .is_ok_and(|r| r.status == 200 && metric(&r.body, GENERATION) >= 2.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reload within {PATIENCE:?} of the SIGHUP; stderr:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = request(gw.addr, "GET", "/metrics", &[], b"").body;
    assert_eq!((metric(&m, GENERATION), metric(&m, RELOADS_OK)), (2.0, 1.0));
}

/// The same for the file watcher: a deploy right after the listening line is not missed.
#[test]
fn a_config_deployed_right_after_the_listening_line_is_applied() {
    let sink = Sink::start(Mode::Ok);
    let (gw, extra) = start_for_hangups(&sink);
    let path = gw.dir().join("gateway.toml");
    write_atomic(
        &path,
        &full_config(
            &gw.db,
            &format!("{extra}match = {{ type = [\"ledger.wallet.*\"] }}\n"),
        ),
    );
    wait_metric(&gw, GENERATION, 2.0);
    assert_eq!(reload_state(&gw), (2.0, 1.0, 0.0));
}
