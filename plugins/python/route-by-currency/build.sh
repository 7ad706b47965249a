#!/bin/sh
# Builds the component: ./build.sh [OUT.wasm]   (default route_by_currency.wasm here).
# Needs componentize-py (the version in requirements.txt) on PATH, or COMPONENTIZE_PY set to
# it. The gateway's builder (tests/plugin-artifacts) runs this same script.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/route_by_currency.wasm}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
cd "$here"
# -p .: the app's modules. componentize-py also searches the site-packages of $VIRTUAL_ENV (the
# venv holding componentize-py, when activated); only modules the app imports end up inside.
exec "${COMPONENTIZE_PY:-componentize-py}" -d ../../../wit -w plugin \
    componentize -p . app -o "$out"
