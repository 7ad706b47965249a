#!/bin/sh
# Runs every cargo-fuzz target for a bounded time each (coverage-guided libFuzzer), on the
# project's stable toolchain: `--sanitizer none` is the mode cargo-fuzz supports on stable
# (no AddressSanitizer; Rust's own checks, debug assertions and overflow checks still apply).
#
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600        # 10 min per target
#   fuzz/run.sh 30 normalize_ledig
#
# The first run installs cargo-fuzz into target/fuzz-tools (unoptimised: it only drives cargo,
# and compiles in a fraction of the optimised build's time) and builds gateway-providers with
# coverage instrumentation into fuzz/target (about a minute).
# Corpora grow in fuzz/corpus/TARGET (seeded from tests/fixtures); a crash is saved in
# fuzz/artifacts/TARGET and the script exits non-zero, printing the end of libFuzzer's log
# (kept whole in fuzz/target/TARGET.log).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
targets=${*:-signature_headers normalize_ledger normalize_ledig}

tools="$repo/target/fuzz-tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --version '^0.13' --locked --debug --root "$tools"
fi
export PATH="$tools/bin:$PATH"

cd "$repo"
for target in $targets; do
    case $target in
        normalize_ledger) seeds=tests/fixtures/ledger ;;
        normalize_ledig) seeds=tests/fixtures/ledig ;;
        *) seeds= ;;
    esac
    mkdir -p "fuzz/corpus/$target" fuzz/target
    log="fuzz/target/$target.log"
    echo "== $target: ${seconds}s (libFuzzer's output: $log)"
    # shellcheck disable=SC2086 # $seeds is one directory or nothing
    if ! cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" $seeds -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
        tail -n 80 "$log"
        echo "fuzz/run.sh: $target FAILED (the input is saved under fuzz/artifacts/$target)" >&2
        exit 1
    fi
    grep '^Done ' "$log" || tail -n 5 "$log"
done
