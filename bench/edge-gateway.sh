#!/usr/bin/env bash
# Started by ../shared/bench/run.sh as GATEWAY_CMD: writes an edge config that
# matches the harness's nginx setup (same upstream, same certificate files,
# the same idle keep-alive pool, no access log as nginx.conf has
# access_log off) and runs edge with it. With EDGE_SESSION_SECRET (set by
# bench/run.sh) the route needs a session token and carries a per-openid and
# a per-IP limit that never refuse at benchmark rates.
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

TOML
if [[ -n ${EDGE_SESSION_SECRET:-} ]]; then
  cat >>"$dir/edge.toml" <<TOML
[[apps]]
name = "bench"
appid = "wxbench"
secret = "bench-app-secret"

[sessions]
secrets = ["${EDGE_SESSION_SECRET}"]
ttl = "24h"

[[routes]]
name = "all"
path = "/"
upstream = "backend"
auth = "token"

[[limits]]
name = "per_openid"
key = "openid"
rate = "10000000/m"
burst = 1000000
routes = ["all"]

[[limits]]
name = "per_ip"
key = "ip"
rate = "10000000/m"
burst = 1000000
routes = ["all"]
TOML
else
  cat >>"$dir/edge.toml" <<TOML
[[routes]]
name = "all"
path = "/"
upstream = "backend"
TOML
fi
exec "${EDGE_BIN:?}" run -config "$dir/edge.toml"
