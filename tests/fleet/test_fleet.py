"""The fleet's economics, end to end: a real Prometheus (Debian's package) scrapes two tailor
replicas (tests/fixtures/fleet.yaml) in front of the simulator. The official Python SDK sends
traffic to both over the support route's 50/50 split; replica A is restarted in the middle (same
address, so its counters reset inside one series); every answer's feedback is posted to the other
replica than the one that answered. Then `tailor report` and /economics on either replica must
agree with each other and with the cost computed here from the usage the SDK received (relative
1e-9), feedback must land on the arm that answered, and the summaries route's shadow pairs must be
judged, the judge's spend kept out of the route's.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import sys
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from fractions import Fraction

import pytest
import yaml
from openai import OpenAI

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/helpers"))
from procs import BIN, free_port, start_prometheus, stop_all, wait_line  # noqa: E402

ID_KEY = "fleet-test-request-id-key-0123456789"
ENV = {**os.environ, "TAILOR_TEST_KEY": "sk-fleet", "TAILOR_ID_KEY": ID_KEY}


def http(method, url, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


class Replica:
    def __init__(self, name, cfg_text, tmp):
        self.name = name
        self.api_port, self.admin_port = free_port(), free_port()
        self.cfg = tmp / f"{name}.yaml"
        self.cfg.write_text(cfg_text.replace("API_PORT", str(self.api_port)).replace("ADMIN_PORT", str(self.admin_port)))
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([str(BIN), "--no-access-log", "serve", "--config", str(self.cfg)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        wait_line(self.proc, "tailor listening on")
        self.client = OpenAI(base_url=self.api + "/v1", api_key="unused", max_retries=0)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def metric_sum(self, family):
        _, text = http("GET", self.admin + "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(family + "{") or line.startswith(family + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def fleet():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tailor-fleet-"))
    procs = []
    try:
        mock = subprocess.Popen([str(BIN), "mock-upstream", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
        procs.append(mock)
        mock_url = wait_line(mock, "simulated OpenAI listening on").split()[-1].removesuffix("/v1")
        prom_port = free_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        text = ((ROOT / "tests/fixtures/fleet.yaml").read_text().replace("MOCK_URL", mock_url)
                .replace("PROM_URL", prom_url).replace("FIXTURES_DIR", str(ROOT / "tests/fixtures")))
        a, b = Replica("a", text, tmp), Replica("b", text, tmp)
        prom, _ = start_prometheus(tmp, [f"127.0.0.1:{a.admin_port}", f"127.0.0.1:{b.admin_port}"], prom_port)
        procs.append(prom)
        a.start()
        b.start()
        yield {"a": a, "b": b, "prom": prom_url, "config": yaml.safe_load(text), "tmp": tmp}
        for r in (a, b):
            if r.proc.poll() is None:
                r.stop()
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def prom_sum(prom, expr):
    status, body = http("GET", f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": f"sum({expr})"}))
    assert status == 200, body
    r = json.loads(body)["data"]["result"]
    return float(r[0]["value"][1]) if r else 0.0


FAMILIES = ["tailor_arm_requests_total", "tailor_arm_cost_usd_total", "tailor_feedback_total",
            "tailor_feedback_score_total", "tailor_shadow_judgements_total"]


def wait_scraped(prom, replicas, timeout=60):
    """Until Prometheus's latest sample of every replica equals what the replica reports now."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(abs(prom_sum(prom, f'{fam}{{instance="127.0.0.1:{r.admin_port}"}}') - r.metric_sum(fam)) < 1e-12
               for r in replicas for fam in FAMILIES):
            return
        time.sleep(0.5)
    raise AssertionError("Prometheus did not catch up with the replicas")


def price_of(config, model):
    return {k: Fraction(str(v)) for k, v in config["models"][model]["price"].items()}


def cost_of(price, u):
    cached = (u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details and u.prompt_tokens_details.cached_tokens else 0)
    return ((u.prompt_tokens - cached) * price["input"] + cached * price.get("cached_input", price["input"])
            + u.completion_tokens * price["output"]) / 1_000_000


