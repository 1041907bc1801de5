"""The status page (GET / on the admin port) in a real headless browser (Debian's chromium;
tests/run-all.sh installs it).

`tailor demo --traffic` runs the shipped routes.yaml against the simulator with a realistic mix;
after a few seconds of traffic chromium renders the page: it must show every route of the config,
the fine-tune verdict of the support route, and the model health table. A screenshot is written to
target/status-page.png for a person to look at.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/helpers"))
from procs import BIN, free_port  # noqa: E402

SHOT = ROOT / "target" / "status-page.png"


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("chromium is required (tests/run-all.sh installs Debian's chromium)")


def browser(*args):
    # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--window-size=1280,2600", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def demo():
    api, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [BIN, "--no-access-log", "demo", "--listen", f"127.0.0.1:{api}",
         "--admin-listen", f"127.0.0.1:{admin}", "--traffic", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            if proc.stdout.readline().startswith("tailor listening on"):
                break
        else:
            pytest.fail("tailor demo did not start")
        time.sleep(6)  # let the traffic mix build up
        yield f"http://127.0.0.1:{admin}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_status_page_renders_every_route_and_the_verdict(demo):
    econ = json.load(urllib.request.urlopen(demo + "/economics", timeout=10))
    routes = [r["route"] for r in econ["routes"]]
    assert "support" in routes and len(routes) >= 5
    support = next(r for r in econ["routes"] if r["route"] == "support")
    assert support["requests"] > 50, support
    verdict = support["finetune"]["summary"]
    assert verdict.startswith("support-ft "), verdict
    # how sure the A/B answer is: one of the rule's three outcomes, with the cost interval
    decision = support["finetune"]["decision"]
    assert decision.split(" (")[0].split(":")[0] in ("fine-tune wins", "base wins", "keep testing"), decision
    cost = support["finetune"]["cost_difference_ci95"]
    assert cost is None or cost["low"] <= cost["value"] <= cost["high"], cost

    dom = browser("--dump-dom", demo + "/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<title>tailor status</title>" in html
    for name in routes:
        assert f'id="route-{name}"' in html, f"route {name} not rendered"
    # the verdict as the page shows it (HTML-escaped text of the same numbers, a moment later)
    assert "support-ft saves $" in html or "support-ft costs $" in html
    assert "A/B: <b>" in html
    assert "in rotation" in html
    assert "[shadow]" in html  # the summaries route's shadow arm
    # where the figures come from: the demo has no Prometheus, so this replica, since its start
    assert econ["source"]["kind"] == "local" and econ["source"]["description"].startswith("this replica, since 20")
    assert "Figures: <b>this replica, since 20" in html
    # a chart of cost per request with its interval, and one of spend over the window, per A/B route
    support_html = html[html.index('id="route-support"'):]
    support_html = support_html[:support_html.index("<h2", 10)] if "<h2" in support_html[10:] else support_html
    assert 'aria-label="cost per request per arm, 95% interval"' in support_html
    assert 'aria-label="spend over the window per arm"' in support_html and "<polyline" in support_html
    # routes with traffic first: the busiest route is the first one on the page
    busiest = max(econ["routes"], key=lambda r: r["requests"])["route"]
    first = min(routes, key=lambda name: html.index(f'id="route-{name}"'))
    assert first == busiest, (first, busiest)

    SHOT.unlink(missing_ok=True)
    shot = browser(f"--screenshot={SHOT}", demo + "/")
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = SHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "screenshot missing or blank"
