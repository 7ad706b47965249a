//! The operator console (issue 22) against the real binary: `[admin] listen` puts the admin
//! API and the console on their own listener (the webhook port shows neither), named tokens
//! have roles enforced server side, sessions are signed cookies whose state changes need the
//! CSRF value, and a real browser (Debian's `chromium`, driven by npm's `playwright-core`,
//! `tests/browser/console.mjs`) signs in, finds an event and its timeline, redrives a real
//! dead letter until the sink has it, replays by filter after a dry-run count, is refused as
//! a viewer and without CSRF, and shows hostile event fields as text. Screenshots of every
//! page go to `target/console-screenshots/`.

use crate::admin_api::ledger_with_data;
use crate::harness::*;
use crate::plugin_harness::CACHE_DIR;
use crate::reload::{GENERATION, RELOADS_ERROR, http_destination, wait_metric};
use crate::sink::{Mode, Sink};
use plugin_artifacts::{STATEFUL, UNIFY_PAYMENTS};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const VIEWER_TOKEN: &str = "viewer-e2e-token-77c1";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The standard config with a console on its own port, an operator (`ops`, the standard admin
/// token) and a viewer, every event routed to `sink`, the example plugin loaded (for dry
/// runs only: no route uses it), and a route `screened` whose plugin traps on the events of
/// type `ledger.transaction.screened` that say `"poison":true` (a dead plugin stage).
fn start(sink: &Sink) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let text = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[admin.tokens]]\nname = \"ops\"\nrole = \"operator\"\ntoken = \"env:E2E_ADMIN_TOKEN\"\n\
         [[admin.tokens]]\nname = \"watcher\"\nrole = \"viewer\"\ntoken = \"env:E2E_VIEWER_TOKEN\"\n\n\
         [wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.unify]\nwasm = \"{UNIFY_PAYMENTS}\"\n\n\
         [plugins.stateful]\nwasm = \"{STATEFUL}\"\nmode = \"fresh\"\ntimeout = \"1s\"\n\n\
         {}[[routes]]\nname = \"all\"\nto = [\"sink\"]\n\n\
         [[routes]]\nname = \"screened\"\nmatch = {{ type = [\"ledger.transaction.screened\"] }}\n\
         plugins = [\"stateful\"]\nto = [\"sink\"]\n",
        config(&db, &Settings::default()),
        http_destination("sink", sink)
    );
    std::fs::write(dir.path().join("gateway.toml"), text).expect("write config");
    Gateway::start_in_with(dir, db, |c| {
        c.env("E2E_VIEWER_TOKEN", VIEWER_TOKEN);
    })
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

fn get_json(admin: SocketAddr, path: &str) -> Value {
    let r = request(admin, "GET", path, &[bearer(ADMIN_TOKEN)], b"");
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.json()
}

/// Polls `check` until it gives a value; panics after [`PATIENCE`].
fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The seq and status of the stored event with envelope id `id`.
fn find(admin: SocketAddr, id: &str) -> Option<(i64, String)> {
    get_json(admin, "/admin/events?limit=1000")["events"]
        .as_array()?
        .iter()
        .find(|e| e["id"] == id)
        .and_then(|e| Some((e["seq"].as_i64()?, e["status"].as_str()?.to_owned())))
}

fn routed(admin: SocketAddr, id: &str) -> i64 {
    poll(&format!("{id} routed"), || {
        find(admin, id).and_then(|(seq, status)| (status != "pending").then_some(seq))
    })
}

