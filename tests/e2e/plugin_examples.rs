//! The example plugins under `plugins/` (Rust, JavaScript, Python), built from source, run by
//! the gateway's host on events normalized from the provider fixtures: each gives the verdict
//! and the output event its README promises. The JavaScript and Python ones run warm, as they
//! would in production (instantiating them costs about a millisecond).

use crate::plugin_harness::*;
use gateway::config::InstanceMode;
use plugin_artifacts::{ECHO, REDACT_ACCOUNTS_JS, ROUTE_BY_CURRENCY_PY, THRESHOLD, UNIFY_PAYMENTS};
use serde_json::json;

#[test]
fn unify_payments_turns_a_ledig_crypto_deposit_into_payment_received() {
    let plugin = load(UNIFY_PAYMENTS, InstanceMode::Fresh, &[]);
    let input = fixture_event("ledig", "crypto_received");
    let out = expect_emit(plugin.call(&input).outcome);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.id, format!("{}:payment.received", input.id));
    assert_eq!(e.event_type, "payment.received");
    assert_eq!((e.source.as_str(), e.provider.as_str()), ("ledig", "ledig"));
    assert_eq!(e.subject, input.subject);
    assert_eq!(e.extensions, input.extensions);
    // Key order and exact decimal text are part of the contract: compare the text.
    assert_eq!(
        e.data.get(),
        r#"{"amount":"150.25","currency":"USDT","provider":"ledig","provider_reference":"0x5be1d9","status":"completed","original_type":"ledig.crypto_received"}"#
    );
}

#[test]
fn unify_payments_turns_a_ledig_virtual_account_credit_into_payment_received() {
    let plugin = load(UNIFY_PAYMENTS, InstanceMode::Fresh, &[]);
    let input = fixture_event("ledig", "virtual_account_credited");
    let out = expect_emit(plugin.call(&input).outcome);
    assert_eq!(out.len(), 1);
    assert_eq!(
        data(&out[0]),
        json!({"amount": "50000.00", "currency": "NGN", "provider": "ledig",
               "provider_reference": "vac_3321", "status": "completed",
               "original_type": "ledig.virtual_account_credited"})
    );
}

#[test]
fn unify_payments_turns_a_ledger_deposit_transaction_into_the_same_shape() {
    let plugin = load(UNIFY_PAYMENTS, InstanceMode::Fresh, &[]);
    let input = fixture_event("ledger", "transaction.created");
    let out = expect_emit(plugin.call(&input).outcome);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].event_type, "payment.received");
    assert_eq!(out[0].provider, "ledger");
    assert_eq!(
        out[0].data.get(),
        r#"{"amount":"250.00","currency":"USDT","provider":"ledger","provider_reference":"0x9f1c2b7a","status":"pending","original_type":"ledger.transaction.created"}"#
    );
}

#[test]
fn unify_payments_passes_events_that_are_not_deposits_unchanged() {
    let plugin = load(UNIFY_PAYMENTS, InstanceMode::Fresh, &[]);
    for (provider, fixture) in [
        ("ledig", "crypto_payout_update"),
        ("ledger", "wallet.created"),
        ("ledger", "webhook.test"),
    ] {
        let input = fixture_event(provider, fixture);
        let out = expect_pass(plugin.call(&input).outcome);
        assert_eq!(
            out.to_envelope_json(),
            input.to_envelope_json(),
            "{provider}/{fixture}"
        );
    }
}

#[test]
fn unify_payments_refuses_a_deposit_without_an_amount() {
    let plugin = load(UNIFY_PAYMENTS, InstanceMode::Fresh, &[]);
    let mut input = fixture_event("ledig", "crypto_received");
    input.data = serde_json::value::RawValue::from_string(
        r#"{"id":"dep_1","coin":"USDT","status":"completed"}"#.into(),
    )
    .expect("JSON");
    let outcome = plugin.call(&input).outcome;
    let (label, why) = reason(&outcome);
    assert_eq!(label, "fatal");
    assert!(why.contains("has no amount"), "{why}");
}

#[test]
fn threshold_flags_large_deposits_and_drops_or_refuses_as_configured() {
    let input = fixture_event("ledig", "crypto_received"); // Amount 150.25

    let flag = load(THRESHOLD, InstanceMode::Fresh, &[("threshold", "100")]);
    let out = expect_pass(flag.call(&input).outcome);
    assert_eq!(extension(&out, "largedeposit"), Some("true"));
    assert_eq!(
        out.data.get(),
        input.data.get(),
        "flagging leaves data alone"
    );

    let below = load(THRESHOLD, InstanceMode::Fresh, &[("threshold", "1000")]);
    let out = expect_pass(below.call(&input).outcome);
    assert_eq!(extension(&out, "largedeposit"), None);

    let drop_above = load(
        THRESHOLD,
        InstanceMode::Fresh,
        &[("threshold", "100"), ("mode", "drop-above")],
    );
    let outcome = drop_above.call(&input).outcome;
    assert_eq!(
        reason(&outcome),
        ("drop", "amount 150.25 is above threshold 100")
    );

    let unconfigured = load(THRESHOLD, InstanceMode::Fresh, &[]);
    let outcome = unconfigured.call(&input).outcome;
    let (label, why) = reason(&outcome);
    assert_eq!(label, "fatal");
    assert!(why.contains("setting `threshold` is required"), "{why}");
}

