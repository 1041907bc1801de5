"""Wire conformance: what a client receives through tailor (tailor's own answers and the
simulator's, passed through) validates against OpenAI's published schemas
(tests/fixtures/openai-schemas.json, vendored from OpenAI's OpenAPI description).

Raw HTTP, not the SDK: the SDKs are lenient; the schemas are not.
"""

import json
import os
import pathlib
import urllib.error
import urllib.request

import pytest
from jsonschema import Draft202012Validator

BASE = os.environ["TAILOR_BASE_URL"]
# the simulator's wire format for this run (x-mock-format: spaced, crlf, ...; empty = OpenAI's)
FORMAT = os.environ.get("TAILOR_MOCK_FORMAT", "")


def openapi_to_json_schema(node):
    """OpenAPI's `nullable: true` (left in a few places of the 3.1 description) means "or null"."""
    if isinstance(node, list):
        return [openapi_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: openapi_to_json_schema(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


DOC = openapi_to_json_schema(json.loads((pathlib.Path(__file__).parents[2] / "fixtures" / "openai-schemas.json").read_text()))
# The schema's own description of stream `usage` says every chunk but the last carries
# `"usage": null` when include_usage is set (and OpenAI sends exactly that), but its `$ref` does not
# allow null: follow the description.
_stream = DOC["components"]["schemas"]["CreateChatCompletionStreamResponse"]["properties"]
_stream["usage"] = {"anyOf": [_stream["usage"], {"type": "null"}]}


def validate(name, instance):
    schema = {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])


def call(path, body=None, method=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(BASE + path, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("content-type", "application/json")
    req.add_header("authorization", "Bearer sk-client-key")
    if FORMAT:
        req.add_header("x-mock-format", FORMAT)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def sse(text):
    """(event, data) pairs of an SSE body, as the SSE spec reads it: `\n`, `\r\n` or `\r` line ends,
    one optional space after the colon, `:` comments, a blank line ends an event."""
    out = []
    event, data = None, None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data is not None:
                out.append((event, data))
            event, data = None, None
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data = value if data is None else data + "\n" + value
    if data is not None:
        out.append((event, data))
    return out


MSG = [{"role": "user", "content": "conformance"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize("extra", [{}, {"tools": TOOLS}, {"max_tokens": 3}])
def test_chat_completion(extra):
    status, _, body = call("/chat/completions", {"model": "gpt-4o", "messages": MSG, **extra})
    assert status == 200
    validate("CreateChatCompletionResponse", json.loads(body))


@pytest.mark.parametrize("extra", [{}, {"stream_options": {"include_usage": True}}, {"tools": TOOLS}])
def test_chat_stream_chunks(extra):
    status, headers, body = call("/chat/completions", {"model": "gpt-4o", "messages": MSG, "stream": True, **extra})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse(body)
    assert events[-1] == (None, "[DONE]")
    for _, data in events[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(data))


def test_completions_and_embeddings():
    status, _, body = call("/completions", {"model": "gpt-4o", "prompt": "x"})
    assert status == 200
    validate("CreateCompletionResponse", json.loads(body))
    status, _, body = call("/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float"})
    assert status == 200
    validate("CreateEmbeddingResponse", json.loads(body))


def test_responses_api():
    status, _, body = call("/responses", {"model": "gpt-4o", "input": "x"})
    assert status == 200
    validate("Response", json.loads(body))
    status, _, body = call("/responses", {"model": "gpt-4o", "input": "x", "stream": True})
    for event, data in sse(body):
        payload = json.loads(data)
        # servers that send no `event:` lines (x-mock-format: noevent) name the event in `type` only
        assert event is None or payload["type"] == event
        validate("ResponseStreamEvent", payload)


def test_models_list():
    status, _, body = call("/models")
    assert status == 200
    validate("ListModelsResponse", json.loads(body))


@pytest.mark.parametrize("case", [
    # tailor's own errors
    dict(raw=b"not json", status=400),
    dict(body={"model": "gpt-4o"}, status=400),
    dict(body={"model": "nope", "messages": MSG}, status=404),
    dict(raw=json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 70000}]}).encode(), status=413),
    # (GET /v1/chat/completions lists stored completions: passed through, like every other
    # method and path tailor does not route; /v1/feedback is tailor's own)
    dict(path="/feedback", method="GET", status=404),
    # the upstream's, passed through
    dict(body={"model": "gpt-4o", "messages": MSG}, headers={"x-mock-status": "429"}, status=429),
    dict(body={"model": "gpt-4o", "messages": MSG}, headers={"x-mock-status": "401"}, status=401),
    dict(body={"model": "gpt-4o", "messages": MSG}, headers={"x-mock-status": "500"}, status=500),
])
def test_error_bodies(case):
    status, headers, body = call(case.get("path", "/chat/completions"), case.get("body"), method=case.get("method"),
                                 headers=case.get("headers"), raw=case.get("raw"))
    assert status == case["status"], body
    assert headers["content-type"].startswith("application/json")
    validate("ErrorResponse", json.loads(body))


def test_stream_error_event():
    _, _, body = call("/chat/completions", {"model": "gpt-4o", "messages": MSG, "stream": True},
                      headers={"x-mock-truncate-after": "2"})
    events = sse(body)
    assert (None, "[DONE]") not in events
    validate("ErrorResponse", json.loads(events[-1][1]))
