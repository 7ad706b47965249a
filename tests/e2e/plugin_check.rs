//! `gateway check` loads every configured plugin, so a plugin that cannot run is a config
//! error at its `wasm` key, not a surprise on the first event: a missing file, a core module
//! instead of a component, a component that does not implement the plugin world, an import the
//! gateway does not grant, and limits out of range are each named with file, line and key.

use crate::check::{check, line_of};
use crate::harness::{Settings, config};
use crate::plugin_harness::CACHE_DIR;
use plugin_artifacts::{FORBIDDEN_IMPORT, THRESHOLD, UNIFY_PAYMENTS};

/// The standard test config plus `[wasm]` and the given plugin tables.
fn with_plugins(dir: &std::path::Path, plugins: &str) -> String {
    format!(
        "{}\n[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n{plugins}",
        config(&dir.join("g.db"), &Settings::default())
    )
}

#[test]
fn plugins_that_load_pass_the_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = with_plugins(
        dir.path(),
        &format!(
            "[plugins.unify]\nwasm = \"{UNIFY_PAYMENTS}\"\n\n\
             [plugins.large]\nwasm = \"{THRESHOLD}\"\nmode = \"warm\"\ntimeout = \"50ms\"\n\
             fuel = 100000000\nmemory = \"16MiB\"\nsettings = {{ threshold = \"1000\" }}\n"
        ),
    );
    let c = check(&text);
    assert_eq!(c.code, Some(0), "stderr:\n{}", c.stderr);
}

/// A plugin granted an environment variable that a secret reference reads can read that
/// secret: `check` warns at the grant (exit 0, `FILE:LINE:COL: KEY: MESSAGE`), naming the
/// secret's key; a grant of any other variable passes silently.
#[test]
fn granting_a_plugin_a_secret_variable_warns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = with_plugins(
        dir.path(),
        &format!(
            "[plugins.large]\nwasm = \"{THRESHOLD}\"\n\
             env = [\"E2E_SINK_SECRET\", \"E2E_LEDGER_SECRET_OLD\", \"E2E_LEDIG_PASS\"]\n"
        ),
    );
    let c = check(&text);
    assert_eq!(
        c.code,
        Some(0),
        "a warning, not an error; stderr:\n{}",
        c.stderr
    );
    let line = line_of(&text, "env = [");
    let warnings: Vec<&str> = c
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    for (i, var, key) in [
        (1, "E2E_LEDGER_SECRET_OLD", "sources.ledger.secrets[1]"),
        (
            2,
            "E2E_LEDIG_PASS",
            "sources.ledig-basic.basic_auth.password",
        ),
    ] {
        let found = warnings
            .iter()
            .find(|w| w.contains(&format!(": plugins.large.env[{i}]: ")));
        let w = found.unwrap_or_else(|| panic!("no warning for env[{i}]; stderr:\n{}", c.stderr));
        assert!(
            w.starts_with(&format!("warning: {}:{line}:", c.path())),
            "{w}"
        );
        assert!(w.contains(var) && w.contains(key), "{w}");
    }
    // E2E_SINK_SECRET is granted but no secret reference of this config reads it.
    assert!(
        !warnings.iter().any(|w| w.contains("plugins.large.env[0]")),
        "{warnings:#?}"
    );
}

/// Checks a config with one plugin `name` at `wasm`; asserts exit 1 and a problem at its
/// `wasm` key, and returns that problem's line.
fn refused(name: &str, wasm: &std::path::Path) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = with_plugins(
        dir.path(),
        &format!("[plugins.{name}]\nwasm = \"{}\"\n", wasm.display()),
    );
    let c = check(&text);
    c.assert_problem(line_of(&text, "wasm = "), &format!("plugins.{name}.wasm"))
        .to_owned()
}

/// The binary of `(module)`: magic, then core version 1.
const EMPTY_CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// The binary of `(component)`: magic, then component encoding version 0x0d, layer 1.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// Writes `bytes` into `dir`.
fn wasm_file(dir: &std::path::Path, file: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, bytes).expect("write");
    path
}

#[test]
fn a_missing_wasm_file_is_named_at_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = refused("gone", &dir.path().join("nope.wasm"));
    assert!(
        line.contains("cannot read") && line.contains("nope.wasm"),
        "{line}"
    );
}

#[test]
fn a_core_module_is_not_a_component() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = refused(
        "core",
        &wasm_file(dir.path(), "module.wasm", EMPTY_CORE_MODULE),
    );
    assert!(
        line.contains("is not a valid WebAssembly component"),
        "{line}"
    );
}

#[test]
fn a_component_of_another_world_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A valid component that exports nothing: it does not implement `handle`.
    let line = refused(
        "other",
        &wasm_file(dir.path(), "other.wasm", EMPTY_COMPONENT),
    );
    assert!(
        line.contains("does not implement the world webhook-gateway:plugin/plugin"),
        "{line}"
    );
}

#[test]
fn an_ungranted_import_is_refused_at_check() {
    let line = refused("net", std::path::Path::new(FORBIDDEN_IMPORT));
    assert!(line.contains("example:forbidden/network"), "{line}");
}

#[test]
fn limits_out_of_range_are_each_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = with_plugins(
        dir.path(),
        &format!(
            "[plugins.greedy]\nwasm = \"{UNIFY_PAYMENTS}\"\n\
             memory = \"8GiB\"\ntimeout = \"0s\"\nfuel = 5\ntable_elements = 0\n\
             mode = \"tepid\"\nmax_events_per_instance = 10\n"
        ),
    );
    let c = check(&text);
    for (start, key) in [
        ("memory = ", "plugins.greedy.memory"),
        ("timeout = \"0s\"", "plugins.greedy.timeout"),
        ("fuel = ", "plugins.greedy.fuel"),
        ("table_elements = ", "plugins.greedy.table_elements"),
        ("mode = ", "plugins.greedy.mode"),
    ] {
        c.assert_problem(line_of(&text, start), key);
    }
}