#[test]
fn unify_payments_then_threshold_is_a_working_chain() {
    let unify = load(UNIFY_PAYMENTS, InstanceMode::Fresh, &[]);
    let threshold = load(THRESHOLD, InstanceMode::Fresh, &[("threshold", "200")]);
    let deposits = [
        fixture_event("ledig", "crypto_received"),      // 150.25
        fixture_event("ledger", "transaction.created"), // 250.00
    ];
    let flags: Vec<Option<String>> = deposits
        .iter()
        .map(|e| {
            let unified = expect_emit(unify.call(e).outcome).remove(0);
            let out = expect_pass(threshold.call(&unified).outcome);
            extension(&out, "largedeposit").map(str::to_owned)
        })
        .collect();
    assert_eq!(flags, [None, Some("true".to_owned())]);
}

#[test]
fn javascript_redact_accounts_masks_account_numbers_and_keeps_the_rest_byte_for_byte() {
    let plugin = load(REDACT_ACCOUNTS_JS, warm(), &[]);
    let input = fixture_event("ledig", "virtual_account_credited");
    for _ in 0..3 {
        let out = expect_pass(plugin.call(&input).outcome);
        assert_eq!(extension(&out, "redacted"), Some("1"));
        assert_eq!(
            out.data.get(),
            input.data.get().replace("0987654321", "****4321"),
            "only the account number changes"
        );
        assert_eq!(out.id, input.id);
    }
    // Nothing to mask: passes with a count of zero.
    let nothing = fixture_event("ledger", "webhook.test");
    let out = expect_pass(plugin.call(&nothing).outcome);
    assert_eq!(extension(&out, "redacted"), Some("0"));
    assert_eq!(out.data.get(), nothing.data.get());
}

/// Every string the JavaScript component returns goes through the string lowering its build
/// replaces (plugins/js/redact-accounts/string-lowering.mjs): 1-, 2-, 3- and 4-byte UTF-8
/// characters must come back byte for byte, in data, id, subject and extensions alike.
#[test]
fn javascript_redact_accounts_returns_every_string_byte_for_byte_in_any_script() {
    let plugin = load(REDACT_ACCOUNTS_JS, warm(), &[]);
    let mut input = event_with_data(
        "evt_ünï🚀",
        r#"{"note":"naïve café ☕ 日本語 🚀𝄞","Kontonummer ü":"x","iban":"DE89 3704 0044 0532 0130 00","emoji🙂":"€100"}"#,
    );
    input.subject = Some("Zahlung für 🧾 №42".to_owned());
    input
        .extensions
        .push(("memo".to_owned(), "ÆØÅ — 中文 — 🏦".to_owned()));
    for _ in 0..2 {
        let out = expect_pass(plugin.call(&input).outcome);
        assert_eq!(
            out.data.get(),
            input
                .data
                .get()
                .replace("DE89 3704 0044 0532 0130 00", "****3000")
        );
        assert_eq!(out.id, input.id);
        assert_eq!(out.subject, input.subject);
        assert_eq!(extension(&out, "memo"), Some("ÆØÅ — 中文 — 🏦"));
        assert_eq!(extension(&out, "redacted"), Some("1"));
    }
}

#[test]
fn javascript_redact_accounts_reads_extra_keys_from_its_settings() {
    let plugin = load(REDACT_ACCOUNTS_JS, warm(), &[("extra_keys", "sort code")]);
    let input = event_with_data(
        "evt_sort",
        r#"{"Sort Code":"40-11-62-77","iban":"GB33BUKB20201555555555","amount":10.50}"#,
    );
    let out = expect_pass(plugin.call(&input).outcome);
    assert_eq!(extension(&out, "redacted"), Some("2"));
    assert_eq!(
        out.data.get(),
        r#"{"Sort Code":"****6277","iban":"****5555","amount":10.50}"#
    );
}

#[test]
fn python_route_by_currency_passes_configured_currencies_and_drops_the_rest() {
    let plugin = load(ROUTE_BY_CURRENCY_PY, warm(), &[("currencies", "usd, usdt")]);
    let usdt = fixture_event("ledig", "crypto_received");
    let out = expect_pass(plugin.call(&usdt).outcome);
    assert_eq!(extension(&out, "currency"), Some("USDT"));
    assert_eq!(out.data.get(), usdt.data.get());

    let ngn = fixture_event("ledig", "virtual_account_credited");
    let outcome = plugin.call(&ngn).outcome;
    assert_eq!(reason(&outcome), ("drop", "currency NGN not routed here"));

    // Ledger spells it sourceCurrency, in lower case.
    let ledger = fixture_event("ledger", "transaction.created");
    let out = expect_pass(plugin.call(&ledger).outcome);
    assert_eq!(extension(&out, "currency"), Some("USDT"));

    let none = fixture_event("ledger", "webhook.test");
    let outcome = plugin.call(&none).outcome;
    assert_eq!(reason(&outcome).0, "drop");
}

