//! Builds the Rust plugins and fixtures of `plugins/` for `wasm32-wasip2`, from a build script.
//!
//! Included (`#[path]`) by two build scripts: the gateway's, so that `cargo run -p gateway`
//! produces the component `config/gateway.toml` names, and `tests/plugin-artifacts`', which
//! builds every plugin for the tests. Both run the same command with the same environment, so
//! whichever runs second finds everything fresh (cargo's lock on the target directory makes it
//! wait for the first). Only Rust is built here: no Node, no Python.
//!
//! The command: `cargo build --release --target wasm32-wasip2 --locked` in `plugins/` (its own
//! workspace) with `--target-dir <repo>/target/wasm-plugins`, and without the outer build's
//! environment that would leak into it (RUSTFLAGS, RUSTC, wrappers such as clippy-driver,
//! CARGO_TARGET_DIR, profile overrides, ...). The outer jobserver (CARGO_MAKEFLAGS) is kept, so
//! the inner build shares the outer build's job slots. Cargo makes it a no-op when nothing
//! changed. It never writes outside `<repo>/target`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// `<repo>/target/wasm-plugins`: the inner cargo's target directory.
pub(crate) fn out_dir(repo: &Path) -> PathBuf {
    repo.join("target").join("wasm-plugins")
}

/// Tells cargo to rerun the build script when a Rust plugin's sources, the plugin workspace's
/// manifest or lock file, or the WIT contract change.
pub(crate) fn watch(repo: &Path) {
    let plugins = repo.join("plugins");
    for path in [
        repo.join("wit"),
        plugins.join("rust"),
        plugins.join("fixtures"),
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Builds the plugin workspace. Returns the directory holding the `.wasm` files.
pub(crate) fn build(repo: &Path) -> Result<PathBuf, String> {
    ensure_wasm_target()?;
    let out = out_dir(repo);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo.join("plugins"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&out);
    scrub_cargo_env(&mut cmd);
    let started = Instant::now();
    run_cmd(&mut cmd)?;
    log_time("rust plugins (cargo, no-op when unchanged)", started);
    Ok(out.join("wasm32-wasip2").join("release"))
}

/// Makes sure the toolchain has the `wasm32-wasip2` standard library. rustup installs the
/// targets `rust-toolchain.toml` lists only when it installs the toolchain itself; a toolchain
/// that was already there (a machine image that links `1.95.0` to its `stable`, say) lacks
/// it, and the inner cargo runs the toolchain's binary directly, past rustup. So: ask rustc
/// where the target's libraries live and, when they are missing, have rustup add them.
fn ensure_wasm_target() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = run_cmd(Command::new(rustc).args([
        "--print",
        "target-libdir",
        "--target",
        "wasm32-wasip2",
    ]))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if libdir.is_dir() {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", "wasm32-wasip2"]);
    // Set by rustup's proxy for the outer build: the toolchain to complete.
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        cmd.arg("--toolchain").arg(toolchain);
    }
    let started = Instant::now();
    run_cmd(&mut cmd).map_err(|e| {
        format!("the wasm32-wasip2 target is missing and rustup could not add it: {e}")
    })?;
    log_time("rustup target add wasm32-wasip2", started);
    Ok(())
}

/// Removes what the outer cargo put into our environment that must not steer the inner build.
fn scrub_cargo_env(cmd: &mut Command) {
    // Kept: how to reach registries and where cargo lives, terminal settings, the jobserver.
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_SOURCE_",
        "CARGO_TERM_",
        "CARGO_MAKEFLAGS",
    ];
    // Everything the outer build sets for build scripts or a user sets for the host build.
    const REMOVE: &[&str] = &[
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "MAKEFLAGS",
        "MFLAGS",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_var = key.starts_with("CARGO_") || key == "CARGO";
        if REMOVE.contains(&key) || (cargo_var && !KEEP_PREFIXES.iter().any(|p| key.starts_with(p)))
        {
            cmd.env_remove(key);
        }
    }
}

/// Runs `cmd` with its output captured; a failure returns the command line and the output.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<Output, String> {
    let line = format!("{cmd:?}");
    let output = cmd
        .output()
        .map_err(|e| format!("could not run {line}: {e}"))?;
    if output.status.success() {
        return Ok(output);
    }
    Err(format!(
        "command failed ({}): {line}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    ))
}

pub(crate) fn log_time(step: &str, started: Instant) {
    // Visible with `cargo build -vv`; kept in target/.../output otherwise.
    println!(
        "plugin build: {step}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
