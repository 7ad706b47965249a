//! The C example plugin (`plugins/c/large-deposits`), built from source by
//! `tests/plugin-artifacts` with clang and the wit-bindgen-c / wit-component libraries: through
//! the plugin host, through a running gateway on a route to a real HTTP destination, and its
//! own native C tests (`decimal_test.c`; `handle_test.c` under valgrind, which catches the
//! ownership mistakes the C bindings allow). It never checks a hand-built component.

use crate::harness::*;
use crate::plugin_harness::*;
use crate::reload::{ADMIN, full_config, http_destination, wait_delivered};
use crate::sink::{Mode, Sink};
use gateway::config::InstanceMode;
use plugin_artifacts::{LARGE_DEPOSITS_C, LARGE_DEPOSITS_C_BINDINGS};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn c_large_deposits_tags_large_deposits_passes_small_ones_and_needs_its_threshold() {
    let input = fixture_event("ledig", "crypto_received"); // "Amount": "150.25"
    for mode in [InstanceMode::Fresh, warm()] {
        let flag = load(LARGE_DEPOSITS_C, mode, &[("threshold", "150.25")]);
        // Twice: a warm instance must survive its own post-return frees.
        for _ in 0..2 {
            let out = expect_pass(flag.call(&input).outcome);
            assert_eq!(extension(&out, "largedeposit"), Some("true"));
            assert_eq!(out.data.get(), input.data.get(), "data untouched");
            assert_eq!(out.id, input.id);
        }

        let below = load(LARGE_DEPOSITS_C, mode, &[("threshold", "150.26")]);
        let out = expect_pass(below.call(&input).outcome);
        assert_eq!(out.to_envelope_json(), input.to_envelope_json());

        let unconfigured = load(LARGE_DEPOSITS_C, mode, &[]);
        let outcome = unconfigured.call(&input).outcome;
        assert_eq!(
            reason(&outcome),
            ("fatal", "setting `threshold` is required")
        );

        let not_a_number = load(LARGE_DEPOSITS_C, mode, &[("threshold", "1e3")]);
        let outcome = not_a_number.call(&input).outcome;
        assert_eq!(
            reason(&outcome),
            ("fatal", "setting `threshold` is not a decimal: 1e3")
        );
    }
}

