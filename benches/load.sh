#!/usr/bin/env bash
# End-to-end load benchmark: the simulator as upstream, nginx proxy_pass as the reference proxy,
# tailor with benches/routes.bench.yaml; wrk drives all three in one run and one table is printed.
# Loopback only, bounded in time. Scenarios done so far: 1 (throughput, 64 connections),
# 2 (added latency at concurrency 1), 5 (200 KB prompt), 6 (counters exact after load).
# Usage: benches/load.sh [seconds per measurement, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --locked -q
bin=target/release/tailor
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"; }
trap cleanup EXIT
wait_for() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout: $1" >&2; exit 1; }

"$bin" mock-upstream --listen 127.0.0.1:0 >"$tmp/mock.out" 2>/dev/null & pids+=($!)
wait_for "$tmp/mock.out" "listening on"
up=$(sed -n 's#.*listening on \(http://[^/]*\)/v1.*#\1#p' "$tmp/mock.out")

nginx_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat >"$tmp/nginx.conf" <<NGINX
worker_processes auto;
error_log $tmp/nginx.err warn;
pid $tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server ${up#http://}; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    client_max_body_size 16m;
    location / {
      proxy_pass $up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$tmp/nginx.conf" -g 'daemon off;' & pids+=($!)

sed "s#BENCH_UPSTREAM#$up#" benches/routes.bench.yaml >"$tmp/routes.yaml"
TAILOR_BENCH_KEY=sk-bench "$bin" --no-access-log serve --config "$tmp/routes.yaml" >"$tmp/tailor.out" 2>"$tmp/tailor.err" & tailor_pid=$!; pids+=($tailor_pid)
wait_for "$tmp/tailor.out" "tailor listening on"
tailor=$(sed -n 's#^tailor listening on \(http://[^ ]*\)/v1 (admin: \(http://[^)]*\))#\1#p' "$tmp/tailor.out")
admin=$(sed -n 's#^tailor listening on \(http://[^ ]*\)/v1 (admin: \(http://[^)]*\))#\2#p' "$tmp/tailor.out")
idle_rss=$(awk '/VmRSS/{print $2}' /proc/$tailor_pid/status)

body_small='{"model":"gpt-4o","user":"cust-1","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]}'
python3 - "$tmp/big.json" <<'PY'
import json, sys
json.dump({"model": "gpt-4o", "user": "cust-2", "messages": [{"role": "user", "content": "lorem ipsum " * 17000}]}, open(sys.argv[1], "w"))
PY
mklua() { # file body-file
  python3 - "$1" "$2" <<'PY'
import json, sys
body = open(sys.argv[2]).read()
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.body = ' + json.dumps(body) + '\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer sk-bench"\n')
PY
}
echo "$body_small" >"$tmp/small.json"
mklua "$tmp/small.lua" "$tmp/small.json"
mklua "$tmp/big.lua" "$tmp/big.json"

cpu_ticks() { awk '{print $14+$15}' /proc/$tailor_pid/stat; }
hz=$(getconf CLK_TCK)
# run NAME URL CONNS LUA -> "rps p50_us p99_us requests"
run() {
  wrk -t"$(( $3 < 2 ? 1 : 2 ))" -c"$3" -d"${dur}s" -s "$4" --latency "$2/v1/chat/completions" >"$tmp/wrk.$1" 2>&1
  python3 - "$tmp/wrk.$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def us(s):
    v, u = re.match(r"([\d.]+)(\w+)", s).groups(); return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = us(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
n = int(re.search(r"(\d+) requests in", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {n} {errs.group(1) if errs else 0}")
PY
}

declare -A R
t0=$(cpu_ticks)
total_tailor=0
for scen in "thr:64:small" "c1:1:small" "big:16:big"; do
  IFS=: read -r name conns lua <<<"$scen"
  for target in direct nginx tailor; do
    case $target in direct) url=$up;; nginx) url=http://127.0.0.1:$nginx_port;; tailor) url=$tailor;; esac
    R[$name.$target]=$(run "$name.$target" "$url" "$conns" "$tmp/$lua.lua")
  done
  total_tailor=$((total_tailor + $(echo "${R[$name.tailor]}" | cut -d' ' -f4)))
done
t1=$(cpu_ticks)
peak_rss=$(awk '/VmHWM/{print $2}' /proc/$tailor_pid/status)

# scenario 6: counters equal requests x the simulator's (deterministic) usage
python3 - "$admin" "$up" "$tmp" "$total_tailor" <<'PY'
import json, sys, urllib.request
admin, up, tmp, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def usage(path):
    req = urllib.request.Request(up + "/v1/chat/completions", data=open(path, "rb").read(), headers={"content-type": "application/json", "authorization": "Bearer x"})
    return json.load(urllib.request.urlopen(req))["usage"]
m = urllib.request.urlopen(admin + "/metrics").read().decode()
def total_of(name, **labels):
    s = 0.0
    for line in m.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            s += float(line.rsplit(" ", 1)[1])
    return s
reqs = total_of("tailor_requests_total")
out = total_of("tailor_tokens_total", type="output")
per = usage(tmp + "/small.json")["completion_tokens"]  # the simulator answers 12 words to both bodies
# wrk counts requests completed within its time; the ones in flight when it stops (at most one per
# connection) still reach tailor and are metered, so tailor's count may be a little higher
print(f"counters: tailor_requests_total={reqs:.0f}, wrk completed {total}; output tokens={out:.0f}, requests x {per} = {reqs * per:.0f}")
ok = out == reqs * per and total <= reqs <= total + 3 * 64
print("counters exact" if ok else "COUNTERS DIFFER")
PY

python3 - "$dur" "$idle_rss" "$peak_rss" "$t0" "$t1" "$hz" "$total_tailor" \
  "${R[thr.direct]}" "${R[thr.nginx]}" "${R[thr.tailor]}" "${R[c1.direct]}" "${R[c1.nginx]}" "${R[c1.tailor]}" \
  "${R[big.direct]}" "${R[big.nginx]}" "${R[big.tailor]}" <<'PY'
import sys
dur, idle, peak, t0, t1, hz, total = sys.argv[1:8]
rows = [list(map(float, a.split())) for a in sys.argv[8:]]
names = ["1. 64 conns, small", "", "", "2. 1 conn, small", "", "", "5. 16 conns, 200 KB prompt", "", ""]
print(f"\n| scenario | target | req/s | p50 us | p99 us | non-2xx |")
print("|---|---|---|---|---|---|")
for i, r in enumerate(rows):
    print(f"| {names[i]} | {['direct','nginx','tailor'][i % 3]} | {r[0]:.0f} | {r[1]:.0f} | {r[2]:.0f} | {r[4]:.0f} |")
d, n, t = rows[0], rows[1], rows[2]
print(f"\ntailor/nginx throughput (64 conns): {t[0] / n[0]:.2f}; tailor/direct: {t[0] / d[0]:.2f}")
c1d, c1n, c1t = rows[3], rows[4], rows[5]
print(f"added latency at concurrency 1, tailor - direct: p50 {c1t[1] - c1d[1]:.0f} us, p99 {c1t[2] - c1d[2]:.0f} us (nginx - direct: p50 {c1n[1] - c1d[1]:.0f} us, p99 {c1n[2] - c1d[2]:.0f} us)")
b = rows[8]
cpu_s = (int(t1) - int(t0)) / int(hz)
print(f"tailor CPU per proxied request: {cpu_s / int(total) * 1e6:.1f} us ({cpu_s:.1f} s over {int(total)} requests)")
print(f"tailor RSS: idle {int(idle) / 1024:.1f} MiB, peak {int(peak) / 1024:.1f} MiB")
PY
