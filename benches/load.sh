#!/usr/bin/env bash
# End-to-end load benchmark. One run prints one set of tables; compare within it, never across runs.
#
# Upstreams: a canned OpenAI (nginx `return 200` with a fixed chat completion, and one with a fixed
# short SSE stream) that costs far less than any proxy ("direct" rows show it), and tailor's
# simulator for paced streams (scenarios 3 and 4). Proxies: nginx `proxy_pass` with its access log
# off and on (a file, as Debian ships it), tailor as shipped (access log on, text, to a file) and
# tailor `--no-access-log`, all with benches/routes.bench.yaml (12 routes with regex conditions, a
# sticky A/B split, metering on), and tailor as shipped with `telemetry:` on (spans exported to the
# canned nginx).
#
# Scenarios: 1 (throughput, 64 and 256 connections, and 16 clients opening a new connection for
# each request), 2 (added latency at concurrency 1: back to back, and 3 ms apart), 3 (short
# SSE streams at 64 connections; 64-chunk streams paced 20 ms: time to first token, gaps), 4 (5,000
# open streams: no lost chunk, memory per stream), 5 (200 KB prompt), 6 (counters exact after
# load), and a row with one limit counted in a loopback Redis. Scenarios 1, 2 and 3 run in ROUNDS
# interleaved rounds (default 3; the targets in reverse order in even rounds); the summary takes
# the median of the per-round ratios (and of the per-round differences: added latency, added time
# to first token).
# wrk (-t1) drives them; benches/streams.rs times SSE events for 3 and 4.
#
# Usage: benches/load.sh [seconds per measurement, default 5]
# TAILOR_BIN=path measures that tailor binary instead of building this checkout's (before/after
# runs); STREAMS_BIN=path uses an already built benches/streams client; ROUNDS=n.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-5}
rounds=${ROUNDS:-3}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -n "${TAILOR_BIN:-}" ] || deploy/bolt.sh  # the binary as shipped: the dist build laid out by BOLT
streams=${STREAMS_BIN:-$(cargo bench --bench streams --locked --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "streams" and m.get("executable"): print(m["executable"])')}
bin=${TAILOR_BIN:-target/bolt/tailor}
# 5,000 streams through tailor hold 10,000 sockets in it and 5,000 in each of the others; where
# the open-file limit is lower, scenario 4 opens as many as fit and says so
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576
hold_n=$(( (nofile - 200) / 2 < 5000 ? (nofile - 200) / 2 : 5000 ))
[ "$hold_n" -ge 5000 ] || echo "load.sh: open-file limit $nofile: scenario 4 runs $hold_n streams, not 5,000" >&2
. deploy/procs.sh  # $tmp (KEEP_TMP=1 keeps it), pids (stopped at exit), wait_for FILE PATTERN
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# every child of nginx master PID (its workers)
workers_of() { pgrep -d' ' -P "$(cat "$1")"; }

# the canned upstream: fixed bodies shaped as OpenAI's (spaces after colons, as real servers write)
canned_json=$(port) canned_sse=$(port)
python3 - "$tmp" "$canned_json" "$canned_sse" <<'PY'
import json, sys
tmp, pj, ps = sys.argv[1:4]
base = {"id": "chatcmpl-bench", "created": 1732000000, "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_bench"}
answer = dict(base, object="chat.completion", choices=[{"index": 0, "message": {"role": "assistant", "content": "Hello! I am doing well, thank you for asking. How can I help?", "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
              usage={"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37, "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}})
chunk = lambda delta, finish=None: dict(base, object="chat.completion.chunk", choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], usage=None)
events = [chunk({"role": "assistant", "content": "", "refusal": None})]
events += [chunk({"content": w + " "}) for w in "Hello I am doing well thank you".split()]
events += [chunk({}, "stop"), dict(base, object="chat.completion.chunk", choices=[], usage={"prompt_tokens": 25, "completion_tokens": 7, "total_tokens": 32})]
sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
body = json.dumps(answer, indent=2)
assert "'" not in body + sse and "$" not in body + sse
open(f"{tmp}/canned.conf", "w").write(f"""
worker_processes auto;
error_log {tmp}/canned.err warn;
pid {tmp}/canned.pid;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_max_body_size 16m;
  client_body_buffer_size 1m;
  server {{
    listen 127.0.0.1:{pj};
    location / {{ default_type application/json; add_header x-request-id req_bench; return 200 '{body}'; }}
  }}
  server {{
    listen 127.0.0.1:{ps};
    location / {{ default_type text/event-stream; add_header x-request-id req_bench; return 200 '{sse}'; }}
  }}
}}
""")
PY
nginx -c "$tmp/canned.conf" -g 'daemon off;' & pids+=($!)

"$bin" mock-upstream --listen 127.0.0.1:0 >"$tmp/mock.out" 2>/dev/null & sim_pid=$!; pids+=($sim_pid)
wait_for "$tmp/mock.out" "listening on"
sim=$(sed -n 's#.*listening on \(http://[^/]*\)/v1.*#\1#p' "$tmp/mock.out")

# nginx proxy_pass: to the canned answer with its access log off and on, to the canned stream and
# to the simulator (access log on, as shipped)
px_off=$(port) px_on=$(port) px_sse=$(port) px_sim=$(port)
proxy() { # port upstream access-log
  cat <<NGINX
  upstream up$1 { server $2; keepalive 128; }
  server {
    listen 127.0.0.1:$1;
    access_log $3;
    location / {
      proxy_pass http://up$1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;          # SSE events pass at once, as LLM proxies configure it
      proxy_request_buffering off;  # the body streams to the upstream, as tailor does
    }
  }
NGINX
}
cat >"$tmp/nginx.conf" <<NGINX
worker_processes auto;
error_log $tmp/nginx.err warn;
pid $tmp/nginx.pid;
events { worker_connections 8192; }
http {
  keepalive_requests 1000000;
  client_max_body_size 16m;
  client_body_buffer_size 1m;  # 200 KB prompts stay in memory, never in a temp file
$(proxy "$px_off" "127.0.0.1:$canned_json" off)
$(proxy "$px_on" "127.0.0.1:$canned_json" "$tmp/nginx.access")
$(proxy "$px_sse" "127.0.0.1:$canned_sse" "$tmp/nginx.access")
$(proxy "$px_sim" "${sim#http://}" "$tmp/nginx.access")
}
NGINX
nginx -c "$tmp/nginx.conf" -g 'daemon off;' & pids+=($!)

sed -e "s#BENCH_UPSTREAM#http://127.0.0.1:$canned_json#" -e "s#BENCH_SSE#http://127.0.0.1:$canned_sse#" \
  -e "s#BENCH_SIM#$sim#" benches/routes.bench.yaml >"$tmp/routes.yaml"
start_tailor() { # name config [flags...] -> sets ${name}_url ${name}_pid ${name}_admin
  local name=$1 config=$2; shift 2
  TAILOR_BENCH_KEY=sk-bench "$bin" "$@" serve --config "$config" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  eval "${name}_pid=$!"; pids+=($!)
  wait_for "$tmp/$name.out" "tailor listening on"
  eval "${name}_url=$(sed -n 's#^tailor listening on \(http://[^ ]*\)/v1 .*#\1#p' "$tmp/$name.out")"
  eval "${name}_admin=$(sed -n 's#.*(admin: \(http://[^)]*\))#\1#p' "$tmp/$name.out")"
}
start_tailor tailor "$tmp/routes.yaml"                  # as shipped: access log on, to a file
start_tailor nolog "$tmp/routes.yaml" --no-access-log
idle_rss=$(awk '/VmRSS/{print $2}' "/proc/$tailor_pid/status")

# the same config with one limit that matches every request, counted in a loopback Redis
redis_port=$(port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
cp "$tmp/routes.yaml" "$tmp/routes.limits.yaml"
cat >>"$tmp/routes.limits.yaml" <<YAML
shared_state: { redis: "redis://127.0.0.1:$redis_port/0", timeout: 50ms }
limits:
  - { name: bench, usd: { max: 1000000, per: day }, tokens_per_minute: 1000000000 }
YAML
start_tailor limits "$tmp/routes.limits.yaml" --no-access-log

# tailor as shipped with trace export on: one span per request, batched to the canned nginx
# (a 200 to any POST, so /v1/traces costs it next to nothing)
cp "$tmp/routes.yaml" "$tmp/routes.otel.yaml"
echo "telemetry: { otlp_endpoint: \"http://127.0.0.1:$canned_json\" }" >>"$tmp/routes.otel.yaml"
start_tailor otel "$tmp/routes.otel.yaml"

# scenario 4 on a fresh tailor as shipped, so that memory per open stream is its RSS growth over
# idle and the 5,000 connections it leaves pooled do not weigh on the other scenarios
start_tailor t4 "$tmp/routes.yaml"
# the tokenizer tables load on a thread after start (~55 MiB): the RSS before the streams is read
# once they are in, when three readings 0.2 s apart agree (a run read it before, and counted the
# tables as 11 KiB per stream)
settled=0 last=0
for _ in $(seq 100); do
  now=$(awk '/VmRSS/{print $2}' "/proc/$t4_pid/status")
  if [ "$now" = "$last" ]; then settled=$((settled + 1)); else settled=0; fi
  [ "$settled" -ge 2 ] && break
  last=$now; sleep 0.2
done
hold=$("$streams" hold "$t4_url" "$hold_n" "$t4_pid")
kill "$t4_pid"; wait "$t4_pid" 2>/dev/null || true

mklua() { # name body
  python3 - "$tmp/$1.lua" "$2" <<'PY'
import json, sys
body = sys.argv[2]
if body == "@big":  # a 200 KB prompt
    body = json.dumps({"model": "gpt-4o", "user": "cust-2", "messages": [{"role": "user", "content": "lorem ipsum " * 17000}]})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.body = ' + json.dumps(body) + '\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer sk-bench"\n')
PY
}
mklua small '{"model":"gpt-4o","user":"cust-1","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]}'
mklua sse '{"model":"gpt-4o-stream","user":"cust-3","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]}'
mklua big @big
# clients that open a connection per request (no keep-alive): the accept path
cp "$tmp/small.lua" "$tmp/close.lua"
echo 'wrk.headers["Connection"] = "close"' >>"$tmp/close.lua"

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$canned_json";; direct_sse) echo "http://127.0.0.1:$canned_sse";;
    nginx) echo "http://127.0.0.1:$px_off";; nginx_log) echo "http://127.0.0.1:$px_on";;
    nginx_sse) echo "http://127.0.0.1:$px_sse";; nginx_sim) echo "http://127.0.0.1:$px_sim";;
    tailor|tailor_sse) echo "$tailor_url";; nolog) echo "$nolog_url";; limits) echo "$limits_url";;
    otel) echo "$otel_url";;
  esac
}
# CPU ticks (utime + stime) of a target's processes
ticks_of() {
  local p t=0
  case $1 in
    tailor|tailor_sse) p=$tailor_pid;; nolog) p=$nolog_pid;; limits) p=$limits_pid;; otel) p=$otel_pid;;
    nginx|nginx_log|nginx_sse) p=$(workers_of "$tmp/nginx.pid");; direct|direct_sse) p=$(workers_of "$tmp/canned.pid");;
  esac
  for x in $p; do t=$((t + $(awk '{print $14+$15}' "/proc/$x/stat"))); done
  echo $t
}
# run SCENARIO TARGET ROUND CONNS LUA: appends "scenario target round rps p50_us p99_us requests
# non2xx cpu_us_per_request" to results
run() {
  local c0 c1; c0=$(ticks_of "$2")
  wrk -t1 -c"$4" -d"${dur}s" -s "$tmp/$5.lua" --latency "$(url_of "$2")/v1/chat/completions" >"$tmp/wrk.$1.$2.$3" 2>&1
  c1=$(ticks_of "$2")
  python3 - "$tmp/wrk.$1.$2.$3" "$c0" "$c1" "$(getconf CLK_TCK)" "$1" "$2" "$3" >>"$tmp/results" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
c0, c1, hz = map(int, sys.argv[2:5])
def us(s):
    v, u = re.match(r"([\d.]+)(\w+)", s).groups(); return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = us(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
n = int(re.search(r"(\d+) requests in", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(*sys.argv[5:8], f"{rps:.0f} {p50:.0f} {p99:.0f} {n} {errs.group(1) if errs else 0} {(c1 - c0) / hz / n * 1e6:.1f}")
PY
}

# paced_c1 URL: "p50_us p90_us" of 300 small chat requests on one keep-alive connection, 3 ms apart
paced_c1() {
  python3 - "$1" "$tmp/small.lua" <<'PY'
import http.client, json, math, re, sys, time, urllib.parse
url, lua = urllib.parse.urlsplit(sys.argv[1]), open(sys.argv[2]).read()
body = json.loads(re.search(r"^wrk.body = (.*)$", lua, re.M).group(1))
head = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
connect = lambda: http.client.HTTPConnection(url.hostname, url.port, timeout=5)
c, took, fails, fresh = connect(), [], 0, False
while len(took) < 330:  # the first 30 open the connections on the way and are not counted
    t0 = time.perf_counter()
    try:
        c.request("POST", "/v1/chat/completions", body, head)
        r = c.getresponse(); r.read()
    except (http.client.HTTPException, OSError):
        # a proxy may close an idle keep-alive connection (nginx did once in a run): a new one,
        # and the request again; the first request on it is not counted (it opens the connection)
        fails += 1
        assert fails < 10, "paced_c1: ten tries in a row failed"
        c.close(); c, fresh = connect(), True
        continue
    assert r.status == 200, r.status
    if not fresh:
        took.append(time.perf_counter() - t0)
    fails, fresh = 0, False
    time.sleep(0.003)
took = sorted(took[30:])
rank = lambda p: took[math.ceil(p * len(took)) - 1]  # nearest rank
print(f"{rank(0.5) * 1e6:.0f} {rank(0.9) * 1e6:.0f}")
PY
}

# in this round's order: as listed in odd rounds, reversed in even ones, so that a drift within a
# round (another tenant, the upstream's state) does not always favour the same side of a ratio
in_order() { # round targets...
  local r=$1; shift
  if [ $((r % 2)) -eq 1 ]; then echo "$@"; else printf '%s\n' "$@" | tac | tr '\n' ' '; fi
}
: >"$tmp/results"
for r in $(seq "$rounds"); do
  for c in 64 256; do
    for t in $(in_order "$r" direct nginx nginx_log tailor nolog); do run "thr$c" $t "$r" "$c" small; done
  done
  run thr64 otel "$r" 64 small  # telemetry on, after the rounds' tailor as shipped
  for t in $(in_order "$r" nginx_log tailor); do run new16 $t "$r" 16 close; done
  for t in $(in_order "$r" direct_sse nginx_sse tailor_sse); do run sse $t "$r" 64 sse; done
  for t in $(in_order "$r" direct nginx_log tailor otel); do run c1 $t "$r" 1 small; done
  # the same one connection with requests 3 ms apart: between two requests the CPU idles and the
  # caches go cold, as at a paced stream's first token (wrk's back-to-back requests keep them warm)
  for t in $(in_order "$r" direct nginx_log tailor); do echo "$t $r $(paced_c1 "$(url_of $t)")" >>"$tmp/cold"; done
  # scenario 3, each round: 64 users at a time reading 64-chunk streams paced 20 ms apart (the
  # added time to first token is a difference of two latencies that each swing by 50 us between
  # runs here: a median of per-round differences, like the ratios)
  for t in $(in_order "$r" direct nginx tailor); do
    case $t in direct) u=$sim;; nginx) u=$(url_of nginx_sim);; tailor) u=$tailor_url;; esac
    echo "$t $r $("$streams" paced "$u" 64 "$(( dur < 6 ? 6 : dur ))")" >>"$tmp/paced"
  done
