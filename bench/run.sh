#!/usr/bin/env bash
# Measures edge side by side with nginx and caddy, in one run, with the
# shared harness (../shared/bench). Usage: bench/run.sh   (knobs as in the
# harness README: ROUNDS, DURATION, PROTOS, TARGETS, UPSTREAM_KEEPALIVE...)
# Results land in bench/results/<timestamp>/ (summary.txt).
#
# edge is measured with its checks on, as it runs in production: the route
# needs a session token (auth = "token") and has a per-openid and a per-IP
# limit, generous enough never to refuse. The token, minted with the
# config's session secret, goes to edge only (GATEWAY_HEADERS); nginx and
# caddy proxy plainly. EDGE_PLAIN=1 measures edge without the checks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_BENCH:-$repo/../shared/bench}
[[ -d $shared ]] || { echo "bench harness not found at $shared (set SHARED_BENCH)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$shared" "$work/bench"
# The harness probes each target's readiness with a plain GET; edge's route
# needs the token the load sends, so the copy's gateway probe sends the
# gateway's headers too (one header, as bench/run.sh sets them).
if [[ -n ${GATEWAY_HEADERS:-} || ${EDGE_PLAIN:-0} != 1 ]]; then
  sed -i 's|^  local url=$1 n=${2:-100} code$|  local url=$1 n=${2:-100} code extra=()\n  [[ $url == *"${GATEWAY_HTTP:-none}"* \&\& -n ${GATEWAY_HEADERS:-} ]] \&\& extra=(-H "$GATEWAY_HEADERS")|; s|curl -sk -o /dev/null -w .%{http_code}. --max-time 1 "$url"|curl -sk -o /dev/null -w "%{http_code}" --max-time 1 "${extra[@]}" "$url"|' "$work/bench/run.sh"
  grep -q 'extra=(-H "$GATEWAY_HEADERS")' "$work/bench/run.sh" || { echo "could not teach the harness's probe the gateway's headers" >&2; exit 1; }
fi
(cd "$repo" && go build -trimpath -o "$work/edge" ./cmd/edge && go build -o "$work/mint-token" ./bench/mint-token)

if [[ ${EDGE_PLAIN:-0} != 1 ]]; then
  EDGE_SESSION_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
  export EDGE_SESSION_SECRET
  token=$("$work/mint-token" -secret "$EDGE_SESSION_SECRET" -appid wxbench -openid o-bench-user)
  export GATEWAY_HEADERS="Authorization: Bearer $token"
fi
export PROTOS=${PROTOS:-"h1 h1s h2 tls"}

export EDGE_BIN="$work/edge"
export GATEWAY_HTTP=${GATEWAY_HTTP:-127.0.0.1:7080}
export GATEWAY_HTTPS=${GATEWAY_HTTPS:-127.0.0.1:7443}
export GATEWAY_CMD="$here/edge-gateway.sh"
export TARGETS=${TARGETS:-"direct nginx caddy gateway"}
cd "$work/bench"
./run.sh
mkdir -p "$here/results"
cp -r results/* "$here/results/"
