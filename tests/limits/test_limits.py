"""Budgets and rate limits for the fleet, for real: Debian's redis-server (tests/run-all.sh
installs it), two tailor replicas sharing it (tests/fixtures/limits.yaml) in front of the
simulator, and the official Python SDK as the client.

- 8 concurrent clients spend against a small daily budget through both replicas: the spend
  admitted (priced from the usage the SDK received) stays within the budget plus one request's
  worst case per replica, and the refusals are OpenAI-shaped 429s (`budget_exceeded`, no retry, retry-after
  to midnight UTC).
- a tokens-per-minute limit holds within 5% over two whole windows.
- a per-minute budget lets traffic through again once its window resets.
- Redis stopped: replica A (`on_error: allow`) keeps serving and counts the errors, replica B
  (`deny`) answers 503; Redis started again (with its append-only file): enforcement resumes.
- feedback for one request id counts once across the replicas.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from fractions import Fraction

import openai
import pytest
from openai import OpenAI

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/helpers"))
from procs import BIN, free_port, stop_all, wait_line  # noqa: E402

ENV = {**os.environ, "TAILOR_TEST_KEY": "sk-limits", "TAILOR_ID_KEY": "limits-test-request-id-key-012345"}
PRICE = {"input": Fraction("2.50"), "cached_input": Fraction("1.25"), "output": Fraction("10.00")}
MAX_TOKENS = 20


def metric_sum(admin, family, **labels):
    with urllib.request.urlopen(admin + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(family + "{") or line.startswith(family + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


class Redis:
    def __init__(self, tmp):
        self.port = free_port()
        self.dir = tmp
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Replica:
    def __init__(self, name, text, tmp, on_error):
        self.api_port, self.admin_port = free_port(), free_port()
        cfg = tmp / f"{name}.yaml"
        cfg.write_text(text.replace("API_PORT", str(self.api_port)).replace("ADMIN_PORT", str(self.admin_port))
                       .replace("ON_ERROR", on_error))
        self.cfg = cfg
        self.proc = subprocess.Popen([str(BIN), "--no-access-log", "serve", "--config", str(cfg)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        wait_line(self.proc, "tailor listening on")
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def client(self):
        return OpenAI(base_url=self.api + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def stack():
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is required (tests/run-all.sh installs Debian's redis-server)")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tailor-limits-"))
    redis = Redis(tmp)
    redis.start()
    procs = []
    try:
        mock = subprocess.Popen([str(BIN), "mock-upstream", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
        procs.append(mock)
        mock_url = wait_line(mock, "simulated OpenAI listening on").split()[-1].removesuffix("/v1")
        text = ((ROOT / "tests/fixtures/limits.yaml").read_text().replace("MOCK_URL", mock_url)
                .replace("REDIS_URL", f"redis://127.0.0.1:{redis.port}/0"))
        a = Replica("a", text, tmp, "allow")
        b = Replica("b", text, tmp, "deny")
        procs += [a.proc, b.proc]
        yield {"a": a, "b": b, "redis": redis}
    finally:
        stop_all(procs)
        if redis.proc.poll() is None:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def cost_of(u):
    cached = (u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details and u.prompt_tokens_details.cached_tokens else 0)
    return ((u.prompt_tokens - cached) * PRICE["input"] + cached * PRICE["cached_input"]
            + u.completion_tokens * PRICE["output"]) / 1_000_000


def ask(client, model, i):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": f"limits {i}"}], max_tokens=MAX_TOKENS)


def hammer(replicas, model, until, on_ok, on_refused, threads=8):
    """8 SDK clients, alternating replicas, until `until()` is true; calls back per answer."""
    lock = threading.Lock()

    def run(t):
        client = replicas[t % len(replicas)].client()
        i = 0
        while not until():
            i += 1
            started = time.time()
            try:
                raw = ask(client, model, f"{t}-{i}")
                with lock:
                    on_ok(raw, started)
            except openai.RateLimitError as e:
                with lock:
                    on_refused(e, started)
                time.sleep(0.05)
    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_a_daily_budget_holds_across_replicas(stack):
    a, b = stack["a"], stack["b"]
    # a daily budget resets at midnight UTC: not across it
    to_midnight = 86_400 - int(time.time()) % 86_400
    if to_midnight < 120:
        time.sleep(to_midnight + 1)
    spent = [Fraction(0)]
    refused = []

    def ok(raw, _):
        spent[0] += cost_of(raw.parse().usage)

    def no(e, _):
        refused.append(e)

    deadline = time.time() + 60
    hammer([a, b], "budgeted", lambda: len(refused) >= 16 or time.time() > deadline, ok, no)
    assert len(refused) >= 16, "the budget never refused"
    budget = Fraction("0.02")
    # the worst case of one request: its prompt (well under 100 tokens here) and max_tokens
    worst = (100 * PRICE["input"] + MAX_TOKENS * PRICE["output"]) / 1_000_000
    # at most one request's worst case over the budget per replica (each may cross it once)
    assert budget - 2 * worst <= spent[0] <= budget + 2 * worst, float(spent[0])
    e = refused[-1]
    body = e.response.json()["error"]
    assert (e.status_code, body["code"], body["type"]) == (429, "budget_exceeded", "insufficient_quota"), body
    assert e.response.headers["x-should-retry"] == "false"
    to_midnight = 86_400 - int(time.time()) % 86_400
    assert abs(int(e.response.headers["retry-after"]) - to_midnight) <= 5
    # visible: what the budget spent, what is left, and the refusals
    assert metric_sum(a.admin, "tailor_limit_rejections_total", limit="daily-budget", reason="usd") \
        + metric_sum(b.admin, "tailor_limit_rejections_total", limit="daily-budget", reason="usd") == len(refused)
    seen = max(metric_sum(r.admin, "tailor_limit_spent_usd", limit="daily-budget") for r in (a, b))
    assert 0.02 - 2 * float(worst) <= seen <= 0.02 + 2 * float(worst), seen
    with urllib.request.urlopen(a.admin + "/", timeout=10) as r:
        page = r.read().decode()
    assert "Budgets and rate limits" in page and "daily-budget" in page and "$0.02 per day" in page


def test_rates_hold_over_two_windows_and_budgets_reset(stack):
    a, b = stack["a"], stack["b"]
    # a per-minute budget, spent now; it must let traffic through again after its window
    client = a.client()
    refused = None
    for i in range(200):
        try:
            ask(client, "minute", i)
        except openai.RateLimitError as e:
            refused = e
            break
    assert refused is not None and refused.response.json()["error"]["code"] == "budget_exceeded"
    wait = int(refused.response.headers["retry-after"])
    assert 1 <= wait <= 60
    # a tokens-per-minute limit, from the start of the next minute, for two whole minutes
    start = (int(time.time()) // 60 + 1) * 60
    time.sleep(max(0.0, start - time.time()))
    per_window = {}
    refusals = []

    def ok(raw, started):
        u = raw.parse().usage
        w = int(started) // 60
        per_window[w] = per_window.get(w, 0) + u.prompt_tokens + u.completion_tokens

    hammer([a, b], "metered", lambda: time.time() >= start + 120, ok, lambda e, s: refusals.append(e))
    for w in (start // 60, start // 60 + 1):
        used = per_window.get(w, 0)
        assert 3000 * 0.95 <= used <= 3000 * 1.05, (w, used, per_window)
    e = refusals[-1]
    assert (e.status_code, e.response.json()["error"]["code"], e.response.json()["error"]["type"]) == (429, "rate_limit_exceeded", "tokens")
    h = e.response.headers
    assert h["x-ratelimit-limit-tokens"] == "3000" and int(h["x-ratelimit-remaining-tokens"]) < 100
    assert h["x-ratelimit-reset-tokens"].endswith("s") and 1 <= int(h["retry-after"]) <= 60
    # the minute budget's window is over: traffic passes again
    assert ask(client, "minute", "after").parse().usage.completion_tokens > 0


def test_redis_down_then_back(stack):
    a, b, redis = stack["a"], stack["b"], stack["redis"]
    # idle slices go back to Redis after a second: then every request needs Redis
    time.sleep(1.6)
    redis.stop()
    errors = metric_sum(a.admin, "tailor_shared_state_errors_total", op="reserve")
    # allow: A serves (uncounted) and counts the store's errors
    for i in range(5):
        assert ask(a.client(), "budgeted", f"down-{i}").parse().usage.total_tokens > 0
    assert metric_sum(a.admin, "tailor_shared_state_errors_total", op="reserve") >= errors + 5
    # deny: B answers 503, OpenAI-shaped
    with pytest.raises(openai.InternalServerError) as e:
        ask(b.client(), "budgeted", "down-b")
    assert e.value.status_code == 503
    assert e.value.response.json()["error"]["code"] == "shared_state_unavailable"
    redis.start()
    # back (its append-only file kept what the first test spent, all but what was left under
    # the cap): enforcement resumes on its own, within the few requests the budget has left
    deadline = time.time() + 20
    admitted = 0
    while True:
        try:
            ask(a.client(), "budgeted", "back")
            admitted += 1
        except openai.RateLimitError as e:
            assert e.response.json()["error"]["code"] == "budget_exceeded"
            break
        assert time.time() < deadline, "enforcement did not resume after Redis came back"
    assert admitted <= 10, admitted


def test_feedback_counts_once_across_replicas(stack):
    a, b = stack["a"], stack["b"]
    # the minute budget's window has reset since its test
    raw = ask(a.client(), "minute", "feedback")
    rid = raw.headers["x-tailor-request-id"]
    answers = []
    for r in (a, b, a):
        req = urllib.request.Request(r.api + "/v1/feedback", data=json.dumps({"request_id": rid, "score": True}).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            answers.append(json.loads(resp.read()))
    assert [x["counted"] for x in answers] == [True, False, False], answers
    total = sum(metric_sum(r.admin, "tailor_feedback_total", route="minute") for r in (a, b))
    assert total == 1
