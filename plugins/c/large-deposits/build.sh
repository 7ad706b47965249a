#!/bin/sh
# Builds the large-deposits C plugin into a component: ./build.sh [OUT.wasm]
# (default: large_deposits.wasm here). Needs clang, lld, wasi-libc and
# libclang-rt-14-dev-wasm32 (Debian 12), and wit-bindgen-cli 0.46.0 and wasm-tools 1.239.0
# from crates.io in target/plugin-tools/bin (or set WIT_BINDGEN / WASM_TOOLS); see
# plugins/README.md, "C". The test suite does not run this script: it builds the same way with
# the tools' libraries (tests/plugin-artifacts/c_plugin.rs); keep the clang flags in step.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/large_deposits.wasm}
tools=$root/target/plugin-tools/bin
wit_bindgen=${WIT_BINDGEN:-$tools/wit-bindgen}
wasm_tools=${WASM_TOOLS:-$tools/wasm-tools}
# The WASI preview1 reactor adapter, needed only when the core module imports
# wasi_snapshot_preview1 (libc I/O such as printf). Its version is the gateway's wasmtime.
adapter_version=48.0.8

for tool in "$wit_bindgen" "$wasm_tools"; do
    if [ ! -x "$tool" ]; then
        echo "build.sh: $tool not found; install it with:" >&2
        echo "  cargo install --locked wit-bindgen-cli --version 0.46.0 --root $root/target/plugin-tools" >&2
        echo "  cargo install --locked wasm-tools --version 1.239.0 --root $root/target/plugin-tools" >&2
        exit 1
    fi
done
command -v clang >/dev/null || { echo "build.sh: clang not found (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# plugin.h, plugin.c and plugin_component_type.o (the world's type, linked into the module
# as a custom section that `component new` reads).
if ! "$wit_bindgen" c "$root/wit" --world plugin --out-dir "$work/bindings" >"$work/wit-bindgen.log" 2>&1; then
    cat "$work/wit-bindgen.log" >&2
    exit 1
fi

clang --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 \
    -Wall -Wextra -Werror -Wno-unused-parameter \
    ${CFLAGS:-} \
    -I"$work/bindings" -I"$here" \
    -Wl,--strip-debug \
    -o "$work/core.wasm" \
    "$here/large_deposits.c" "$here/decimal.c" \
    "$work/bindings/plugin.c" "$work/bindings/plugin_component_type.o"

if "$wasm_tools" print "$work/core.wasm" | grep -q '(import "wasi_snapshot_preview1"'; then
    # The adapter's bytes ship in this crate on crates.io (wasmtime's release files are the
    # other source); cargo fetch puts it under $CARGO_HOME/registry/src.
    mkdir -p "$work/adapter/src"
    : >"$work/adapter/src/lib.rs"
    cat >"$work/adapter/Cargo.toml" <<TOML
[package]
name = "adapter-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
wasi-preview1-component-adapter-provider = "=$adapter_version"
[workspace]
TOML
    cargo fetch --quiet --manifest-path "$work/adapter/Cargo.toml"
    adapter=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wasi-preview1-component-adapter-provider-$adapter_version/artefacts/wasi_snapshot_preview1.reactor.wasm | head -n 1)
    "$wasm_tools" component new "$work/core.wasm" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$out"
else
    "$wasm_tools" component new "$work/core.wasm" -o "$out"
fi
"$wasm_tools" validate "$out"
echo "$out"
