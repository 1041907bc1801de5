"""The official OpenAI Python SDK pointed at a running tailor (started by tests/run-all.sh).

TAILOR_BASE_URL is tailor's API (.../v1), TAILOR_ADMIN_URL its admin port; upstream is the
simulated OpenAI, whose faults are asked for with `x-mock-*` headers (see src/mock/mod.rs).
"""

import json
import os
import urllib.request

import openai
import pytest
from openai import OpenAI

BASE = os.environ["TAILOR_BASE_URL"]
ADMIN = os.environ["TAILOR_ADMIN_URL"]
# the simulator's wire format for this run (x-mock-format: spaced, crlf, ...; empty = OpenAI's)
FORMAT = {"x-mock-format": os.environ["TAILOR_MOCK_FORMAT"]} if os.environ.get("TAILOR_MOCK_FORMAT") else {}
# how the simulated reply opens (the `unicode` format puts non-ASCII text there, escaped by `spaced`)
OPENING = "Voilà, 🚀 a" if "unicode" in os.environ.get("TAILOR_MOCK_FORMAT", "") else "This is a"
MSG = [{"role": "user", "content": "Hello from the Python SDK"}]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}]


@pytest.fixture
def client():
    # max_retries=0: a 429 must surface at once, not after the SDK's own backoff
    return OpenAI(base_url=BASE, api_key="sk-client-key", max_retries=0, default_headers=FORMAT)


def metrics():
    with urllib.request.urlopen(f"{ADMIN}/metrics") as r:
        return r.read().decode()


def counter(text, name, **labels):
    """Sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        have = dict(kv.split("=", 1) for kv in rest.rstrip("}").split(",") if kv)
        if all(have.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total


def test_chat_non_streaming(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG)
    assert raw.headers["x-tailor-route"] == "default"
    assert raw.headers["x-tailor-model"] == "gpt-4o"
    assert raw.headers["x-request-id"].startswith("req_")
    c = raw.parse()
    assert c.object == "chat.completion"
    assert c.choices[0].message.role == "assistant"
    assert "simulated reply" in c.choices[0].message.content
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens == 12
    assert c._request_id.startswith("req_")


def test_stream_without_include_usage_reads_choices_on_every_chunk(client):
    before = counter(metrics(), "tailor_tokens_total", route="default", model="gpt-4o", type="output")
    text = ""
    n = 0
    for chunk in client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True):
        # typical client code: would raise IndexError on a usage-only chunk
        text += chunk.choices[0].delta.content or ""
        assert chunk.usage is None
        n += 1
    assert n >= 12
    assert text.startswith(f"{OPENING} simulated reply")
    after = counter(metrics(), "tailor_tokens_total", route="default", model="gpt-4o", type="output")
    assert after - before == 12, "tailor must meter the stream although the client did not ask for usage"


def test_stream_with_include_usage(client):
    chunks = list(client.chat.completions.create(
        model="gpt-4o", messages=MSG, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_tool_calls(client):
    c = client.chat.completions.create(model="gpt-4o", messages=MSG, tools=TOOLS)
    call = c.choices[0].message.tool_calls[0]
    assert c.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup_order"
    assert "query" in json.loads(call.function.arguments)

    name, args = None, ""
    for chunk in client.chat.completions.create(model="gpt-4o", messages=MSG, tools=TOOLS, stream=True):
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            name = tc.function.name or name
            args += tc.function.arguments or ""
    assert name == "lookup_order"
    assert json.loads(args) == json.loads(call.function.arguments)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids and "ab" in ids
    assert client.models.retrieve("sticky").id == "sticky"


def test_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-4o", messages=MSG, extra_headers={"x-mock-status": "429"})
    assert e.value.status_code == 429
    assert e.value.response.headers["retry-after"] == "1"
    assert e.value.code == "rate_limit_exceeded"


def test_authentication_error(client):
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=MSG, extra_headers={"x-mock-status": "401"})
    # a passthrough upstream sees the caller's own (bad) key
    bad = OpenAI(base_url=BASE, api_key="sk-invalid", max_retries=0, default_headers=FORMAT)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="own", messages=MSG)
    assert e.value.code == "invalid_api_key"


def test_unknown_model_and_bad_request(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=MSG)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o", messages="not a list")
    assert e.value.param == "messages"


def test_embeddings_default_base64_and_float(client):
    r = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 16
    assert r.usage.prompt_tokens > 0
    # the same input as a JSON float list: the same vector as the SDK's base64 decoding gave
    f = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"], encoding_format="float")
    assert f.data[1].embedding == pytest.approx(r.data[1].embedding, rel=1e-6)


def test_responses_api(client):
    r = client.responses.create(model="gpt-4o", input="hi there")
    assert r.output_text.startswith(f"{OPENING} simulated reply")
    assert r.usage.output_tokens == 12
    events = [e.type for e in client.responses.create(model="gpt-4o", input="hi", stream=True)]
    assert events[0] == "response.created" and events[-1] == "response.completed"


def test_stream_broken_mid_way_raises(client):
    got = ""
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
                model="gpt-4o", messages=MSG, stream=True, extra_headers={"x-mock-fail-after": "4"}):
            got += chunk.choices[0].delta.content or ""
    assert got.startswith(OPENING)


def test_fallback_is_invisible_to_the_client(client):
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=MSG)
    assert raw.headers["x-tailor-model"] == "mini"
    assert raw.parse().choices[0].message.content


def test_files_batches_and_moderations_pass_through(client, tmp_path):
    """The rest of the API goes through `passthrough:` to the simulator, with tailor's key for it."""
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {i}"}]}}
             for i in range(3)]
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with path.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    assert uploaded.bytes == path.stat().st_size and uploaded.purpose == "batch"
    assert uploaded.id in [x.id for x in client.files.list()]
    assert client.files.retrieve(uploaded.id).filename == "batch.jsonl"
    assert client.files.content(uploaded.id).content == path.read_bytes()
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "validating"
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.total == 3
    out = client.files.content(done.output_file_id).text.splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in out) == ["r0", "r1", "r2"]
    mod = client.moderations.create(model="omni-moderation-latest", input=["hello", "violence-test"])
    assert [r.flagged for r in mod.results] == [False, True]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    text = metrics()
    assert counter(text, "tailor_requests_total", route="passthrough", endpoint="files", code="200") >= 6
    assert counter(text, "tailor_requests_total", route="passthrough", endpoint="batches") >= 2
    assert counter(text, "tailor_requests_total", route="passthrough", endpoint="moderations") >= 1


def test_metrics_count_this_run():
    text = metrics()
    # the 8 answered default-route calls above (chat x3, tools x2, responses x2, broken stream)
    assert counter(text, "tailor_requests_total", route="default", model="gpt-4o", code="200") >= 8
    assert counter(text, "tailor_requests_total", route="default", model="gpt-4o", code="429") >= 1
    assert counter(text, "tailor_cost_usd_total", route="default", model="gpt-4o") > 0
    assert counter(text, "tailor_tokens_total", route="embeddings", model="embed", type="input") > 0