def ask(replica, model, i):
    """One SDK request; returns (arm, request id, usage)."""
    msgs = [{"role": "user", "content": f"fleet question {i}: " + "how do I reset my password? " * (i % 5 + 1)}]
    if i % 3 == 0:
        raw = replica.client.chat.completions.with_raw_response.create(
            model=model, messages=msgs, user=f"user-{i}", stream=True, stream_options={"include_usage": True})
        usage = None
        for chunk in raw.parse():
            if chunk.usage:
                usage = chunk.usage
    else:
        raw = replica.client.chat.completions.with_raw_response.create(model=model, messages=msgs, user=f"user-{i}")
        usage = raw.parse().usage
    assert usage is not None
    return raw.headers["x-tailor-model"], raw.headers["x-tailor-request-id"], usage


@pytest.fixture(scope="module")
def traffic(fleet):
    a, b, config = fleet["a"], fleet["b"], fleet["config"]
    want = {"cost": {}, "n": {}, "fb_n": {}, "fb_sum": {}, "summaries": Fraction(0), "pairs": 0}
    answers = []

    def run(replicas, start, count):
        for i in range(start, start + count):
            r = replicas[i % 2]
            arm, rid, usage = ask(r, "support", i)
            want["cost"][arm] = want["cost"].get(arm, Fraction(0)) + cost_of(price_of(config, arm), usage)
            want["n"][arm] = want["n"].get(arm, 0) + 1
            answers.append((r, arm, rid, i))
            if i % 4 == 0:
                arm, _, usage = ask(r, "summarize", i)
                assert arm == "gpt-4o"
                want["summaries"] += cost_of(price_of(config, arm), usage)
                want["pairs"] += 1

    def feedback(pending):
        for r, arm, rid, i in pending:
            other = b if r is a else a
            score = (i % 4 != 0) if arm == "support-ft" else 0.5  # true/false for one arm, numbers for the other
            status, body = http("POST", other.api + "/v1/feedback", {"request_id": rid, "score": score})
            assert status == 200, body
            assert json.loads(body) == {"route": "support", "model": arm, "counted": True}
            want["fb_n"][arm] = want["fb_n"].get(arm, 0) + 1
            want["fb_sum"][arm] = want["fb_sum"].get(arm, 0.0) + float(score)

    def judged(deadline=30):
        # shadow pairs and their judgements finish after the answers
        end = time.time() + deadline
        while a.metric_sum("tailor_shadow_judgements_total") + b.metric_sum("tailor_shadow_judgements_total") \
                + want["before_restart"].get("tailor_shadow_judgements_total", 0) < want["pairs"]:
            assert time.time() < end, "the shadow pairs were not all judged"
            time.sleep(0.2)

    want["before_restart"] = {}
    run([a, b], 0, 40)
    feedback(answers)
    done = len(answers)
    judged()
    # replica A restarts on the same address once Prometheus has its last values
    wait_scraped(fleet["prom"], [a, b])
    want["before_restart"] = {f: a.metric_sum(f) for f in ["tailor_shadow_judgements_total", "tailor_judge_requests_total"]}
    a.stop()
    a.start()
    run([a, b], 40, 40)
    feedback(answers[done:])
    judged()
    wait_scraped(fleet["prom"], [a, b])
    return want


def arms_by_model(route):
    return {x["model"]: x for x in route["arms"]}


def route_of(report, name):
    return next(r for r in report["routes"] if r["route"] == name)