#[test]
fn the_admin_listener_is_the_only_admin_surface_and_roles_sessions_and_csrf_hold() {
    let sink = Sink::start(Mode::Ok);
    let gw = start(&sink);
    let admin = gw.admin_addr();
    // The webhook port shows no admin surface at all; the admin port serves nothing else.
    gw.admin("GET", "/admin/events").assert_error(404);
    gw.get("/console/").assert_error(404);
    gw.get("/admin/openapi.yaml").assert_error(404);
    request(admin, "GET", "/healthz", &[], b"").assert_error(404);
    let shell = request(admin, "GET", "/console/events/1", &[], b"");
    assert_eq!(shell.status, 200);
    let csp = shell.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(shell.header("x-content-type-options"), Some("nosniff"));

    // Roles, server side: the viewer reads, and every change it asks for is 403 JSON.
    let viewer = bearer(VIEWER_TOKEN);
    assert_eq!(
        request(
            admin,
            "GET",
            "/admin/events",
            std::slice::from_ref(&viewer),
            b""
        )
        .status,
        200
    );
    for path in [
        "/admin/dead-letters/redrive",
        "/admin/replay?all=true",
        "/admin/events/1/replay",
    ] {
        let r = request(admin, "POST", path, std::slice::from_ref(&viewer), b"");
        r.assert_error(403);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or_default()
                .contains("viewer"),
            "{}",
            r.body
        );
    }
    let r = request(
        admin,
        "POST",
        "/admin/dead-letters/redrive?dry_run=true",
        &[bearer(ADMIN_TOKEN)],
        b"",
    );
    assert_eq!(
        (r.status, r.json()["would_redrive"].as_u64()),
        (200, Some(0)),
        "{}",
        r.body
    );

    // A failed sign-in: 401, counted, logged with the client, never with the token tried.
    let wrong = br#"{"token":"guess-5f1e-not-configured"}"#;
    request(admin, "POST", "/admin/session", &[], wrong).assert_error(401);
    let metrics = gw.get("/metrics").body;
    assert!(
        metrics.contains("gateway_admin_sign_ins_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    let lines = poll("the sign-in refusal's log line", || {
        let l = gw.log_lines("console sign-in refused");
        (!l.is_empty()).then_some(l)
    });
    assert!(lines[0].contains("127.0.0.1"), "{lines:?}");
    assert!(
        !gw.stderr().contains("guess-5f1e"),
        "the token tried was logged"
    );

    // A session: a signed cookie; a change by cookie needs the CSRF value.
    let body = format!(r#"{{"token":"{ADMIN_TOKEN}"}}"#);
    let r = request(admin, "POST", "/admin/session", &[], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP from a client that is no proxy: {set}"
    );
    let session = r.json();
    assert_eq!(
        (session["name"].as_str(), session["role"].as_str()),
        (Some("ops"), Some("operator"))
    );
    let csrf = session["csrf"].as_str().expect("csrf").to_owned();
    let cookie = (
        "Cookie",
        set.split(';').next().unwrap_or_default().to_owned(),
    );
    let me = request(
        admin,
        "GET",
        "/admin/session",
        std::slice::from_ref(&cookie),
        b"",
    );
    assert_eq!(me.json()["csrf"], csrf.as_str());
    let redrive = "/admin/dead-letters/redrive?dry_run=true";
    let r = request(admin, "POST", redrive, std::slice::from_ref(&cookie), b"");
    r.assert_error(403);
    let wrong_csrf = ("X-CSRF-Token", "0".repeat(64));
    request(admin, "POST", redrive, &[cookie.clone(), wrong_csrf], b"").assert_error(403);
    let with_csrf = ("X-CSRF-Token", csrf.clone());
    assert_eq!(
        request(
            admin,
            "POST",
            redrive,
            &[cookie.clone(), with_csrf.clone()],
            b""
        )
        .status,
        200
    );
    // An edited cookie is nobody's; a signed-out one is refused from then on.
    let forged = ("Cookie", format!("{}x", cookie.1));
    request(admin, "GET", "/admin/session", &[forged], b"").assert_error(401);
    let end = request(
        admin,
        "POST",
        "/admin/session/end",
        &[cookie.clone(), with_csrf],
        b"",
    );
    assert_eq!(end.status, 200, "{}", end.body);
    assert!(
        end.header("set-cookie")
            .unwrap_or_default()
            .contains("Max-Age=0")
    );
    request(admin, "GET", "/admin/session", &[cookie], b"").assert_error(401);

    // Refusals are listed, without secrets.
    let rejected = get_json(admin, "/admin/rejected");
    let text = rejected.to_string();
    assert!(text.contains("console sign-in: no such token"), "{text}");
    assert!(!text.contains("guess-5f1e"), "{text}");

    // Tokens reload with the config, and a changed token set ends every session.
    let r = request(admin, "POST", "/admin/session", &[], body.as_bytes());
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    let cookie = (
        "Cookie",
        set.split(';').next().unwrap_or_default().to_owned(),
    );
    assert_eq!(
        request(
            admin,
            "GET",
            "/admin/session",
            std::slice::from_ref(&cookie),
            b""
        )
        .status,
        200
    );
    let path = gw.dir().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let third =
        "[[admin.tokens]]\nname = \"robot\"\nrole = \"viewer\"\ntoken = \"env:E2E_LEDIG_TOKEN\"\n";
    std::fs::write(&path, text.replace("\n[wasm]", &format!("{third}\n[wasm]"))).expect("write");
    wait_metric(&gw, GENERATION, 2.0);
    request(admin, "GET", "/admin/session", &[cookie], b"").assert_error(401);
    let robot = request(admin, "GET", "/admin/session", &[bearer(LEDIG_TOKEN)], b"").json();
    assert_eq!(robot["role"], "viewer", "{robot}");
    // A refused reload is on the overview, with the file, line and key of each problem.
    let broken = std::fs::read_to_string(&path).expect("config").replace(
        "role = \"viewer\"\ntoken = \"env:E2E_LEDIG",
        "role = \"root\"\ntoken = \"env:E2E_LEDIG",
    );
    std::fs::write(&path, broken).expect("write");
    wait_metric(&gw, RELOADS_ERROR, 1.0);
    let overview = get_json(admin, "/admin/overview");
    let last = &overview["config"]["last_reload"];
    assert_eq!(last["ok"], false, "{overview}");
    let problems = last["problems"].to_string();
    assert!(
        problems.contains("gateway.toml:") && problems.contains("admin.tokens[2].role"),
        "{problems}"
    );
    assert_eq!(overview["config"]["generation"], 2.0, "{overview}");
}