/// An existing `largedeposit` pair is replaced, not duplicated (the gateway would refuse a
/// second pair of the same name), and `amount_field` picks the key.
#[test]
fn c_large_deposits_replaces_an_existing_extension_and_reads_the_configured_field() {
    let plugin = load(
        LARGE_DEPOSITS_C,
        warm(),
        &[("threshold", "1000"), ("amount_field", "Total")],
    );
    let mut input = event_with_data("evt_c_1", r#"{"amount":"1.00","total":"2500.00"}"#);
    input
        .extensions
        .push(("largedeposit".to_owned(), "false".to_owned()));
    let out = expect_pass(plugin.call(&input).outcome);
    let pairs: Vec<&(String, String)> = out
        .extensions
        .iter()
        .filter(|(name, _)| name == "largedeposit")
        .collect();
    assert_eq!(pairs, [&("largedeposit".to_owned(), "true".to_owned())]);
}

/// The component in a running gateway: one route tags and delivers, the other route's copy of
/// the plugin lacks its setting, so that route's run is a dead letter whose reason names it.
#[test]
fn c_large_deposits_in_a_running_gateway_tags_delivers_and_dead_letters_without_its_setting() {
    let sink = Sink::start(Mode::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let extra = format!(
        "{ADMIN}[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n\
         [plugins.large]\nwasm = \"{LARGE_DEPOSITS_C}\"\nsettings = {{ threshold = \"1000\" }}\n\n\
         [plugins.unset]\nwasm = \"{LARGE_DEPOSITS_C}\"\n\n{}\
         [[routes]]\nname = \"flagged\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"large\"]\nto = [\"sink\"]\n\n\
         [[routes]]\nname = \"unconfigured\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         plugins = [\"unset\"]\nto = [\"sink\"]\n",
        http_destination("sink", &sink)
    );
    std::fs::write(dir.path().join("gateway.toml"), full_config(&db, &extra))
        .expect("write config");
    let gw = Gateway::start_in(dir, db);

    gw.post_ledger(&ledger_deposit("evt_c_large", "2500.00"))
        .assert_accepted();
    gw.post_ledger(&ledger_deposit("evt_c_small", "999.99"))
        .assert_accepted();
    let ids: HashSet<String> = ["evt_c_large", "evt_c_small"].map(str::to_owned).into();
    let got = wait_delivered(&sink, &ids, "both deposits on the flagged route", &gw);
    let tag = |id: &str| {
        let delivered = got
            .iter()
            .find(|r| r.event_id() == Some(id))
            .unwrap_or_else(|| panic!("{id} delivered"));
        delivered.json().get("largedeposit").cloned()
    };
    assert_eq!(tag("evt_c_large"), Some("true".into()));
    assert_eq!(tag("evt_c_small"), None);

    wait_until(&gw, "both unconfigured route runs are dead letters", || {
        (count(
            &gw.db(),
            "SELECT count(*) FROM route_runs WHERE route = 'unconfigured' AND status = 'dead' \
             AND reason LIKE '%setting `threshold` is required%'",
        ) == 2)
            .then_some(())
    });
    assert_eq!(got.len(), 2, "the unconfigured route delivered nothing");
}

/// A Ledger transaction whose `data` has a top-level `amount`.
fn ledger_deposit(id: &str, amount: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"transaction.created","createdAt":1763856000000,"data":{{"id":"txn_{id}","amount":"{amount}","currency":"USDT"}}}}"#
    )
    .into_bytes()
}

/// The example's own C tests, compiled natively with the same clang: `decimal_test.c` on the
/// decimal and JSON-lookup code, and `handle_test.c` driving the handler through the generated
/// bindings under valgrind, where a leaked event, a double free or a `realloc` of a pointer
/// malloc never returned is an error. `$CLANG` and `$VALGRIND` override the tools.
#[test]
fn c_large_deposits_native_tests_pass() {
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/c/large-deposits");
    let out = tempfile::tempdir().expect("temp dir");
    let decimal_test = compile_native(
        &plugin,
        out.path(),
        "decimal_test",
        &["decimal_test.c", "decimal.c"],
        &[],
    );
    run_checked(&mut Command::new(&decimal_test));

    let bindings = Path::new(LARGE_DEPOSITS_C_BINDINGS);
    let handle_test = compile_native(
        &plugin,
        out.path(),
        "handle_test",
        &["handle_test.c", "large_deposits.c", "decimal.c"],
        &[
            format!("-I{}", bindings.display()),
            bindings.join("plugin.c").display().to_string(),
            // The wasm import/export attributes mean nothing natively.
            "-Wno-unknown-attributes".to_owned(),
            "-gdwarf-4".to_owned(),
        ],
    );
    let valgrind = std::env::var_os("VALGRIND").unwrap_or_else(|| "valgrind".into());
    run_checked(
        Command::new(valgrind)
            .args(["-q", "--leak-check=full", "--error-exitcode=3"])
            .arg(&handle_test),
    );
}

fn compile_native(
    dir: &Path,
    out_dir: &Path,
    name: &str,
    sources: &[&str],
    extra: &[String],
) -> PathBuf {
    let clang = std::env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let exe = out_dir.join(name);
    run_checked(
        Command::new(clang)
            .current_dir(dir)
            .args([
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wno-unused-parameter",
            ])
            .args(sources)
            .args(extra)
            .arg("-o")
            .arg(&exe),
    );
    exe
}

#[track_caller]
fn run_checked(cmd: &mut Command) {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {line}: {e} (see plugins/README.md, \"C\")"));
    assert!(
        out.status.success(),
        "{line} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
