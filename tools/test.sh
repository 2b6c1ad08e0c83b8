#!/usr/bin/env bash
# Runs every test of edge on this machine and says what happened.
#
#   bash tools/test.sh
#
# 1. Installs what the tests need and is missing: the Debian packages of the
#    real peers (only as root or with password-less sudo; otherwise it says
#    which command would), the Go modules, and the pinned Go tools (Pebble,
#    challtestsrv, h2spec, Helm) into ./bin. A second run installs nothing.
# 2. Runs the Go tests with -race and the Node tests, both always, in a
#    network namespace with only loopback when the machine allows one.
# 3. Prints how many tests ran, passed, failed and were skipped, and why each
#    was skipped. The exit code is 0 only when nothing failed.
#
# With EDGE_CI=1 (set by .ci/run) a missing peer fails its test instead of
# skipping it. docs/testing.md says how the peers are started.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/bin:/usr/local/go/bin:$PATH"
results="$root/.test-results"

say() { printf '\n== %s\n' "$*"; }

if [[ ${1:-} == --in-namespace ]]; then
	# The second half, run inside the network namespace (or without one):
	# only the tests, with nothing reaching outside the machine.
	ip link set lo up 2>/dev/null || true
	go test -race -count=1 -json ./... 2>&1 | tee "$results/go.json" | testsummary -progress
	if command -v node >/dev/null; then
		node --test --test-reporter=tap clients/miniprogram/ >"$results/node.tap" 2>&1
	fi
	exit 0
fi

# command:Debian package, for every peer the suites start.
peers=(redis-server:redis-server redis-cli:redis-tools prometheus:prometheus promtool:prometheus
	testssl:testssl.sh websocketd:websocketd node:nodejs systemd-analyze:systemd
	unshare:util-linux ip:iproute2 openssl:openssl chromium:chromium)
missing=()
for peer in "${peers[@]}"; do
	command -v "${peer%%:*}" >/dev/null || missing+=("${peer#*:}")
done
if ((${#missing[@]})); then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	sudo=()
	if [[ $(id -u) -ne 0 ]] && sudo -n true 2>/dev/null; then sudo=(sudo); fi
	if [[ $(id -u) -eq 0 || ${#sudo[@]} -gt 0 ]]; then
		say "installing Debian packages: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		"${sudo[@]}" apt-get update -qq &&
			"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" ca-certificates >/dev/null ||
			echo "apt-get failed: the tests that need ${missing[*]} will say so"
		# The packages start system services on their default ports; the
		# tests start private instances on free ports instead.
		"${sudo[@]}" systemctl stop redis-server prometheus 2>/dev/null || true
	else
		say "not installing Debian packages (needs root or password-less sudo)"
		echo "the tests that need them will be skipped; install them with:"
		echo "  sudo apt-get install ${missing[*]}"
	fi
fi

say "Go modules"
go mod download || echo "go mod download failed: the build will say what is missing"

# The pinned tools are rebuilt only when tools/go.mod or go.sum change.
stamp="$root/bin/.tools-stamp"
want=$(cat tools/go.mod tools/go.sum tools/testsummary/*.go | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
	say "pinned Go tools into bin/ (pebble, pebble-challtestsrv, h2spec, helm, testsummary)"
	mkdir -p bin
	if (cd tools && GOBIN="$root/bin" go install tool && go build -o "$root/bin/testsummary" ./testsummary); then
		echo "$want" >"$stamp"
	else
		echo "installing the pinned tools failed"
		exit 1
	fi
fi

rm -rf "$results"
mkdir -p "$results"
started=$(date +%s)
if unshare -n true 2>/dev/null; then
	say "tests (in a network namespace with only loopback)"
	GOPROXY=off unshare -n bash "$0" --in-namespace
else
	say "tests (no network namespace available: on the host network)"
	bash "$0" --in-namespace
fi
say "summary ($(($(date +%s) - started)) s)"
suites=(-go "$results/go.json")
if [[ -f $results/node.tap ]]; then
	suites+=(-node "$results/node.tap")
elif [[ ${EDGE_CI:-} == 1 ]]; then
	echo "FAIL the Node tests: node is not installed (sudo apt-get install nodejs)"
	testsummary "${suites[@]}"
	exit 1
else
	echo "SKIP the Node tests (clients/miniprogram): node is not installed; install it with: sudo apt-get install nodejs"
fi
testsummary "${suites[@]}"