/// `npm ci` in tests/browser when its node_modules is missing.
fn browser_tools() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser");
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's `chromium` package (.ci/run does)"
    );
    if !dir.join("node_modules/playwright-core").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm (node and npm 20+ must be on the PATH)");
        assert!(ok.success(), "npm ci in tests/browser failed");
    }
    dir
}

#[test]
fn the_console_works_in_a_real_browser_and_shows_hostile_data_as_text() {
    let tools = browser_tools();
    let sink = Sink::start(Mode::Ok);
    let gw = start(&sink);
    let admin = gw.admin_addr();

    // An event to find, delivered.
    let find_id = "evt_console_find";
    assert_eq!(
        gw.post_ledger(&ledger_with_data(
            find_id,
            r#"{"id":"txn_console_find","amount":"12.50","currency":"USDT"}"#
        ))
        .status,
        200
    );
    let find_seq = routed(admin, find_id);
    poll("the first delivery", || {
        (!sink.delivered().is_empty()).then_some(())
    });

    // One whose plugin stage dies (route `screened`), for the redrive of plugin stages.
    let screened = br#"{"id":"evt_console_screened","type":"transaction.screened","createdAt":1763856000000,"data":{"poison":true}}"#;
    assert_eq!(gw.post_ledger(screened).status, 200);
    poll("the dead plugin stage", || {
        let d = get_json(admin, "/admin/dead-letters");
        (d["route_runs"].as_array()?.len() == 1).then_some(())
    });

    // A hostile one: every field is text for the console.
    let long = "W".repeat(6000);
    let hostile = format!(
        r#"{{"id":"txn_h","amount":"<script>window.__pwned=1</script>","currency":"\"><img src=x onerror=window.__pwned=1>","link":"javascript:window.__pwned=1","note":"{long}"}}"#
    );
    assert_eq!(
        gw.post_ledger(&ledger_with_data("evt_console_hostile", &hostile))
            .status,
        200
    );
    let hostile_seq = routed(admin, "evt_console_hostile");

    // Three Ledig events, routed, for the replay by filter.
    for i in 1..=3 {
        let body = format!(
            r#"{{"event":"crypto_received","data":{{"id":"dep_c{i}","coin":"USDT","Amount":"1.5","status":"completed"}}}}"#
        );
        assert_eq!(gw.post_ledig(body.as_bytes()).status, 200);
    }
    let ledig_seq = poll("the ledig events routed", || {
        let events = get_json(admin, "/admin/events?source=ledig");
        let list = events["events"].as_array()?.clone();
        (list.len() == 3 && list.iter().all(|e| e["status"] != "pending"))
            .then(|| list[0]["seq"].as_i64())
            .flatten()
    });

    // Two deliveries that dead-letter (the sink refuses every attempt), with amounts in one
    // currency that floating point would not sum exactly (99.00 + 0.10 + ...).
    sink.set_mode(Mode::Always(500));
    let dead_id = "evt_console_dead";
    let dead_id2 = "evt_console_dead_2";
    for (id, amount) in [(dead_id, "99.00"), (dead_id2, "0.10")] {
        let data = format!(r#"{{"id":"txn_{id}","amount":"{amount}","currency":"eur"}}"#);
        assert_eq!(gw.post_ledger(&ledger_with_data(id, &data)).status, 200);
    }
    let dead_delivery = poll("the dead letters", || {
        let d = get_json(admin, "/admin/dead-letters");
        let list = d["deliveries"].as_array()?;
        (list.len() == 2)
            .then(|| list.last()?["id"].as_i64())
            .flatten()
    });
    let groups = get_json(admin, "/admin/dead-letters/groups");
    assert_eq!(groups["groups"][0]["count"], 2, "{groups}");
    assert_eq!(
        groups["groups"][0]["amounts"][0],
        serde_json::json!({"currency": "EUR", "sum": "99.10"}),
        "{groups}"
    );
    // From now on the sink answers 200: a redrive from the page delivers it.
    sink.set_mode(Mode::Ok);

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let started = Instant::now();
    let out = Command::new("node")
        .arg(tools.join("console.mjs"))
        .current_dir(&tools)
        .env("CONSOLE", format!("http://{admin}"))
        .env("OPERATOR_TOKEN", ADMIN_TOKEN)
        .env("VIEWER_TOKEN", VIEWER_TOKEN)
        .env("FIND_SEQ", find_seq.to_string())
        .env("FIND_ID", find_id)
        .env("HOSTILE_SEQ", hostile_seq.to_string())
        .env("DEAD_DELIVERY", dead_delivery.to_string())
        .env("REPLAY_SOURCE", "ledig")
        .env("REPLAY_COUNT", "3")
        .env("DRY_RUN_SEQ", ledig_seq.to_string())
        .env("SCREENSHOTS", &shots)
        .output()
        .expect("run node");
    let took = started.elapsed();
    let report = format!(
        "stdout:\n{}\nstderr:\n{}\ngateway:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.stderr()
    );
    assert!(
        out.status.success(),
        "the browser scenarios failed ({took:?})\n{report}"
    );

    // The redrives from the page (one, then the rest by filter) got both delivered.
    poll("the redriven deliveries", || {
        let delivered = sink.delivered();
        [dead_id, dead_id2]
            .iter()
            .all(|id| delivered.iter().any(|r| r.event_id() == Some(id)))
            .then_some(())
    });
    // A redrive of one destination's dead deliveries: counted first, then exactly those.
    sink.set_mode(Mode::Always(500));
    let again = "evt_console_dead_again";
    let body = ledger_with_data(again, r#"{"id":"txn_d2","amount":"5.00"}"#);
    assert_eq!(gw.post_ledger(&body).status, 200);
    poll("a second dead letter", || {
        let d = get_json(admin, "/admin/dead-letters");
        (d["deliveries"].as_array()?.len() == 1).then_some(())
    });
    sink.set_mode(Mode::Ok);
    let redrive = |query: &str| {
        let path = format!("/admin/dead-letters/redrive?{query}");
        let r = request(admin, "POST", &path, &[bearer(ADMIN_TOKEN)], b"");
        assert!(r.status == 200 || r.status == 202, "{path}: {}", r.body);
        r.json()
    };
    assert_eq!(
        redrive("destination=elsewhere&dry_run=true")["would_redrive"],
        0
    );
    assert_eq!(redrive("destination=sink&dry_run=true")["would_redrive"], 1);
    assert_eq!(redrive("destination=sink")["redriven"], 1);
    poll("the destination's redriven delivery", || {
        sink.delivered()
            .iter()
            .any(|r| r.event_id() == Some(again))
            .then_some(())
    });

    // The plugin's dry run delivered nothing: no payment.received ever reached the sink.
    assert!(
        sink.delivered()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("payment.received")),
        "a dry run delivered its result"
    );
    // The audit trail names who did it, with the counts the page showed.
    let audit = get_json(admin, "/admin/audit");
    let records: Vec<(String, String, u64)> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("actor"), s("action"), r["count"].as_u64().unwrap_or(0))
        })
        .collect();
    assert!(
        records.contains(&("ops".into(), "redrive".into(), 1)),
        "{records:?}"
    );
    assert!(
        audit
            .to_string()
            .contains("dead plugin stages route=screened"),
        "the plugin stages redriven from the page: {audit}"
    );
    assert!(
        records.contains(&("ops".into(), "replay".into(), 3)),
        "{records:?}"
    );
    assert!(
        records.iter().all(|(who, ..)| who == "ops"),
        "the viewer changed something: {records:?}"
    );
    for page in [
        "overview",
        "events",
        "event",
        "event-hostile",
        "dead-letters",
        "replay-dry-run",
        "audit",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
}
