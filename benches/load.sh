#!/usr/bin/env bash
# End-to-end load benchmark: the simulator as upstream, nginx proxy_pass as the reference proxy,
# tailor with benches/routes.bench.yaml; wrk drives all three in one run and one table is printed.
# Loopback only, bounded in time. Scenarios: 1 (throughput, 64 connections), 2 (added latency at
# concurrency 1), 3 (64-chunk streams paced 20 ms: time to first token, gaps), 4 (5,000 open
# streams: no lost chunk, memory per stream), 5 (200 KB prompt), 6 (counters exact after load).
# wrk drives 1, 2 and 5; benches/streams.rs (built here) times SSE events for 3 and 4.
# Row "limits": tailor with one matching budget and rate limit counted in a loopback Redis.
# Usage: benches/load.sh [seconds per measurement, default 10]
# TAILOR_BIN=path measures that tailor binary instead of building this checkout's (before/after
# runs); STREAMS_BIN=path uses an already built benches/streams client.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -n "${TAILOR_BIN:-}" ] || cargo build --release --locked -q
streams=${STREAMS_BIN:-$(cargo bench --bench streams --locked --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "streams" and m.get("executable"): print(m["executable"])')}
bin=${TAILOR_BIN:-target/release/tailor}
# 5,000 streams through tailor hold 10,000 sockets in it and 5,000 in each of the others; where
# the open-file limit is lower, scenario 4 opens as many as fit and says so
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576
hold_n=$(( (nofile - 200) / 2 < 5000 ? (nofile - 200) / 2 : 5000 ))
[ "$hold_n" -ge 5000 ] || echo "load.sh: open-file limit $nofile: scenario 4 runs $hold_n streams, not 5,000" >&2
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
    client_body_buffer_size 1m;  # 200 KB prompts stay in memory, never in a temp file
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;          # SSE events pass at once, as LLM proxies configure it
      proxy_request_buffering off;  # the body streams to the upstream, as tailor does
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

# the same config with one limit that matches every request, counted in a loopback Redis
redis_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
cp "$tmp/routes.yaml" "$tmp/routes.limits.yaml"
cat >>"$tmp/routes.limits.yaml" <<YAML
shared_state: { redis: "redis://127.0.0.1:$redis_port/0", timeout: 50ms }
limits:
  - { name: bench, usd: { max: 1000000, per: day }, tokens_per_minute: 1000000000 }
YAML
TAILOR_BENCH_KEY=sk-bench "$bin" --no-access-log serve --config "$tmp/routes.limits.yaml" >"$tmp/tailorl.out" 2>"$tmp/tailorl.err" & tailorl_pid=$!; pids+=($tailorl_pid)
wait_for "$tmp/tailorl.out" "tailor listening on"
tailorl=$(sed -n 's#^tailor listening on \(http://[^ ]*\)/v1 .*#\1#p' "$tmp/tailorl.out")

# scenario 4 on a second, fresh tailor (same config), so that memory per open stream is its RSS
# growth over idle and the 5,000 connections it leaves pooled do not weigh on the other scenarios
TAILOR_BENCH_KEY=sk-bench "$bin" --no-access-log serve --config "$tmp/routes.yaml" >"$tmp/tailor4.out" 2>/dev/null & t4=$!; pids+=($t4)
wait_for "$tmp/tailor4.out" "tailor listening on"
hold=$("$streams" hold "$(sed -n 's#^tailor listening on \(http://[^ ]*\)/v1 .*#\1#p' "$tmp/tailor4.out")" "$hold_n" $t4)
kill $t4; wait $t4 2>/dev/null || true

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

url_of() { case $1 in direct) echo "$up";; nginx) echo "http://127.0.0.1:$nginx_port";; tailor) echo "$tailor";; limits) echo "$tailorl";; esac; }
cpu_ticks() { awk '{print $14+$15}' /proc/$tailor_pid/stat; }
# CPU ticks of a target's processes (tailor; nginx's workers; the simulator for direct)
ticks_of() {
  local p t=0
  case $1 in tailor) p=$tailor_pid;; limits) p=$tailorl_pid;; nginx) p=$(pgrep -d' ' -P "$(cat "$tmp/nginx.pid")");; direct) p=${pids[0]};; esac
  for x in $p; do t=$((t + $(awk '{print $14+$15}' /proc/$x/stat))); done
  echo $t
}
hz=$(getconf CLK_TCK)
# run NAME URL CONNS LUA TARGET -> "rps p50_us p99_us requests non2xx cpu_us_per_request"
run() {
  local c0; c0=$(ticks_of "$5")
  wrk -t"$(( $3 < 2 ? 1 : 2 ))" -c"$3" -d"${dur}s" -s "$4" --latency "$2/v1/chat/completions" >"$tmp/wrk.$1" 2>&1
  python3 - "$tmp/wrk.$1" "$c0" "$(ticks_of "$5")" "$(getconf CLK_TCK)" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
c0, c1, hz = map(int, sys.argv[2:5])
def us(s):
    v, u = re.match(r"([\d.]+)(\w+)", s).groups(); return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = us(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
n = int(re.search(r"(\d+) requests in", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {n} {errs.group(1) if errs else 0} {(c1 - c0) / hz / n * 1e6:.1f}")
PY
}

declare -A R
t0=$(cpu_ticks)
total_tailor=0
for scen in "thr:64:small" "c1:1:small" "big:16:big"; do
  IFS=: read -r name conns lua <<<"$scen"
  for target in direct nginx tailor; do
    R[$name.$target]=$(run "$name.$target" "$(url_of $target)" "$conns" "$tmp/$lua.lua" $target)
  done
  total_tailor=$((total_tailor + $(echo "${R[$name.tailor]}" | cut -d' ' -f4)))
done
t1=$(cpu_ticks)
# tailor with a limit in Redis, right after tailor without, for the same two scenarios
for scen in "thr:64:small" "c1:1:small"; do
  IFS=: read -r name conns lua <<<"$scen"
  R[$name.limits]=$(run "$name.limits" "$(url_of limits)" "$conns" "$tmp/$lua.lua" limits)
  R[$name.tailor2]=$(run "$name.tailor2" "$(url_of tailor)" "$conns" "$tmp/$lua.lua" tailor)
done

# scenario 3: 64 users at a time reading 64-chunk streams paced 20 ms apart
for target in direct nginx tailor; do
  R[sse.$target]=$("$streams" paced "$(url_of $target)" 64 "$(( dur < 6 ? 6 : dur ))")
done
peak_rss=$(awk '/VmHWM/{print $2}' /proc/$tailor_pid/status)

# scenario 6: per model, tokens equal completed requests x the simulator's (deterministic) usage:
# the streams (route team-a, model mini) have 64 words, every other request 12
python3 - "$admin" <<'PY' | tee "$tmp/counters"
import sys, urllib.request
m = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
def total_of(name, **labels):
    s = 0.0
    for line in m.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            s += float(line.rsplit(" ", 1)[1])
    return s
ok = True
for model, words in [("mini", 64), ("gpt-4o", 12), ("support-ft", 12)]:
    reqs = total_of("tailor_requests_total", model=model, outcome="ok")
    out = total_of("tailor_tokens_total", model=model, type="output")
    inp = total_of("tailor_tokens_total", model=model, type="input")
    cost = total_of("tailor_cost_usd_total", model=model)
    ok &= out == reqs * words and reqs > 0
    print(f"counters {model}: {reqs:.0f} completed requests, output tokens {out:.0f} = {reqs:.0f} x {words}: {out == reqs * words}; input tokens {inp:.0f}; cost ${cost:.6f}")
cancelled = total_of("tailor_requests_total", outcome="client_cancelled")
print(f"counters: {cancelled:.0f} requests cut by wrk stopping mid-request (outcome client_cancelled, no tokens)")
print("counters exact" if ok else "COUNTERS DIFFER")
PY

python3 - "$idle_rss" "$peak_rss" "$t0" "$t1" "$(getconf CLK_TCK)" "$total_tailor" "$hold" \
  "${R[sse.direct]}" "${R[sse.nginx]}" "${R[sse.tailor]}" \
  "${R[thr.direct]}" "${R[thr.nginx]}" "${R[thr.tailor]}" "${R[c1.direct]}" "${R[c1.nginx]}" "${R[c1.tailor]}" \
  "${R[big.direct]}" "${R[big.nginx]}" "${R[big.tailor]}" \
  "${R[thr.limits]}" "${R[thr.tailor2]}" "${R[c1.limits]}" "${R[c1.tailor2]}" <<'PY'
import json, sys
idle, peak, t0, t1, hz, total = map(int, sys.argv[1:7])
hold = json.loads(sys.argv[7])
sse = [json.loads(a) for a in sys.argv[8:11]]
rows = [list(map(float, a.split())) for a in sys.argv[11:20]]
lim_thr, plain_thr, lim_c1, plain_c1 = [list(map(float, a.split())) for a in sys.argv[20:24]]
targets = ["direct", "nginx", "tailor"]
print("\n| scenario | target | req/s | p50 us | p99 us | non-2xx | CPU us/request |")
print("|---|---|---|---|---|---|---|")
for i, r in enumerate(rows):
    name = ["1. 64 conns, small chat body", "2. 1 conn, small chat body", "5. 16 conns, 200 KB prompt"][i // 3] if i % 3 == 0 else ""
    print(f"| {name} | {targets[i % 3]} | {r[0]:.0f} | {r[1]:.0f} | {r[2]:.0f} | {r[4]:.0f} | {r[5]:.1f} |")
print("\n| 3. 64 streams at a time, 64 chunks 20 ms apart | streams | lost | TTFT p50 us | TTFT p99 us | gap p50 us | gap p99 us |")
print("|---|---|---|---|---|---|---|")
for t, s in zip(targets, sse):
    print(f"| {t} | {s['streams']} | {s['lost']} | {s['ttft_p50_us']} | {s['ttft_p99_us']} | {s['gap_p50_us']} | {s['gap_p99_us']} |")
d, n, t = rows[0:3]
c1d, c1n, c1t = rows[3:6]
cpu_s = (t1 - t0) / hz
per_stream = hold["kib_per_stream"]
summary = [
    ("non-streaming throughput, tailor / nginx (64 conns)", f"{t[0] / n[0]:.2f} (tailor/direct {t[0] / d[0]:.2f}, nginx/direct {n[0] / d[0]:.2f})", t[0] / n[0] >= 0.6),
    ("added latency at concurrency 1, tailor - direct, p50 / p99", f"{c1t[1] - c1d[1]:.0f} / {c1t[2] - c1d[2]:.0f} us (nginx: {c1n[1] - c1d[1]:.0f} / {c1n[2] - c1d[2]:.0f} us)", c1t[1] - c1d[1] <= 150 and c1t[2] - c1d[2] <= 500),
    ("CPU time per proxied request (scenarios 1, 2, 5)", f"{cpu_s / total * 1e6:.1f} us ({cpu_s:.1f} CPU-s / {total} requests)", cpu_s / total * 1e6 <= 60),
    ("added time to first token, p50 (scenario 3)", f"{sse[2]['ttft_p50_us'] - sse[0]['ttft_p50_us']:.0f} us (nginx: {sse[1]['ttft_p50_us'] - sse[0]['ttft_p50_us']:.0f} us); added gap p50 {sse[2]['gap_p50_us'] - sse[0]['gap_p50_us']:.0f} us", sse[2]['ttft_p50_us'] - sse[0]['ttft_p50_us'] <= 300 and sse[2]['lost'] == 0),
    (f"memory per open stream (scenario 4: {hold['streams']:,} streams)", f"{per_stream:.1f} KiB ({hold['lost']} streams lost a chunk; all open after {hold['open_secs']} s; RSS {hold['rss_before_kib'] / 1024:.1f} -> {hold['rss_open_kib'] / 1024:.1f} MiB)", per_stream <= 64 and hold["lost"] == 0 and hold["finished_before_all_open"] == 0),
    ("idle RSS / peak RSS", f"{idle / 1024:.1f} MiB / {peak / 1024:.1f} MiB", idle <= 32 * 1024),
]
print("\n| limits (one matching budget + rate in loopback Redis) | req/s | p50 us | p99 us | non-2xx | CPU us/request |")
print("|---|---|---|---|---|---|")
for name, r in [("64 conns, tailor + limits", lim_thr), ("64 conns, tailor", plain_thr), ("1 conn, tailor + limits", lim_c1), ("1 conn, tailor", plain_c1)]:
    print(f"| {name} | {r[0]:.0f} | {r[1]:.0f} | {r[2]:.0f} | {r[4]:.0f} | {r[5]:.1f} |")
summary.append(("limits in Redis: added p50 at 1 conn / throughput at 64 conns vs tailor without",
                f"{lim_c1[1] - plain_c1[1]:+.0f} us / {lim_thr[0] / plain_thr[0]:.2f}",
                lim_c1[1] - plain_c1[1] <= 30 and lim_thr[0] / plain_thr[0] >= 0.85 and lim_thr[4] == 0))
print("\n| measure | this run | must met |")
print("|---|---|---|")
for m, v, ok in summary:
    print(f"| {m} | {v} | {'yes' if ok else 'NO'} |")
PY
