//! The admin API against its OpenAPI description, `docs/openapi.yaml`: the gateway serves the
//! document at `/admin/openapi.yaml` (without the token; 404 without `[admin]`), every admin
//! path answers its one method (405 with `Allow` otherwise) and refuses the query parameters it
//! does not take, and schemathesis checks a running gateway holding real events, dead letters
//! and quarantined bodies against the document: every status code, content type, header and
//! body as documented, nothing 5xx. openapi-spec-validator checks the document itself.
//!
//! schemathesis and openapi-spec-validator come from PyPI, pinned with every dependency in
//! `schemathesis/requirements.txt`, installed into a venv under `target/py-tools` when it is
//! missing or the pins changed (`python3` with `venv` is all the machine needs).

use crate::admin_api::ledger_with_data;
use crate::harness::*;
use crate::plugin_harness::CACHE_DIR;
use crate::reload::{ADMIN, http_destination};
use crate::sink::{Mode, Sink};
use plugin_artifacts::STATEFUL;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The document as the repository has it; the gateway must serve exactly this.
const DOCUMENT: &str = include_str!("../../docs/openapi.yaml");
/// Where schemathesis and the validator read it (the served copy is the same bytes, see above;
/// schemathesis tests the operation that serves it only when the document comes from a file).
const DOCUMENT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
const REQUIREMENTS: &str = include_str!("schemathesis/requirements.txt");

#[test]
fn the_openapi_document_is_served_without_the_token() {
    let gw = Gateway::start_with_extra(ADMIN);
    for (what, r) in [
        ("no token", gw.get("/admin/openapi.yaml")),
        ("the token", gw.admin("GET", "/admin/openapi.yaml")),
    ] {
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/yaml"), "{what}");
        assert!(r.body == DOCUMENT, "{what}: not docs/openapi.yaml");
    }
    let r = gw.request("POST", "/admin/openapi.yaml", &[], b"");
    r.assert_error(405);
    assert_eq!(r.header("allow"), Some("GET"), "{:?}", r.headers);
    gw.get("/admin/openapi.yaml?format=json").assert_error(400);
    // Only the document is public: its neighbours still want the token.
    gw.get("/admin/openapi.json").assert_error(401);
    gw.get("/admin/plugins").assert_error(401);

    // Without [admin] it is 404 like every /admin/ path.
    let plain = Gateway::start();
    plain.get("/admin/openapi.yaml").assert_error(404);
    plain.admin("GET", "/admin/openapi.yaml").assert_error(404);
}

