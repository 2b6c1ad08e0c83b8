#!/usr/bin/env bash
# Measures edge side by side with nginx and caddy, in one run, with the
# shared harness (../shared/bench). Usage: bench/run.sh   (knobs as in the
# harness README: ROUNDS, DURATION, PROTOS, TARGETS, UPSTREAM_KEEPALIVE...)
# Results land in bench/results/<timestamp>/ (summary.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_BENCH:-$repo/../shared/bench}
[[ -d $shared ]] || { echo "bench harness not found at $shared (set SHARED_BENCH)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$shared" "$work/bench"
(cd "$repo" && go build -trimpath -o "$work/edge" ./cmd/edge)

export EDGE_BIN="$work/edge"
export GATEWAY_HTTP=${GATEWAY_HTTP:-127.0.0.1:7080}
export GATEWAY_HTTPS=${GATEWAY_HTTPS:-127.0.0.1:7443}
export GATEWAY_CMD="$here/edge-gateway.sh"
export TARGETS=${TARGETS:-"direct nginx caddy gateway"}
cd "$work/bench"
./run.sh
mkdir -p "$here/results"
cp -r results/* "$here/results/"