done
for t in direct nginx_log tailor; do run big $t 1 16 big; done
# tailor with a limit in Redis, right after tailor without, both without access log
for c in 64 1; do
  run "lim$c" limits 1 "$c" small
  run "lim$c" nolog 1 "$c" small
done

peak_rss=$(awk '/VmHWM/{print $2}' "/proc/$tailor_pid/status")
access_lines=$(wc -l <"$tmp/tailor.err")
# what became of the telemetry row's spans (exported, dropped: queue full, failed)
spans=$(python3 -c 'import sys, urllib.request
m = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
print(" ".join(l.split("\"")[1] + " " + l.split()[-1] for l in m.splitlines() if l.startswith("tailor_trace_spans_total{")))' "$otel_admin")

# scenario 6: per model, tokens equal completed requests x the upstream's usage: the canned
# answer has 12 output tokens, the canned stream 7, the simulator's paced streams 64
python3 - "$tailor_admin" <<'PY' | tee "$tmp/counters"
import sys, urllib.request
m = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
def total_of(name, **labels):
    s = 0.0
    for line in m.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            s += float(line.rsplit(" ", 1)[1])
    return s
ok = True
for model, words in [("mini", 64), ("gpt-4o", 12), ("support-ft", 12), ("stream-4o", 7)]:
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

python3 - "$tmp/results" "$tmp/paced" "$idle_rss" "$peak_rss" "$hold" "$access_lines" "$spans" "$tmp/cold" <<'PY'
import json, statistics, sys
from collections import defaultdict
R = defaultdict(dict)  # (scenario, target) -> round -> fields
for line in open(sys.argv[1]):
    s, t, r, *v = line.split()
    R[s, t][int(r)] = dict(zip(["rps", "p50", "p99", "n", "non2xx", "cpu"], map(float, v)))
P = defaultdict(dict)  # target -> round -> the streams client's fields
for line in open(sys.argv[2]):
    t, r, fields = line.split(" ", 2)
    P[t][int(r)] = json.loads(fields)
C = defaultdict(dict)  # target -> round -> (p50, p90) of requests 3 ms apart
for line in open(sys.argv[8]):
    t, r, *p = line.split()
    if len(p) == 2:  # a run the client could not finish has no times
        C[t][int(r)] = (float(p[0]), float(p[1]))
idle, peak = int(sys.argv[3]), int(sys.argv[4])
hold = json.loads(sys.argv[5])
med = statistics.median
def rounds(s, t): return sorted(R[s, t])
def median_of(s, t, f): return med(R[s, t][r][f] for r in rounds(s, t))
def ratio(s, a, b, f="rps"): return med(R[s, a][r][f] / R[s, b][r][f] for r in rounds(s, a))
def diff(s, a, b, f): return med(R[s, a][r][f] - R[s, b][r][f] for r in rounds(s, a))

names = {"thr64": "1. 64 conns, small chat body", "thr256": "1. 256 conns, small chat body",
         "new16": "1. 16 clients, a new connection per request",
         "sse": "3. 64 conns, short SSE stream (9 events)", "c1": "2. 1 conn, small chat body",
         "big": "5. 16 conns, 200 KB prompt", "lim64": "limits, 64 conns", "lim1": "limits, 1 conn"}
label = {"direct": "direct (canned upstream)", "direct_sse": "direct (canned stream)", "nginx": "nginx, access log off",
         "nginx_log": "nginx, access log on", "nginx_sse": "nginx, access log on", "tailor": "tailor as shipped (access log on)",
         "tailor_sse": "tailor as shipped (access log on)", "nolog": "tailor --no-access-log", "limits": "tailor --no-access-log + limit in Redis",
         "otel": "tailor as shipped + telemetry (OTLP export)"}
print(f"\nMedians over rounds (rounds: scenarios 1-3 short: {len(rounds('thr64', 'tailor'))}, others 1)")
print("\n| scenario | target | req/s | p50 us | p99 us | non-2xx | CPU us/request |")
print("|---|---|---|---|---|---|---|")
seen = set()
order = list(dict.fromkeys(s for s, _ in R))  # a scenario's rows together (the telemetry row runs later)
for (s, t) in sorted(R, key=lambda k: order.index(k[0])):
    first = s not in seen; seen.add(s)
    print(f"| {names[s] if first else ''} | {label[t]} | {median_of(s, t, 'rps'):.0f} | {median_of(s, t, 'p50'):.0f} | {median_of(s, t, 'p99'):.0f} | "
          f"{sum(R[s, t][r]['non2xx'] for r in rounds(s, t)):.0f} | {median_of(s, t, 'cpu'):.1f} |")
print(f"\n| 3. 64 streams at a time, 64 chunks 20 ms apart (medians of {len(P['tailor'])} rounds; streams and lost: sums) | streams | lost | TTFT p50 us | TTFT p99 us | gap p50 us | gap p99 us |")
print("|---|---|---|---|---|---|---|")
pmed = lambda t, f: med(p[f] for p in P[t].values())
psum = lambda t, f: sum(p[f] for p in P[t].values())
for t in P:
    print(f"| {t} | {psum(t, 'streams')} | {psum(t, 'lost')} | {pmed(t, 'ttft_p50_us'):.0f} | {pmed(t, 'ttft_p99_us'):.0f} | {pmed(t, 'gap_p50_us'):.0f} | {pmed(t, 'gap_p99_us'):.0f} |")

per_round = lambda s, a, b: " ".join(f"{R[s, a][r]['rps'] / R[s, b][r]['rps']:.2f}" for r in rounds(s, a))
added = lambda t: [P[t][r]["ttft_p50_us"] - P["direct"][r]["ttft_p50_us"] for r in sorted(P[t])]
ttft, ttft_n = med(added("tailor")), med(added("nginx"))
ttft_rounds = " ".join(f"{v:.0f}" for v in added("tailor"))
c1_50, c1_99 = diff("c1", "tailor", "direct", "p50"), diff("c1", "tailor", "direct", "p99")
n1_50, n1_99 = diff("c1", "nginx_log", "direct", "p50"), diff("c1", "nginx_log", "direct", "p99")
cpu = median_of("thr64", "tailor", "cpu")
lost = psum("tailor", "lost") + hold["lost"]
rows = [
    ("throughput at 64 conns, tailor as shipped / nginx with access log", ratio("thr64", "tailor", "nginx_log"), ">= 0.80", ">= 1.0", 0.80, 1.0, per_round("thr64", "tailor", "nginx_log")),
    ("throughput at 64 conns, both logs off", ratio("thr64", "nolog", "nginx"), ">= 0.90", ">= 1.1", 0.90, 1.1, per_round("thr64", "nolog", "nginx")),
    ("throughput at 256 conns, tailor as shipped / nginx with access log", ratio("thr256", "tailor", "nginx_log"), "", "", None, None, per_round("thr256", "tailor", "nginx_log")),
    ("throughput at 256 conns, both logs off", ratio("thr256", "nolog", "nginx"), "", "", None, None, per_round("thr256", "nolog", "nginx")),
    ("throughput with a new connection per request (16 clients), tailor as shipped / nginx with access log", ratio("new16", "tailor", "nginx_log"), "", "", None, None, per_round("new16", "tailor", "nginx_log")),
    ("short SSE streams at 64 conns, tailor / nginx", ratio("sse", "tailor_sse", "nginx_sse"), ">= 0.80", ">= 1.0", 0.80, 1.0, per_round("sse", "tailor_sse", "nginx_sse")),
]
print("\n| measure | this run | must | goal | met | per round |")
print("|---|---|---|---|---|---|")
met = lambda v, must, goal, up=True: "" if must is None else ("goal" if (v >= goal if up else v <= goal) else "must" if (v >= must if up else v <= must) else "NO")
for m, v, must_s, goal_s, must, goal, pr in rows:
    print(f"| {m} | {v:.2f} | {must_s} | {goal_s} | {met(v, must, goal)} | {pr} |")
print(f"| added time to first token p50 (64-chunk streams) | {ttft:.0f} us (nginx {ttft_n:.0f} us){'' if lost == 0 else f', {lost} streams LOST a chunk'} | <= 150 us | <= 60 us | {met(ttft, 150, 60, False) if lost == 0 else 'NO'} | {ttft_rounds} us |")
print(f"| CPU per proxied request, 64 conns (tailor as shipped) | {cpu:.1f} us (nginx with log {median_of('thr64', 'nginx_log', 'cpu'):.1f} us) | <= 35 us | <= 20 us | {met(cpu, 35, 20, False)} | |")
print(f"| memory per open stream ({hold['streams']:,}) | {hold['kib_per_stream']:.1f} KiB (RSS {hold['rss_before_kib'] / 1024:.1f} -> {hold['rss_open_kib'] / 1024:.1f} MiB, all open after {hold['open_secs']} s) | <= 32 KiB | <= 12 KiB | {met(hold['kib_per_stream'], 32, 12, False)} | |")
both = "goal" if c1_50 <= 20 and c1_99 <= 60 else "must" if c1_50 <= 40 and c1_99 <= 150 else "NO"
print(f"| added latency at concurrency 1, p50 / p99 | {c1_50:.0f} / {c1_99:.0f} us (nginx {n1_50:.0f} / {n1_99:.0f} us) | <= 40 / 150 us | <= 20 / 60 us | {both} | |")
cold = lambda t, i: [C[t][r][i] - C["direct"][r][i] for r in sorted(C[t]) if r in C["direct"]]
cmed = lambda t, i: f"{med(cold(t, i)):.0f}" if cold(t, i) else "n/a"  # n/a: no round finished
print(f"| added latency at concurrency 1, requests 3 ms apart (caches cold), p50 / p90 | {cmed('tailor', 0)} / {cmed('tailor', 1)} us "
      f"(nginx {cmed('nginx_log', 0)} / {cmed('nginx_log', 1)} us) | | | | {' '.join(f'{v:.0f}' for v in cold('tailor', 0))} us |")
lim = (R["lim1", "limits"][1]["p50"] - R["lim1", "nolog"][1]["p50"], R["lim64", "limits"][1]["rps"] / R["lim64", "nolog"][1]["rps"])
lim_ok = lim[0] <= 30 and lim[1] >= 0.85 and R["lim64", "limits"][1]["non2xx"] == 0
print(f"| limits in Redis: added p50 at 1 conn / throughput at 64 conns vs tailor without | {lim[0]:+.0f} us / {lim[1]:.2f} | <= 30 us / >= 0.85 | | {'must' if lim_ok else 'NO'} | |")
otel = (ratio("thr64", "otel", "tailor"), diff("c1", "otel", "tailor", "p50"), diff("c1", "otel", "tailor", "cpu"))
print(f"| telemetry on: throughput at 64 conns / added p50 and CPU at 1 conn, vs tailor as shipped | {otel[0]:.2f} / {otel[1]:+.0f} us / {otel[2]:+.1f} us CPU (spans: {sys.argv[7].strip()}) | | | | {per_round('thr64', 'otel', 'tailor')} |")
print(f"\nidle RSS {idle / 1024:.1f} MiB, peak RSS {peak / 1024:.1f} MiB; access lines written by tailor as shipped: {sys.argv[6]}")
PY