/// Each admin path takes one method and a fixed set of parameters (issue 23, found by
/// schemathesis): before, a 405 had no `Allow`, paths below a known one (`/admin/deliveries`,
/// `/admin/events/1/x`) were 405 instead of 404, and parameters of other endpoints were
/// silently ignored (`status=bogus` on the dead letters, `all=true` on a single replay).
#[test]
fn admin_paths_answer_one_method_and_refuse_parameters_they_do_not_take() {
    let gw = Gateway::start_with_extra(ADMIN);
    gw.post_ledger(&ledger_with_data("evt_oa_1", "{}"))
        .assert_accepted();
    for (method, path, allow) in [
        ("GET", "/admin/events/1/replay", "POST"),
        ("PUT", "/admin/events", "GET"),
        ("DELETE", "/admin/events/1", "GET"),
        ("GET", "/admin/replay", "POST"),
        ("POST", "/admin/dead-letters", "GET"),
        ("GET", "/admin/dead-letters/redrive", "POST"),
        ("GET", "/admin/deliveries/1/redrive", "POST"),
        ("PATCH", "/admin/route-runs/1/redrive", "POST"),
        ("POST", "/admin/plugins", "GET"),
        ("POST", "/admin/quarantine/1", "GET"),
        ("PUT", "/admin/session", "GET, POST"),
        ("GET", "/admin/session/end", "POST"),
    ] {
        let r = gw.admin(method, path);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    for (method, path) in [
        ("GET", "/admin/deliveries"),
        ("POST", "/admin/deliveries/1"),
        ("GET", "/admin/events/1/deliveries"),
        ("POST", "/admin/events/1/replay/now"),
        ("GET", "/admin/route-runs"),
        ("GET", "/admin"),
    ] {
        gw.admin(method, path).assert_error(404);
    }
    for (method, path, error) in [
        (
            "GET",
            "/admin/dead-letters?status=bogus",
            "`status` does not apply to /admin/dead-letters (it takes: limit)",
        ),
        (
            "POST",
            "/admin/events/1/replay?all=true",
            "`all` does not apply to /admin/events/{seq}/replay (it takes: no parameters)",
        ),
        (
            "GET",
            "/admin/events?all=true",
            "`all` does not apply to /admin/events \
             (it takes: source, type, id, subject, status, since, until, before, limit)",
        ),
        (
            "GET",
            "/admin/plugins?limit=5",
            "`limit` does not apply to /admin/plugins (it takes: no parameters)",
        ),
        (
            "POST",
            "/admin/replay?tpye=x",
            "`tpye` does not apply to /admin/replay \
             (it takes: source, type, id, subject, status, since, until, before, limit, all, \
             dry_run)",
        ),
    ] {
        let r = gw.admin(method, path);
        r.assert_error(400);
        assert_eq!(r.json()["error"], error, "{method} {path}");
    }
    // Nothing was marked by the refused replay.
    let event = gw.admin("GET", "/admin/events/1").json();
    assert_ne!(event["status"], "replay", "{event}");
}

/// schemathesis against a gateway with something in every listing. Phases examples, coverage
/// and fuzzing; every check (`--checks all`), a fixed seed, 20 examples per operation (a longer
/// hunt: `E2E_SCHEMATHESIS_EXAMPLES=500 E2E_SCHEMATHESIS_SEED=7`).
/// Replays and redrives run for real: the events go again to the failing sink and die again,
/// nothing leaves the machine.
#[test]
fn schemathesis_finds_the_admin_api_as_documented() {
    let venv = python_tools();
    let validated =
        run(Command::new(venv.join("bin").join("openapi-spec-validator")).arg(DOCUMENT_PATH));
    assert!(validated.status.success(), "{}", describe(&validated));

    let examples = std::env::var("E2E_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "20".into());
    let seed = std::env::var("E2E_SCHEMATHESIS_SEED").unwrap_or_else(|_| "23".into());
    let (gw, _sink) = gateway_with_dead_letters_and_quarantine();
    let base = format!("http://{}", gw.addr);
    let started = Instant::now();
    let out = run(Command::new(venv.join("bin").join("schemathesis"))
        .current_dir(gw.dir())
        .arg("--no-color")
        .arg("--config-file")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/e2e/schemathesis/schemathesis.toml"
        ))
        .args(["run", DOCUMENT_PATH, "--url", &base])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing"])
        .args([
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--workers",
            "1",
        ])
        .args(["--generation-database", "none", "--request-timeout", "10"]));
    let report = describe(&out);
    assert!(
        out.status.success(),
        "schemathesis found the API not as documented:\n{report}\ngateway stderr:\n{}",
        gw.stderr()
    );
    eprintln!("schemathesis took {:?}\n{report}", started.elapsed());
    // It tested every operation, and sent real traffic, not just the schema download.
    assert!(report.contains("Tested: 23"), "{report}");
    let m = gw.metrics();
    let reads = metric(
        &m,
        r#"gateway_admin_requests_total{action="read",result="ok"}"#,
    );
    let rejected = metric(
        &m,
        r#"gateway_admin_requests_total{action="read",result="rejected"}"#,
    );
    assert!(
        reads >= 50.0 && rejected >= 20.0,
        "{reads} ok, {rejected} rejected"
    );
    // The gateway serves on.
    let events = gw.admin("GET", "/admin/events");
    assert_eq!(events.status, 200, "{}", events.body);
}

