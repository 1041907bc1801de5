#!/usr/bin/env bash
# Builds tailor as shipped: the `dist` build (fat LTO, one codegen unit), then laid out by BOLT
# (LLVM's post-link optimizer, Debian's bolt-19) from a profile of the request flow, so that the
# code one request runs sits together in memory. The Dockerfile ships this binary and
# benches/load.sh measures it (benches/RESULTS.md, round 12).
#
# Usage: deploy/bolt.sh [OUT]   (OUT defaults to target/bolt/tailor)
# Needs bolt-19 (installed here with apt-get when missing, which needs root) and curl.
#
# Steps: (1) `cargo build --profile dist` with the linker keeping relocations (`--emit-relocs`, so
# BOLT may move whole functions), in target/bolt-build, apart from the plain builds; (2) an
# instrumented copy counts branches and calls; (3) that copy serves benches/routes.bench.yaml (a
# dozen routes with regex conditions, a sticky A/B split, metering) in front of tailor's own mock of
# OpenAI, driven by curl: chat completions plain and streamed (with and without usage asked),
# requests that match the content, tool and header rules, and clients without keep-alive; (4) BOLT
# lays the dist build out by those counts. A failed step fails the script: nothing is left at OUT
# that was not laid out from a profile.
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../target/bolt/tailor}")  # OUT is read from the caller's directory
cd "$(dirname "$0")/.."
root=$PWD
build=$root/target/bolt-build
case $(uname -m) in x86_64 | aarch64) ;; *) echo "deploy/bolt.sh: BOLT supports x86-64 and AArch64 only" >&2; exit 1;; esac

if ! command -v llvm-bolt-19 >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends bolt-19 >/dev/null
fi

RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,--emit-relocs" \
  cargo build --profile dist --locked -q --bin tailor --target-dir "$build"
plain=$build/dist/tailor

. deploy/procs.sh

# Debian's llvm-bolt-19 looks for its instrumentation runtime in /usr/lib, where the package does
# not put it: the path is given relative to /usr/lib. BOLT 19 takes a symbol containing `.warm`,
# `.cold` or `.part` for a piece of a split function and stops ("parent function not found"): Rust
# writes `tokens..warm_x` into the symbols of generic code, so no function is named that way.
llvm-bolt-19 "$plain" -o "$tmp/tailor.inst" -instrument --instrumentation-file="$tmp/profile.fdata" \
  --runtime-instrumentation-lib=llvm-19/lib/libbolt_rt_instr.a \
  >"$tmp/instrument.log" 2>&1 || { tail -5 "$tmp/instrument.log" >&2; exit 1; }

# the mock upstream runs from the plain build: its code is not what users run
"$plain" mock-upstream --listen 127.0.0.1:0 >"$tmp/mock.out" 2>"$tmp/mock.err" & pids+=($!)
wait_for "$tmp/mock.out" "listening on"
mock=$(sed -n 's#.*listening on \(http://[^/]*\)/v1.*#\1#p' "$tmp/mock.out")
sed -e "s#BENCH_UPSTREAM#$mock#" -e "s#BENCH_SSE#$mock#" -e "s#BENCH_SIM#$mock#" \
  benches/routes.bench.yaml >"$tmp/routes.yaml"
TAILOR_BENCH_KEY=sk-training "$tmp/tailor.inst" serve --config "$tmp/routes.yaml" \
  >"$tmp/tailor.out" 2>"$tmp/tailor.err" &
inst=$!; pids+=($inst)
wait_for "$tmp/tailor.out" "tailor listening on"
api=$(sed -n 's#^tailor listening on \(http://[^ ]*\)/v1 .*#\1#p' "$tmp/tailor.out")

# chat COUNT BODY [curl options...]: COUNT requests at 32 at a time, one status code a line (000:
# no answer). The URLs come from a curl config file: the path exactly as SDKs send it, no query
# string (a query takes another branch when the upstream URL is built)
expected=0
chat() {
  local n=$1 body=$2; shift 2
  for _ in $(seq "$n"); do printf 'url = "%s/v1/chat/completions"\noutput = "/dev/null"\n' "$api"; done >"$tmp/urls"
  curl -sS --parallel --parallel-max 32 -w '%{http_code}\n' -X POST \
    -H 'content-type: application/json' -H 'authorization: Bearer sk-training' "$@" \
    -d "$body" -K "$tmp/urls" >>"$tmp/codes" 2>>"$tmp/curl.err" || true
  expected=$((expected + n))
}
msgs='"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]'
: >"$tmp/codes"
for u in 1 2 3 4; do
  chat 3000 "{\"model\":\"gpt-4o\",\"user\":\"cust-$u\",$msgs}"
  chat 1500 "{\"model\":\"gpt-4o-stream\",\"user\":\"cust-$u\",\"stream\":true,$msgs}"
done
chat 1500 "{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":true},$msgs}"
chat 1000 '{"model":"support","messages":[{"role":"user","content":"I want a refund for order 1234"}]}'
chat 1000 "{\"model\":\"gpt-4o\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"parameters\":{\"type\":\"object\"}}}],$msgs}"
chat 1000 "{\"model\":\"gpt-4o\",$msgs}" -H 'x-team: a'
chat 2000 "{\"model\":\"gpt-4o\",\"user\":\"cust-5\",$msgs}" -H 'connection: close'
ok=$(grep -c '^200$' "$tmp/codes" || true)
total=$(wc -l <"$tmp/codes")
if [ "$total" -ne "$expected" ] || [ "$ok" -lt "$((expected * 99 / 100))" ]; then
  echo "deploy/bolt.sh: $ok of $expected training requests succeeded ($total answered):" >&2
  sort "$tmp/codes" | uniq -c >&2; sort "$tmp/curl.err" | uniq -c | head -5 >&2; tail -5 "$tmp/tailor.err" >&2
  exit 1
fi

# the instrumented process writes its profile when it exits
kill -TERM "$inst"; wait "$inst" || true
[ -s "$tmp/profile.fdata" ] || { echo "deploy/bolt.sh: no profile written" >&2; exit 1; }

llvm-bolt-19 "$plain" -o "$tmp/tailor" -data="$tmp/profile.fdata" \
  -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold -split-eh \
  -icf=1 -use-gnu-stack -update-debug-sections -dyno-stats >"$tmp/optimize.log" 2>&1 || { tail -5 "$tmp/optimize.log" >&2; exit 1; }
# the laid-out binary reads the same config as the build it came from, or nothing is shipped
TAILOR_BENCH_KEY=sk-training "$tmp/tailor" check --config "$tmp/routes.yaml" >/dev/null
mkdir -p "$(dirname "$out")"
mv "$tmp/tailor" "$out"
echo "deploy/bolt.sh: $out ($ok training requests;" \
  "$(grep -o '[0-9.]*% of profiled' "$tmp/optimize.log" | head -1) functions laid out anew)"