def test_report_and_both_replicas_agree_with_the_sdk_usage(fleet, traffic):
    a, b = fleet["a"], fleet["b"]
    out = subprocess.run([str(BIN), "report", "--config", str(a.cfg), "--format", "json"],
                         capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 0, out.stderr
    reports = {"tailor report": json.loads(out.stdout)}
    for r in (a, b):
        status, body = http("GET", r.admin + "/economics")
        assert status == 200, body
        reports[f"/economics on {r.name}"] = json.loads(body)
    for where, rep in reports.items():
        src = rep["source"]
        assert src["kind"] == "prometheus" and src["error"] is None, (where, src)
        # two replicas, three processes: A before and after its restart, and B
        assert (src["replicas"], src["processes"]) == (2, 3), (where, src)
        support = arms_by_model(route_of(rep, "support"))
        assert set(traffic["n"]) == {"support-ft", "gpt-4o"}, traffic["n"]
        for model, cost in traffic["cost"].items():
            arm = support[model]
            assert arm["requests"] == traffic["n"][model], (where, model)
            assert arm["spend_usd"] == pytest.approx(float(cost), rel=1e-9), (where, model)
            assert arm["cost_per_request_usd"] == pytest.approx(float(cost) / traffic["n"][model], rel=1e-9)
            # feedback posted to the other replica counts for the arm that answered
            assert arm["feedback_n"] == traffic["fb_n"][model], (where, model)
            assert arm["feedback_ci95"]["value"] == pytest.approx(traffic["fb_sum"][model] / traffic["fb_n"][model], rel=1e-9)
        verdict = route_of(rep, "support")["finetune"]
        assert verdict and verdict["decision"], where
        assert verdict["hosting_to_date_usd"] > 0, where
        assert route_of(rep, "support")["since"] == "2020-01-01T00:00:00Z"
        # the judge's spend is not the route's
        summaries = route_of(rep, "summaries")
        assert summaries["arms"][0]["spend_usd"] == pytest.approx(float(traffic["summaries"]), rel=1e-9), where
        assert summaries["shadow"]["requests"] == traffic["pairs"], where
    first = reports["tailor report"]
    for where, rep in reports.items():
        for route in first["routes"]:
            other = route_of(rep, route["route"])
            for x, y in zip(route["arms"], other["arms"]):
                assert (x["model"], x["requests"], x["feedback_n"]) == (y["model"], y["requests"], y["feedback_n"]), where
                assert x["spend_usd"] == pytest.approx(y["spend_usd"], rel=1e-9), where


def test_shadow_pairs_are_judged_and_the_judge_is_metered_apart(fleet, traffic):
    prom = fleet["prom"]
    # (replica A's counts from before its restart are no longer in the latest samples)
    before = traffic["before_restart"]
    judged = prom_sum(prom, "tailor_shadow_judgements_total{route=\"summaries\",model=\"support-ft\"}")
    assert judged + before["tailor_shadow_judgements_total"] == traffic["pairs"]
    # the simulator follows the judge's one-word instructions: every verdict is one of the three
    status, body = http("GET", f"{prom}/api/v1/query?" + urllib.parse.urlencode(
        {"query": "sum by (verdict) (tailor_shadow_judgements_total)"}))
    verdicts = {r["metric"]["verdict"] for r in json.loads(body)["data"]["result"]}
    assert verdicts <= {"better", "same", "worse"} and verdicts, verdicts
    assert prom_sum(prom, "tailor_judge_cost_usd_total{route=\"summaries\",model=\"judge\"}") > 0
    ok = prom_sum(prom, "tailor_judge_requests_total{outcome=\"ok\"}")
    assert ok + before["tailor_judge_requests_total"] == traffic["pairs"]
    # the judge's tokens are its own: the route's token series never count them
    assert prom_sum(prom, "tailor_judge_tokens_total{type=\"output\"}") > 0


def test_the_status_page_and_the_text_report_name_their_source(fleet, traffic):
    a = fleet["a"]
    status, page = http("GET", fleet["b"].admin + "/")
    assert status == 200
    assert "the fleet: 2 replicas (3 processes) in Prometheus at " + fleet["prom"] in page
    assert page.count("<svg") >= 2
    # routes with traffic first, the busiest on top (support: 80 requests, summaries: 20)
    support, summaries = route_requests(page, "support"), route_requests(page, "summaries")
    assert support == 80 and summaries == traffic["pairs"], (support, summaries)
    assert page.index("Route support") < page.index("Route summaries")
    out = subprocess.run([str(BIN), "report", "--config", str(a.cfg), "--route", "support", "--since", "1h"],
                         capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("source: the fleet: 2 replicas"), out.stdout
    (ROOT / "target" / "fleet-report.txt").write_text(out.stdout)  # for a person to read
    assert "route summaries" not in out.stdout and "A/B decision: " in out.stdout, out.stdout


def route_requests(page, route):
    m = re.search(rf'Route {route}</h2>.*?<p[^>]*>(\d+) requests', page, re.S)
    return int(m.group(1)) if m else 0


def test_feedback_for_a_forged_id_is_refused_by_every_replica(fleet, traffic):
    for r in (fleet["a"], fleet["b"]):
        status, body = http("POST", r.api + "/v1/feedback",
                            {"request_id": "tlr-c3VwcG9ydC9ncHQtNG8vMQ.00000000000000000000000000000000", "score": 1})
        assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error", body