/// A gateway whose every listing has rows: events routed through a plugin to a sink that
/// always answers 500 (dead deliveries), one event the plugin traps on (a dead plugin stage),
/// and two quarantined bodies (one UTF-8, one not). Returns when the dead letters are there.
fn gateway_with_dead_letters_and_quarantine() -> (Gateway, Sink) {
    let sink = Sink::start(Mode::Always(500));
    let gw = Gateway::start_with_extra(&format!(
        "{ADMIN}[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.stateful]\nwasm = \"{STATEFUL}\"\n\
         mode = \"fresh\"\ntimeout = \"1s\"\n\n{}{}\nordering = \"subject\"\n\n[[routes]]\n\
         name = \"txns\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"stateful\"]\nto = [\"failing\"]\n\n[[routes]]\nname = \"in-order\"\n\
         match = {{ type = [\"ledger.transaction.*\"] }}\nplugins = []\nto = [\"ordered\"]\n",
        http_destination("failing", &sink),
        // Its dead letters hold their subjects: the blocked-subjects list has entries.
        http_destination("ordered", &sink).trim_end(),
    ));
    for i in 1..=3 {
        let data = format!(r#"{{"id":"txn_oa_{i}","amount":"{i}.00"}}"#);
        gw.post_ledger(&ledger_with_data(&format!("evt_oa_{i}"), &data))
            .assert_accepted();
    }
    gw.post_ledger(&ledger_with_data("evt_oa_poison", r#"{"poison":true}"#))
        .assert_accepted();
    gw.post_ledger(b"{\"id\":\"evt_oa_cut\",\"type\":")
        .assert_error(400);
    gw.post_ledger(&[0xff, 0xfe, 0x00, b'{']).assert_error(400);

    let deadline = Instant::now() + PATIENCE;
    loop {
        let dead = gw.admin("GET", "/admin/dead-letters").json();
        let len = |key: &str| dead[key].as_array().map_or(0, Vec::len);
        let blocked = gw.admin("GET", "/admin/blocked-subjects").json();
        let held = blocked["blocked_subjects"].as_array().map_or(0, Vec::len);
        // 3 to `failing`, 4 to `ordered` (the poisoned event has no subject: not held).
        if len("deliveries") == 7 && len("route_runs") == 1 && held == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 7 dead deliveries, 1 dead route run and 3 blocked subjects within {PATIENCE:?}: \
             {dead}\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let quarantined = gw.admin("GET", "/admin/quarantine").json();
    assert_eq!(
        quarantined["quarantine"].as_array().map(Vec::len),
        Some(2),
        "{quarantined}"
    );
    assert_eq!(quarantined["quarantine"][0]["body_text"], Value::Null);
    (gw, sink)
}

/// The venv with the pinned tools, made when missing or when the pins changed. One test
/// process at a time makes it (a lock file beside it).
fn python_tools() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-tools");
    std::fs::create_dir_all(&tools).expect("create target/py-tools");
    let lock = std::fs::File::create(tools.join("schemathesis.lock")).expect("create the lock");
    lock.lock().expect("lock target/py-tools");
    let venv = tools.join("schemathesis");
    let stamp = venv.join("requirements.txt");
    let current = std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS);
    if current && venv.join("bin").join("schemathesis").is_file() {
        return venv;
    }
    let python = std::env::var_os("PYTHON3").unwrap_or_else(|| "python3".into());
    let made = run(Command::new(python)
        .args(["-m", "venv", "--clear"])
        .arg(&venv));
    assert!(
        made.status.success(),
        "python3 -m venv (needs Python 3.9+ with venv, or $PYTHON3):\n{}",
        describe(&made)
    );
    let requirements = tools.join("schemathesis-requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).expect("write the requirements");
    let installed = run(Command::new(venv.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("-r")
        .arg(&requirements));
    assert!(
        installed.status.success(),
        "pip install:\n{}",
        describe(&installed)
    );
    std::fs::write(&stamp, REQUIREMENTS).expect("write the stamp");
    venv
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
