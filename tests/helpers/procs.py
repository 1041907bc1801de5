"""What the Python test suites share: the built binary, free ports, waiting for a process's
line, and a real Prometheus (Debian's package, installed by tests/run-all.sh) scraping targets.

Each suite puts this directory on sys.path: `sys.path.insert(0, str(ROOT / "tests/helpers"))`.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
# TAILOR_BIN: another build (e.g. target/debug/tailor while working on one suite)
BIN = pathlib.Path(os.environ.get("TAILOR_BIN", ROOT / "target" / "release" / "tailor"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc, prefix, timeout=15):
    """The first line of `proc`'s stdout that starts with `prefix` (fails after `timeout` s)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}")


def status_of(url):
    """The HTTP status of GET `url`, 0 while nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError):
        return 0


def start_prometheus(tmp, targets, port=None):
    """Prometheus scraping `targets` (host:port) every second with the shipped rules; returns
    (process, base URL) once it is ready (its query API answers 503 until then)."""
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        raise AssertionError("prometheus and promtool are required (tests/run-all.sh installs Debian's prometheus)")
    port = port or free_port()
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/rules/tailor.rules.yml")],
        "scrape_configs": [{"job_name": "tailor", "static_configs": [{"targets": list(targets)}]}],
    }))
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while status_of(url + "/-/ready") != 200:
        if time.time() > deadline or prom.poll() is not None:
            prom.kill()
            raise AssertionError("Prometheus did not become ready in 30 s")
        time.sleep(0.2)
    return prom, url


def stop_all(procs):
    """Terminates every process, then waits for each (10 s, then kill)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
