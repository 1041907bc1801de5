#!/usr/bin/env bash
# Every test tailor has, in one command (README, and .ci/run, call this):
#   1. cargo build --release, cargo test --release (unit + integration tiers)
#   2. the official OpenAI SDKs (Python `openai`, Node `openai`, pinned in tests/sdk/) against a
#      running tailor in front of the simulated OpenAI, and the system suites (Prometheus, Redis,
#      OTLP, the status page), all with the binary as shipped (deploy/bolt.sh: the dist build laid
#      out by BOLT; it installs Debian's bolt-19).
# Needs only the Rust toolchain, Python 3 and Node: the SDKs are installed here from PyPI / npm.
# Debian's prometheus, redis-server, chromium and bolt-19 are installed with apt-get when missing:
# that needs root (run as root, or install the four first; the script stops and says so otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# the apt-get steps below need root: say so now, not after the 20-minute build
missing=()
for tool in prometheus promtool redis-server redis-cli chromium llvm-bolt-19; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "tests/run-all.sh installs Debian's prometheus, redis-server, chromium and bolt-19 with apt-get" \
    "(missing: ${missing[*]}), which needs root: run it as root (sudo tests/run-all.sh)," \
    "or install those packages first." >&2
  exit 1
fi

echo "== cargo build --release"
cargo build --release --locked
echo "== cargo test --release"
cargo test --release --locked

echo "== installing Prometheus (Debian's package, brings promtool) if missing"
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
prometheus --version 2>&1 | head -1

echo "== installing Redis (Debian's redis-server, brings redis-cli) if missing, for the limits test"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
redis-server --version | head -1

echo "== installing Chromium (Debian's package) if missing, for the status page test"
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
chromium --version 2>/dev/null | head -1

echo "== installing the pinned SDKs"
venv=$root/target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/sdk/python/requirements.txt
(cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)

. deploy/procs.sh  # $tmp, pids (stopped at exit), wait_for FILE PATTERN

echo "== the binary as shipped: deploy/bolt.sh (the dist build laid out by BOLT); every suite below runs it"
deploy/bolt.sh
bin=$root/target/bolt/tailor
export TAILOR_BIN=$bin
"$bin" mock-upstream --listen 127.0.0.1:0 >"$tmp/mock.out" 2>"$tmp/mock.err" &
pids+=($!)
wait_for "$tmp/mock.out" "listening on"
mock=$(sed -n 's#.*listening on \(http://[^/]*\)/v1.*#\1#p' "$tmp/mock.out")
# proxy.yaml, plus the rest of the OpenAI API (files, batches, moderations) passed through
{ sed "s#MOCK_URL#$mock#g" tests/fixtures/proxy.yaml; echo "passthrough: { upstream: mock }"; } >"$tmp/routes.yaml"

upstream_key=sk-upstream-$RANDOM$RANDOM
TAILOR_TEST_KEY=$upstream_key "$bin" --log-format json serve --config "$tmp/routes.yaml" >"$tmp/tailor.out" 2>"$tmp/tailor.log" &
pids+=($!)
wait_for "$tmp/tailor.out" "tailor listening on"
api=$(sed -n 's#^tailor listening on \(http://[^ ]*\) (admin: \(http://[^)]*\))#\1#p' "$tmp/tailor.out")
admin=$(sed -n 's#^tailor listening on \(http://[^ ]*\) (admin: \(http://[^)]*\))#\2#p' "$tmp/tailor.out")
export TAILOR_BASE_URL=$api TAILOR_ADMIN_URL=$admin
echo "== SDK suites against tailor at $api (simulated upstream $mock)"

# every suite once per wire format of the simulated upstream (x-mock-format, see src/mock/format.rs):
# OpenAI's own, then other servers' spacing, line ends, SSE framing and key order, then all at once
formats=("" spaced crlf cr nospace noevent usage-first comments unicode
  "spaced,crlf,nospace,noevent,usage-first,comments,unicode")
for fmt in "${formats[@]}"; do
  export TAILOR_MOCK_FORMAT=$fmt
  echo "-- Python openai $("$venv/bin/python" -c 'import openai; print(openai.__version__)'), upstream format '${fmt:-openai}'"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk/python
  echo "-- Node openai $(node -p 'require("./tests/sdk/node/node_modules/openai/package.json").version'), upstream format '${fmt:-openai}'"
  (cd tests/sdk/node && node --test test.mjs)
done
unset TAILOR_MOCK_FORMAT

echo "-- monitoring: real Prometheus, the shipped dashboard and rules; deploy manifests"
# kubectl renders the kustomize base when it is there (no registry reached here ships a recent
# one: Debian's is 1.20, too old for the base); without it that one test is skipped, saying so
if command -v kubectl >/dev/null; then kubectl version --client 2>/dev/null | head -2; else echo "kubectl: not installed"; fi
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/monitoring tests/deploy

echo "-- the fleet: two replicas, a restart and feedback across them, read back from a real Prometheus"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/fleet

echo "-- budgets and rate limits: two replicas sharing a real Redis"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/limits

echo "-- traces: OTLP/HTTP export to a receiver decoding with the official opentelemetry-proto"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/telemetry

echo "-- status page: tailor demo --traffic, rendered by headless Chromium (screenshot: target/status-page.png)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/status

# the access log must carry no key: neither tailor's upstream key nor the clients'
if grep -q -e "$upstream_key" -e "sk-client-key" "$tmp/tailor.log"; then
  echo "FAIL: an API key appeared in tailor's log" >&2
  exit 1
fi
lines=$(grep -c '"target":"tailor::access"' "$tmp/tailor.log" || true)
echo "access log: $lines JSON lines, no key in them"
echo "== all suites passed"
