"""Monitoring end to end, against a real Prometheus (Debian's package; tests/run-all.sh installs it).

tailor + the simulator on tests/fixtures/monitoring.yaml; Prometheus scrapes tailor every second
and evaluates the shipped rules (deploy/prometheus/rules). A known mix of traffic goes over two
routes and an A/B split; then EVERY panel expression of the shipped dashboard and every
recording-rule expression runs against Prometheus's HTTP API (Grafana's macros and variables
substituted) and must return data, and the cost per route in Prometheus must equal the cost
computed here from the simulator's usage.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from fractions import Fraction

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/helpers"))
from procs import BIN, start_prometheus, stop_all, wait_line  # noqa: E402


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


@pytest.fixture(scope="module")
def stack():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tailor-mon-"))
    procs = []
    try:
        mock = subprocess.Popen([str(BIN), "mock-upstream", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
        procs.append(mock)
        mock_url = wait_line(mock, "simulated OpenAI listening on").split()[-1].removesuffix("/v1")
        cfg_text = ((ROOT / "tests/fixtures/monitoring.yaml").read_text().replace("MOCK_URL", mock_url)
                    .replace("FIXTURES_DIR", str(ROOT / "tests/fixtures")))
        (tmp / "routes.yaml").write_text(cfg_text)
        tailor = subprocess.Popen([str(BIN), "--no-access-log", "serve", "--config", str(tmp / "routes.yaml")],
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, "TAILOR_TEST_KEY": "sk-mon"})
        procs.append(tailor)
        line = wait_line(tailor, "tailor listening on")
        api = line.split()[3].removesuffix("/v1")
        admin = line.rsplit("admin: ", 1)[1].strip().rstrip(")")
        prom, prom_url = start_prometheus(tmp, [admin.removeprefix("http://")])
        procs.append(prom)
        yield {"api": api, "admin": admin, "prom": prom_url, "config": yaml.safe_load(cfg_text)}
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, _, body = http("GET", url)
    assert status == 200, f"{expr}: {body}"
    data = json.loads(body)["data"]
    return data["result"]


def usage_of(status, headers, body):
    """The usage object of an answer (JSON body or the last usage chunk of a stream)."""
    if headers.get("Content-Type", headers.get("content-type", "")).startswith("text/event-stream"):
        usage = None
        for block in body.split("\n\n"):
            if block.startswith("data: {"):
                chunk = json.loads(block[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
        return usage
    return json.loads(body).get("usage") if status == 200 else None


@pytest.fixture(scope="module")
def traffic(stack):
    """Sends the known mix; returns the expected cost per route (Fractions of USD) and counts."""
    # after Prometheus's first scrape, so the counters' rates see the traffic arrive
    deadline = time.time() + 30
    while not query(stack["prom"], "tailor_arm_requests_total"):
        assert time.time() < deadline, "Prometheus never scraped tailor"
        time.sleep(0.2)
    models = stack["config"]["models"]
    price = {name: {k: Fraction(str(v)) for k, v in m["price"].items()} for name, m in models.items()}
    cost = {}
    answered = 0
    msg = lambda n: [{"role": "user", "content": "monitoring " + "x" * (n % 7) * 300}]  # noqa: E731
    plan = []
    for i in range(40):
        plan.append(("support", {"model": "support", "messages": msg(i), "stream": i % 3 == 0, "user": f"u{i}"}, {}))
    for i in range(30):
        plan.append(("general", {"model": "gpt-4o", "messages": msg(i), "stream": i % 2 == 0}, {}))
    for i in range(5):
        plan.append(("legacy", {"model": "legacy", "messages": msg(i)}, {}))
    # errors last, and fewer than health.failures (5) in a row, so gpt-4o stays in rotation
    for i in range(4):
        plan.append(("general", {"model": "gpt-4o", "messages": msg(i)}, {"x-mock-status": "500" if i % 2 else "429"}))
    for i in range(4):
        plan.append((None, {"model": f"unknown-{i}", "messages": msg(i)}, {}))
    for route, body, headers in plan:
        if body.get("stream"):
            body["stream_options"] = {"include_usage": True}
        status, rh, text = http("POST", stack["api"] + "/v1/chat/completions", json.dumps(body),
                                {"authorization": "Bearer x", **headers})
        if route is None:
            assert status == 404
            continue
        answered += 1
        rid = rh.get("x-tailor-request-id") or rh.get("X-Tailor-Request-Id")
        if status == 200 and rid:
            # a quality score for the answer (the dashboard's feedback panel)
            fs, _, fb = http("POST", stack["api"] + "/v1/feedback", json.dumps({"request_id": rid, "score": len(plan) % 2 == 0}),
                             {"authorization": "Bearer x"})
            assert fs == 200, fb
        u = usage_of(status, rh, text)
        if u is None:
            continue
        arm = rh.get("x-tailor-model") or rh.get("X-Tailor-Model")
        p = price[arm]
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        c = ((u["prompt_tokens"] - cached) * p["input"] + cached * p["cached_input"] + u["completion_tokens"] * p["output"]) / 1_000_000
        cost[route] = cost.get(route, 0) + c
    return {"cost": cost, "answered": answered}


def wait_for_scrape(stack, answered, timeout=40):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = query(stack["prom"], "sum(tailor_requests_total)")
        if r and float(r[0]["value"][1]) == answered:
            # two more scrapes and rule evaluations, so rates and recorded series exist
            time.sleep(3)
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never saw {answered} requests")


def substitute(expr):
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "10m")
            .replace("$route", ".*").replace("$model", ".*"))


def dashboard_exprs():
    dash = json.loads((ROOT / "deploy/grafana/dashboards/tailor.json").read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def rule_exprs():
    doc = yaml.safe_load((ROOT / "deploy/prometheus/rules/tailor.rules.yml").read_text())
    return [(r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"] if "record" in r]


def test_dashboard_is_file_provisionable():
    dash = json.loads((ROOT / "deploy/grafana/dashboards/tailor.json").read_text())
    text = json.dumps(dash)
    assert "__inputs" not in dash and "${DS_" not in text
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "route", "model"]
    assert len(dashboard_exprs()) >= 20


def test_every_panel_and_recording_rule_returns_data(stack, traffic):
    wait_for_scrape(stack, traffic["answered"])
    empty = []
    for title, expr in dashboard_exprs() + rule_exprs():
        if not query(stack["prom"], substitute(expr)):
            empty.append(f"{title}: {expr}")
    # the recorded series themselves, as Prometheus evaluated them
    for name, _ in rule_exprs():
        if not query(stack["prom"], name):
            empty.append(f"recorded series {name}")
    assert not empty, "no data for:\n" + "\n".join(empty)


def test_cost_per_route_equals_the_simulators_usage(stack, traffic):
    wait_for_scrape(stack, traffic["answered"])
    got = {r["metric"]["route"]: float(r["value"][1]) for r in query(stack["prom"], "sum by (route) (tailor_cost_usd_total)")}
    assert set(traffic["cost"]) == {"support", "general", "legacy"}
    for route, want in traffic["cost"].items():
        assert got[route] == pytest.approx(float(want), rel=1e-12, abs=1e-15), route


def test_exposition_passes_promtool(stack):
    _, _, text = http("GET", stack["admin"] + "/metrics")
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_check_and_unit_tests_pass():
    d = ROOT / "deploy/prometheus"
    for args in (["check", "rules", "rules/tailor.rules.yml"], ["test", "rules", "tests/tailor.rules.test.yml"],
                 ["check", "config", "prometheus.yml"]):
        out = subprocess.run(["promtool", *args], cwd=d, capture_output=True, text=True)
        assert out.returncode == 0, " ".join(args) + "\n" + out.stdout + out.stderr
