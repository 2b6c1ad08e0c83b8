#!/usr/bin/env bash
# Measures what [cluster] redis costs edge (issue 15 item 3), with a private
# redis-server and the shared harness's upstream, all on this machine.
#
#   bench/redis.sh ratio      throughput of one edge, limits in memory against
#                             limits in Redis, configs in turns (ROUNDS, default 2;
#                             DURATION, default 10s): wrk -t2 -c64 over HTTPS
#   bench/redis.sh accuracy   three edges sharing one route-wide limit through
#                             one Redis, wrk on each for DURATION (default 20s):
#                             allowed against rate x duration + burst
#
# Needs redis-server, wrk, openssl and curl. Figures: docs/benchmarks.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_BENCH:-$repo/../shared/bench}
[[ -d $shared/upstream ]] || { echo "bench harness not found at $shared (set SHARED_BENCH)" >&2; exit 1; }
mode=${1:-ratio}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$repo" && go build -trimpath -o "$work/edge" ./cmd/edge && go build -o "$work/mint-token" ./bench/mint-token)
(cd "$shared/upstream" && go build -o "$work/upstream" .)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
  -out "$work/cert.pem" -days 1 -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

redis_port=${REDIS_PORT:-16391}
redis-server --port "$redis_port" --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
"$work/upstream" -addr 127.0.0.1:19011 >"$work/upstream.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
token=$("$work/mint-token" -secret "$secret" -appid wxbench -openid o-bench-user)

# config NAME N REDIS AUTH LIMITS [EXTRA]: edge N's config (ports 2N443...).
config() {
  local name=$1 n=$2 redis=$3 auth=$4 limits=$5 extra=${6:-}
  {
    cat <<EOF
[server]
listen_https = "127.0.0.1:2${n}443"
listen_http = "127.0.0.1:2${n}080"
listen_admin = "127.0.0.1:2${n}180"
redirect_http = false
state_dir = "$work/state-$name-$n"
[tls]
mode = "files"
certificates = [{ cert = "$work/cert.pem", key = "$work/key.pem" }]
[log]
level = "warn"
access = false
[[upstreams]]
name = "backend"
targets = ["127.0.0.1:19011"]
keepalive = 64
[[apps]]
name = "bench"
appid = "wxbench"
secret = "bench-app-secret"
[sessions]
secrets = ["$secret"]
ttl = "24h"
[[routes]]
name = "all"
path = "/"
upstream = "backend"
auth = "$auth"
EOF
    [[ $redis == yes ]] && printf '[cluster]\nredis = "redis://127.0.0.1:%s"\n' "$redis_port"
    printf '%s\n%s\n' "$limits" "$extra"
  } >"$work/$name-$n.toml"
}

start_edge() { # NAME N
  "$work/edge" run -config "$work/$1-$2.toml" >"$work/$1-$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:2${2}180/readyz" && return; sleep 0.1; done
  echo "edge $1 did not start: $(cat "$work/$1-$2.log")" >&2
  exit 1
}

rule() { # NAME KEY RATE BURST
  printf '[[limits]]\nname = "%s"\nkey = "%s"\nrate = "%s"\nburst = %s\nroutes = ["all"]\n' "$1" "$2" "$3" "$4"
}

case $mode in
ratio)
  rounds=${ROUNDS:-2} duration=${DURATION:-10s}
  big='10000000/m'
  ip=$(rule per_ip ip "$big" 1000000)
  tok="$(rule per_openid openid "$big" 1000000)
$(rule per_ip ip "$big" 1000000)"
  cold=$(rule per_user header:X-User "$big" 1000000)
  config ip-memory 0 no none "$ip"
  config ip-redis 0 yes none "$ip"
  config ip-redis-noleases 0 yes none "$ip" $'[limiter]\nleases = false'
  config token-memory 0 no token "$tok"
  config token-redis 0 yes token "$tok"
  config token-redis-exact 0 yes token "$tok" $'[limiter]\nleases = false'
  sed -i 's/^ttl = "24h"$/ttl = "24h"\nrevocation_check = "redis"/' "$work/token-redis-exact-0.toml"
  config cold-memory 0 no none "$cold"
  config cold-redis 0 yes none "$cold"
  cat >"$work/cold.lua" <<'EOF'
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/ping", {["X-User"] = "u" .. math.random(1, 1000000)})
end
EOF
  run() { # NAME [wrk args...]
    local name=$1
    shift
    start_edge "$name" 0
    local pid=${pids[-1]}
    local rps
    rps=$(wrk -t2 -c64 -d"$duration" "$@" https://127.0.0.1:20443/api/ping | awk '/Requests\/sec/ {print $2}')
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    printf '%-20s %10s req/s  load %s\n' "$name" "$rps" "$(cut -d' ' -f1 /proc/loadavg)"
  }
  for _ in $(seq "$rounds"); do
    for name in ip-memory ip-redis ip-redis-noleases; do run "$name"; done
    for name in token-memory token-redis token-redis-exact; do run "$name" -H "Authorization: Bearer $token"; done
    for name in cold-memory cold-redis; do run "$name" -s "$work/cold.lua"; done
  done
  ;;
accuracy)
  duration=${DURATION:-20s}
  for spec in "50/s 10" "1000/s 100" "1000/s 2000"; do
    read -r rate burst <<<"$spec"
    for n in 0 1 2; do
      config "acc" "$n" yes none "$(rule global route "$rate" "$burst")"
      start_edge acc "$n"
    done
    redis-cli -p "$redis_port" flushall >/dev/null
    wrks=()
    for n in 0 1 2; do
      wrk -t1 -c8 -d"$duration" "https://127.0.0.1:2${n}443/" >/dev/null 2>&1 &
      wrks+=($!)
    done
    wait "${wrks[@]}"
    total=0
    for n in 0 1 2; do
      a=$(curl -s "http://127.0.0.1:2${n}180/metrics" | awk '/^edge_limit_decisions_total/ && /result="allowed"/ {s += $2} END {print s + 0}')
      total=$((total + ${a%.*}))
    done
    secs=${duration%s}
    per=${rate%/s}
    echo "rate $rate burst $burst over 3 edges, $duration: allowed $total, ideal $((per * secs + burst))"
    for p in "${pids[@]:2}"; do kill "$p" 2>/dev/null || true; done
    wait "${pids[@]:2}" 2>/dev/null || true
    pids=("${pids[@]:0:2}")
  done
  ;;
*)
  echo "usage: bench/redis.sh ratio|accuracy" >&2
  exit 2
  ;;
esac
