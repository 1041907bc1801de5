"""OpenTelemetry traces, for real: tailor (tests/fixtures/telemetry.yaml) in front of the
simulator, exporting to an OTLP/HTTP receiver written here that decodes every POST with the
official protobuf definitions (PyPI `opentelemetry-proto`, pinned in
tests/sdk/python/requirements.txt).

- a client `traceparent` is continued: the span has its trace id and its span as the parent, and
  the upstream received a `traceparent` with that trace id and tailor's span as the parent
  (the simulator echoes it in `x-mock-traceparent`); `tracestate` passes unchanged.
- the GenAI attributes (operation, request/response model, tokens as the client's usage says),
  tailor's route, model and cost, status code, server address; kind CLIENT; no prompt or key.
- a request retried then fallen back carries `tailor.retry` and `tailor.fallback` events.
- no traceparent, or a malformed one: a new trace, and the malformed value never reaches the
  upstream. A client's error status marks the span as an error.
- a request refused before forwarding (no route: 404) has a span with its error kind.
- a client that sent sampled=0: the trace is continued upstream, no span is exported.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/helpers"))
from procs import BIN, stop_all, wait_line  # noqa: E402

KEY = "sk-telemetry-upstream-key-93f1"
PROMPT = "the-secret-prompt-7c2d"


class Receiver(BaseHTTPRequestHandler):
    """POST /v1/traces: decodes the protobuf body and keeps (resource attrs, span) pairs."""

    spans = []
    posts = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        with self.lock:
            self.posts.append((self.path, self.headers.get("content-type")))
            for rs in req.resource_spans:
                res = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append((res, ss.scope.name, s))
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def attrs(kvs):
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


@pytest.fixture(scope="module")
def stack():
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{receiver.server_address[1]}"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tailor-otel-"))
    procs = []
    try:
        mock = subprocess.Popen([str(BIN), "mock-upstream", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
        procs.append(mock)
        mock_url = wait_line(mock, "simulated OpenAI listening on").split()[-1].removesuffix("/v1")
        cfg = tmp / "telemetry.yaml"
        cfg.write_text((ROOT / "tests/fixtures/telemetry.yaml").read_text()
                       .replace("MOCK_URL", mock_url).replace("OTLP_URL", otlp))
        log = open(tmp / "tailor.log", "w")
        tailor = subprocess.Popen([str(BIN), "serve", "--config", str(cfg)], stdout=subprocess.PIPE,
                                  stderr=log, text=True, env={**os.environ, "TAILOR_TEST_KEY": KEY})
        procs.append(tailor)
        line = wait_line(tailor, "tailor listening on")
        api = line.split()[3].removesuffix("/v1")
        admin = line.split("(admin: ")[1].rstrip(")\n")
        yield {"api": api, "admin": admin, "mock": mock_url, "tmp": tmp}
    finally:
        stop_all(procs)
        receiver.shutdown()


def chat(stack, model, headers=None):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}]}).encode()
    req = urllib.request.Request(stack["api"] + "/v1/chat/completions", data=body, method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def span_for(request_id, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with Receiver.lock:
            for res, scope, s in Receiver.spans:
                if attrs(s.attributes).get("tailor.request_id") == request_id:
                    return res, scope, s
        time.sleep(0.05)
    raise AssertionError(f"no span with tailor.request_id {request_id}")


def upstream_traceparent(headers):
    tp = headers.get("x-mock-traceparent")
    assert tp, "the upstream received no traceparent"
    version, trace_id, parent, flags = tp.split("-")
    assert version == "00" and len(trace_id) == 32 and len(parent) == 16
    return trace_id, parent, flags


CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def test_a_client_trace_is_continued_with_genai_attributes(stack):
    status, headers, body = chat(stack, "plain", {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                                                  "tracestate": "congo=t61rcWkgMzE"})
    assert status == 200, body
    res, scope, s = span_for(headers["x-tailor-request-id"])
    assert res["service.name"] == "tailor-test" and scope == "tailor"
    assert s.trace_id.hex() == CLIENT_TRACE
    assert s.parent_span_id.hex() == CLIENT_SPAN
    assert s.trace_state == "congo=t61rcWkgMzE"
    assert s.kind == Span.SPAN_KIND_CLIENT
    assert s.name == "chat plain"
    assert s.status.code == Status.STATUS_CODE_UNSET
    assert 0 < s.start_time_unix_nano < s.end_time_unix_nano
    a = attrs(s.attributes)
    usage = body["usage"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "plain"
    assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["tailor.route"] == "plain" and a["tailor.model"] == "gpt-4o"
    # gpt-4o-2024-08-06 from the built-in table: $2.50 / $10.00 per million tokens
    want = (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10.0) / 1e6
    assert abs(a["tailor.cost_usd"] - want) < 1e-12, (a["tailor.cost_usd"], want)
    assert a["http.response.status_code"] == 200
    mock_host, mock_port = stack["mock"].removeprefix("http://").rsplit(":", 1)
    assert a["server.address"] == mock_host and a["server.port"] == int(mock_port)
    assert not s.events
    # the upstream got the same trace with tailor's span as its parent, and the tracestate
    trace_id, parent, flags = upstream_traceparent(headers)
    assert (trace_id, parent, flags) == (CLIENT_TRACE, s.span_id.hex(), "01")
    assert parent != CLIENT_SPAN
    # nothing the client wrote, and no key, is in the span
    text = json.dumps(MessageToDict(s))
    assert PROMPT not in text and KEY not in text


def test_retries_and_fallbacks_are_span_events(stack):
    status, headers, body = chat(stack, "fb", {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
    assert status == 200, body
    assert headers["x-tailor-model"] == "mini"
    _, _, s = span_for(headers["x-tailor-request-id"])
    assert s.trace_id.hex() == "ab" * 16
    a = attrs(s.attributes)
    assert a["tailor.route"] == "fb" and a["tailor.model"] == "mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    events = [(e.name, attrs(e.attributes)) for e in s.events]
    assert [n for n, _ in events] == ["tailor.retry", "tailor.fallback"], events
    retry, fallback = events[0][1], events[1][1]
    assert retry["tailor.model"] == "broken" and retry["tailor.retry"] == 1
    assert retry["error.type"] == "server_error" and retry["http.response.status_code"] == 500
    assert fallback["tailor.fallback.from"] == "broken" and fallback["tailor.fallback.to"] == "mini"
    assert fallback["http.response.status_code"] == 500
    times = [e.time_unix_nano for e in s.events]
    assert s.start_time_unix_nano <= times[0] <= times[1] <= s.end_time_unix_nano
    assert s.status.code == Status.STATUS_CODE_UNSET
    assert upstream_traceparent(headers)[:2] == ("ab" * 16, s.span_id.hex())


@pytest.mark.parametrize("sent", [None, f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN.upper()}-01",
                                  f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "garbage"])
def test_no_or_malformed_traceparent_starts_a_new_trace(stack, sent):
    status, headers, _ = chat(stack, "plain", {"traceparent": sent} if sent else {})
    assert status == 200
    _, _, s = span_for(headers["x-tailor-request-id"])
    assert s.parent_span_id == b""
    assert s.trace_id.hex() not in (CLIENT_TRACE, "0" * 32)
    trace_id, parent, _ = upstream_traceparent(headers)
    assert (trace_id, parent) == (s.trace_id.hex(), s.span_id.hex())
    if sent:
        assert headers["x-mock-traceparent"] != sent


def test_an_error_status_marks_the_span(stack):
    status, headers, _ = chat(stack, "plain", {"x-mock-status": "400"})
    assert status == 400
    _, _, s = span_for(headers["x-tailor-request-id"])
    assert s.status.code == Status.STATUS_CODE_ERROR
    a = attrs(s.attributes)
    assert a["error.type"] == "400" and a["http.response.status_code"] == 400


def test_a_request_refused_before_forwarding_has_a_span(stack):
    trace = "9" * 32
    status, _, body = chat(stack, "no-such-route", {"traceparent": f"00-{trace}-{CLIENT_SPAN}-01"})
    assert status == 404, body
    deadline = time.time() + 10
    while time.time() < deadline:
        with Receiver.lock:
            found = [s for _, _, s in Receiver.spans if s.trace_id.hex() == trace]
        if found:
            break
        time.sleep(0.05)
    assert len(found) == 1
    s = found[0]
    assert s.name == "chat no-such-route" and s.parent_span_id.hex() == CLIENT_SPAN
    assert s.status.code == Status.STATUS_CODE_ERROR
    a = attrs(s.attributes)
    assert a["error.type"] == "unrouted" and a["http.response.status_code"] == 404
    assert "tailor.route" not in a and "server.address" not in a
    assert PROMPT not in json.dumps(MessageToDict(s))


def test_unsampled_is_continued_but_not_exported(stack):
    status, headers, _ = chat(stack, "plain", {"traceparent": f"00-{'12' * 16}-{CLIENT_SPAN}-00"})
    assert status == 200
    trace_id, parent, flags = upstream_traceparent(headers)
    assert trace_id == "12" * 16 and flags == "00" and parent != CLIENT_SPAN
    # a later sampled request's span arrives; the unsampled one never does
    _, h2, _ = chat(stack, "plain")
    span_for(h2["x-tailor-request-id"])
    time.sleep(0.3)
    with Receiver.lock:
        assert not any(s.trace_id.hex() == "12" * 16 for _, _, s in Receiver.spans)


def test_export_requests_and_metrics(stack):
    with Receiver.lock:
        posts = list(Receiver.posts)
    assert posts and all(p == ("/v1/traces", "application/x-protobuf") for p in posts)
    with urllib.request.urlopen(stack["admin"] + "/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("tailor_trace_spans_total")}
    assert values['tailor_trace_spans_total{result="exported"}'] >= 9, values
    assert values['tailor_trace_spans_total{result="dropped"}'] == 0
    assert values['tailor_trace_spans_total{result="failed"}'] == 0