#[test]
fn python_route_by_currency_without_its_setting_is_fatal_naming_the_setting() {
    let plugin = load(ROUTE_BY_CURRENCY_PY, warm(), &[]);
    let outcome = plugin
        .call(&fixture_event("ledig", "crypto_received"))
        .outcome;
    let (label, why) = reason(&outcome);
    assert_eq!(label, "fatal");
    assert!(why.contains("currencies"), "{why}");
}

/// `gateway plugin run`, the plugin author's tool: the verdict, logs, time and fuel as JSON,
/// from a raw provider payload, for a plugin in each language.
#[test]
fn plugin_run_prints_the_verdict_logs_time_and_fuel_for_each_language() {
    let rust = plugin_run(UNIFY_PAYMENTS, "ledig/crypto_received", &[]);
    assert_eq!(rust.code, Some(0), "{}", rust.stderr);
    assert_eq!(rust.report["verdict"], "emit");
    assert_eq!(
        rust.report["events"][0]["data"]["provider_reference"],
        "0x5be1d9"
    );
    assert_eq!(rust.report["events"][0]["type"], "payment.received");
    assert!(rust.report["logs"].is_array());
    assert!(rust.report["elapsed_us"].as_u64().is_some());
    assert!(
        rust.report["fuel_used"].as_u64().is_some_and(|f| f > 0),
        "{}",
        rust.report
    );

    let js = plugin_run(
        REDACT_ACCOUNTS_JS,
        "ledig/virtual_account_credited",
        &["--fuel", "2000000000"],
    );
    assert_eq!(js.code, Some(0), "{}", js.stderr);
    assert_eq!(js.report["verdict"], "pass");
    assert_eq!(
        js.report["event"]["data"]["Sender account number"],
        "****4321"
    );

    let py = plugin_run(
        ROUTE_BY_CURRENCY_PY,
        "ledig/virtual_account_credited",
        &["--setting", "currencies=USD"],
    );
    assert_eq!(py.code, Some(0), "{}", py.stderr);
    assert_eq!(py.report["verdict"], "drop");
    assert_eq!(py.report["reason"], "currency NGN not routed here");

    let threshold = plugin_run(THRESHOLD, "ledig/crypto_received", &[]);
    assert_eq!(threshold.code, Some(1), "fatal exits 1");
    assert_eq!(threshold.report["verdict"], "fatal");
}

/// `gateway plugin run` prints an event as delivery would send it: its `data` is the JSON text
/// the plugin returned, byte for byte (key order, `1.50`, spacing), not re-encoded.
#[test]
fn plugin_run_prints_data_exactly_as_the_plugin_returned_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = r#"{"b":1,"a":1.50,"c":{"z":[1E2, -0.0]}}"#;
    let envelope = format!(
        r#"{{"specversion":"1.0","id":"evt_exact","source":"ledger","type":"ledger.webhook.test","datacontenttype":"application/json","data":{data},"provider":"ledger","providertype":"webhook.test","receivedat":"2024-03-09T16:00:01Z"}}"#
    );
    let event = dir.path().join("event.json");
    std::fs::write(&event, envelope).expect("write the event");
    let run = plugin_run_on(ECHO, &event, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.report["verdict"], "pass");
    assert!(
        run.stdout.contains(&format!("\"data\": {data}")),
        "data re-encoded:\n{}",
        run.stdout
    );
}

/// Without `--cache-dir` the cache is `data/wasm-cache` under the working directory (a
/// relative path, as in the shipped config), created on first use and reused on the next run.
#[test]
fn plugin_run_caches_compiled_code_under_a_relative_default_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let event = format!(
        "{}/../tests/fixtures/ledig/crypto_received.json",
        env!("CARGO_MANIFEST_DIR")
    );
    for _ in 0..2 {
        let out = std::process::Command::new(crate::harness::gateway_bin())
            .args(["plugin", "run", UNIFY_PAYMENTS, "--event", &event])
            .current_dir(dir.path())
            .output()
            .expect("run gateway plugin run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cached = std::fs::read_dir(dir.path().join("data/wasm-cache"))
        .expect("cache dir created")
        .count();
    assert!(cached > 0, "nothing cached");
}

/// The example plugins' own unit tests (plain Node and plain Python, no component needed) run
/// with the suite, so the logic the components wrap is checked where it is written too. Node
/// and Python are the tools the plugin build already needs ($NODE / $PYTHON3 override them).
#[test]
fn the_example_plugins_own_unit_tests_pass() {
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
    let python = std::env::var_os("PYTHON3").unwrap_or_else(|| "python3".into());
    let suites = [
        (
            plugins.join("js/redact-accounts"),
            node,
            vec!["--test", "test/"],
        ),
        (
            plugins.join("python/route-by-currency"),
            python,
            vec!["-m", "unittest", "tests.test_routing"],
        ),
    ];
    for (dir, tool, args) in suites {
        let out = std::process::Command::new(&tool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.to_string_lossy()));
        assert!(
            out.status.success(),
            "{} {} in {} failed:\n{}\n{}",
            tool.to_string_lossy(),
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
