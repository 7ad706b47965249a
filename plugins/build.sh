#!/bin/sh
# Builds every plugin (Rust plugins and fixtures, the JavaScript, Python and C plugins) exactly
# as the tests do, then lists the components: name, tab, absolute path.
#
#   plugins/build.sh            # from anywhere in the repository
#
# Same as `cargo build -p plugin-artifacts` at the repository root (tests/plugin-artifacts/
# build.rs does the work). Needs Rust (rust-toolchain.toml), Node.js 20+ with npm, Python 3,
# and Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (plugins/README.md, "C").
# Unchanged plugins are not rebuilt.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build -p plugin-artifacts
cat "$repo/target/wasm-plugins/artifacts.txt"
