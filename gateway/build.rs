//! Builds the Rust example plugins in `plugins/` for `wasm32-wasip2`, so that the README's
//! `cargo run --release -p gateway -- run --config config/gateway.toml` finds the component
//! the default config routes every event through
//! (`target/wasm-plugins/wasm32-wasip2/release/unify_payments.wasm`). Only Rust: no Node or
//! Python (those plugins are built for the tests by `tests/plugin-artifacts`).
//!
//! The same command as the tests' plugin build (see `plugins/build-support/rust_plugins.rs`),
//! so in a test build the second of the two is a no-op. Reruns only when a Rust plugin, the
//! plugin workspace or the WIT contract changes. `GATEWAY_SKIP_PLUGIN_BUILD=1` skips it (a
//! gateway built for production that names its own plugins needs no wasm toolchain).

#[path = "../plugins/build-support/rust_plugins.rs"]
mod rust_plugins;

fn main() {
    println!("cargo:rerun-if-env-changed=GATEWAY_SKIP_PLUGIN_BUILD");
    if std::env::var_os("GATEWAY_SKIP_PLUGIN_BUILD").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        eprintln!("error: CARGO_MANIFEST_DIR is not set");
        std::process::exit(1);
    };
    let repo = match std::path::PathBuf::from(manifest_dir)
        .join("..")
        .canonicalize()
    {
        Ok(repo) => repo,
        Err(e) => {
            eprintln!("error: the repository root: {e}");
            std::process::exit(1);
        }
    };
    rust_plugins::watch(&repo);
    if let Err(message) = rust_plugins::build(&repo) {
        eprintln!(
            "error: building the example plugins (plugins/, wasm32-wasip2) failed\n{message}\n\
             (set GATEWAY_SKIP_PLUGIN_BUILD=1 to build the gateway without them)"
        );
        std::process::exit(1);
    }
}
