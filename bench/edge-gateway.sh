#!/usr/bin/env bash
# Started by ../shared/bench/run.sh as GATEWAY_CMD: writes an edge config that
# matches the harness's nginx setup (same upstream, same certificate files,
# the same idle keep-alive pool, no access log as nginx.conf has
# access_log off) and runs edge with it.
set -euo pipefail
dir=$(mktemp -d)
cat >"$dir/edge.toml" <<TOML
[server]
listen_https = "${GATEWAY_HTTPS}"
listen_http = "${GATEWAY_HTTP}"
listen_admin = "off"
redirect_http = false
state_dir = "$dir/state"

[tls]
mode = "files"
certificates = [{ cert = "${CERT_FILE}", key = "${KEY_FILE}" }]

[log]
level = "warn"
access = ${EDGE_ACCESS_LOG:-false}

[[upstreams]]
name = "backend"
targets = ["${UPSTREAM_ADDR}"]
keepalive = ${UPSTREAM_KEEPALIVE:-64}

[[routes]]
name = "all"
path = "/"
upstream = "backend"
TOML
exec "${EDGE_BIN:?}" run -config "$dir/edge.toml"
