//! The simulated OpenAI server (`tailor mock-upstream`), used by the demo, the tests and the
//! benchmarks. It speaks OpenAI's wire format: the same JSON shapes (chat, completions,
//! embeddings, responses, models), SSE framing with the usage chunk when `include_usage` is set,
//! usage with cached and reasoning details, OpenAI's error bodies and headers, and Azure's
//! `/openai/deployments/{name}/...?api-version=` paths with an `api-key` header.
//!
//! Behaviour is picked by the request, so a test can ask for a fault:
//!
//! | request header           | effect |
//! |--------------------------|--------|
//! | `x-mock-status: N`       | answer with status N and OpenAI's error body for it |
//! | `x-mock-delay-ms: N`     | wait N ms before the response headers |
//! | `x-mock-words: N`        | the reply has N words (= completion tokens); default 12 |
//! | `x-mock-chunk-delay-ms`  | pause between streamed chunks (none before the first) |
//! | `x-mock-fail-after: N`   | streams: reset the connection after N content chunks |
//! | `x-mock-truncate-after: N` | streams: end cleanly after N content chunks, without `[DONE]` |
//! | `x-mock-stall-after: N`  | streams: stop sending after N content chunks, keep the connection open |
//! | `x-mock-fail-first: N` + `x-mock-fail-key: K` | the first N requests with key K answer `x-mock-status` (default 500) |
//! | `x-mock-status: 307`     | a redirect to another host (tailor must not follow it) |
//!
//! and by the upstream model id: an id containing `broken` answers 500, one containing `deleted`
//! answers 404 `model_not_found` (a deleted fine-tune), one containing `slow` answers after
//! [`SLOW_MODEL_DELAY`]. A missing key answers 401, and the key
//! `sk-invalid` answers 401 `invalid_api_key`.
//!
//! Token counts are deterministic: prompt tokens = ceil(bytes of the prompt field / 4); with 1024
//! or more, three quarters (rounded down to 128) are reported cached; completion tokens = words;
//! model ids starting with `o` also report reasoning tokens (2 per word, inside completion).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// One request as the simulator received it (for tests to inspect).
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A running simulator.
pub struct MockServer {
    pub addr: SocketAddr,
    state: Arc<MockState>,
    stop: watch::Sender<bool>,
}

struct MockState {
    /// The last requests received (bounded).
    received: Mutex<Vec<Received>>,
    /// Requests seen per `x-mock-fail-key`.
    fail_keys: Mutex<std::collections::HashMap<String, u64>>,
    /// Streams whose reader went away before the end.
    cancelled: AtomicU64,
    counter: AtomicU64,
    keep: usize,
}

impl MockServer {
    /// The requests received so far (at most the last 10,000).
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Streams whose client (tailor) hung up before the stream ended.
    pub fn cancelled_streams(&self) -> u64 {
        self.state.cancelled.load(Ordering::Relaxed)
    }

    pub fn clear(&self) {
        if let Ok(mut v) = self.state.received.lock() {
            v.clear();
        }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Starts the simulator on `addr` (port 0 picks a free port). `record`: keep received requests.
pub async fn start(addr: SocketAddr, record: bool) -> std::io::Result<MockServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(MockState {
        received: Mutex::new(Vec::new()),
        fail_keys: Mutex::new(Default::default()),
        cancelled: AtomicU64::new(0),
        counter: AtomicU64::new(0),
        keep: if record { 10_000 } else { 0 },
    });
    let (stop, stopped) = watch::channel(false);
    let s = state.clone();
    tokio::spawn(crate::server::serve(
        listener,
        stopped,
        move || {
            let s = s.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| handle(s.clone(), req))
        },
        crate::server::ServeLimits {
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    ));
    Ok(MockServer { addr, state, stop })
}

/// The demo's traffic: `per_second` requests to tailor at `api`, a mix a support team might
/// send: questions on the `support` A/B route (sticky users, varied answer lengths), summaries on
/// the route with a shadow, and a few to the default route. Runs until the process ends.
pub async fn demo_traffic(api: SocketAddr, per_second: f64) {
    const QUESTIONS: [&str; 6] = [
        "Where is my order 4821? It was supposed to arrive on Monday.",
        "My blender stopped working after 8 months, what can I do?",
        "Can I return a jacket I bought three weeks ago? It does not fit.",
        "How long does standard delivery take to Lyon?",
        "I was charged twice for order 7710, please help.",
        "Do you ship to Canada, and how much does it cost?",
    ];
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.1)));
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift: a fixed, reproducible mix
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    loop {
        tick.tick().await;
        let r = next();
        let q = QUESTIONS[(r % QUESTIONS.len() as u64) as usize];
        let words = 40 + (r >> 8) % 120;
        let (model, team, content) = match (r >> 20) % 10 {
            0..=6 => ("gpt-4o", Some("support"), q.to_owned()),
            7 | 8 => (
                "gpt-4o-summary",
                None,
                format!(
                    "Summarize this support conversation in two sentences: {q} / {}",
                    QUESTIONS[((r >> 24) % 6) as usize]
                ),
            ),
            _ => ("gpt-4o", None, format!("Translate to French: {q}")),
        };
        let body = json!({"model": model, "user": format!("cust-{}", (r >> 32) % 500),
            "messages": [{"role": "user", "content": content}]});
        let mut req = Request::post(format!("http://{api}/v1/chat/completions"))
            .header(CONTENT_TYPE, "application/json")
            .header("x-mock-words", words.to_string());
        if let Some(t) = team {
            req = req.header("x-team", t);
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else {
            continue;
        };
        let c = client.clone();
        tokio::spawn(async move {
            if let Ok(resp) = c.request(req).await {
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

/// How long a model whose id contains `slow` takes before it answers.
pub const SLOW_MODEL_DELAY: Duration = Duration::from_millis(1500);

type MockBody = Either<Full<Bytes>, ChannelBody>;

/// A body fed by a task: how the simulator paces and breaks streams.
pub struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

fn header_num(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn respond(status: StatusCode, body: Bytes, ctype: &'static str, rid: &str) -> Response<MockBody> {
    let mut r = Response::new(Either::Left(Full::new(body)));
    *r.status_mut() = status;
    common_headers(r.headers_mut(), ctype, rid);
    r
}

/// The headers OpenAI sends with every answer (values are plausible constants).
const OPENAI_HEADERS: [(&str, &str); 8] = [
    ("openai-processing-ms", "7"),
    ("openai-version", "2020-10-01"),
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-tokens", "29999000"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-reset-tokens", "2ms"),
];

fn common_headers(h: &mut HeaderMap, ctype: &'static str, rid: &str) {
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-request-id", v);
    }
    for (k, v) in OPENAI_HEADERS {
        h.insert(k, HeaderValue::from_static(v));
    }
}

/// OpenAI's error answer for a status.
fn error(status: u16, model: &str, rid: &str) -> Response<MockBody> {
    let (message, kind, code): (String, &str, Value) = match status {
        400 => ("Invalid request.".into(), "invalid_request_error", Value::Null),
        401 => ("Incorrect API key provided: sk-inv*****. You can find your API key at https://platform.openai.com/account/api-keys.".into(), "invalid_request_error", json!("invalid_api_key")),
        403 => ("You are not allowed to sample from this model".into(), "invalid_request_error", Value::Null),
        404 => (format!("The model `{model}` does not exist or you do not have access to it."), "invalid_request_error", json!("model_not_found")),
        429 => (format!("Rate limit reached for {model} on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in 6ms."), "requests", json!("rate_limit_exceeded")),
        503 => ("The engine is currently overloaded, please try again later".into(), "server_error", Value::Null),
        _ => ("The server had an error while processing your request. Sorry about that!".into(), "server_error", Value::Null),
    };
    let body = json!({ "error": { "message": message, "type": kind, "param": Value::Null, "code": code } });
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = respond(st, Bytes::from(body.to_string()), "application/json", rid);
    if status == 429 {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        r.headers_mut().insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
    }
    r
}

async fn handle(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let rid = format!("req_{n:024x}");
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if state.keep > 0 {
        if let Ok(mut v) = state.received.lock() {
            if v.len() >= state.keep {
                v.remove(0);
            }
            v.push(Received {
                method: parts.method.clone(),
                path_and_query: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: parts.headers.clone(),
                body: body.clone(),
            });
        }
    }
    let path = parts.uri.path();
    // Azure: /openai/deployments/{name}/{endpoint}?api-version=...
    let (azure_deployment, endpoint) = match path.strip_prefix("/openai/deployments/") {
        Some(rest) => match rest.split_once('/') {
            Some((dep, ep)) => (Some(dep.to_owned()), format!("/{ep}")),
            None => (None, String::new()),
        },
        None => (None, path.strip_prefix("/v1").unwrap_or(path).to_owned()),
    };
    let h = &parts.headers;
    if azure_deployment.is_some()
        && !parts
            .uri
            .query()
            .is_some_and(|q| q.contains("api-version="))
    {
        return Ok(respond(
            StatusCode::NOT_FOUND,
            Bytes::from_static(br#"{"error":{"code":"404","message":"Resource not found"}}"#),
            "application/json",
            &rid,
        ));
    }
    let key = if azure_deployment.is_some() {
        h.get("api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    } else {
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    };
    match key.as_deref() {
        None | Some("") => {
            let body = json!({"error": {"message": "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", "type": "invalid_request_error", "param": Value::Null, "code": Value::Null}});
            return Ok(respond(
                StatusCode::UNAUTHORIZED,
                Bytes::from(body.to_string()),
                "application/json",
                &rid,
            ));
        }
        Some("sk-invalid") => return Ok(error(401, "", &rid)),
        Some(_) => {}
    }
    if let Some(ms) = header_num(h, "x-mock-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if parts.method == Method::GET && endpoint == "/models" {
        let data: Vec<Value> = ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "text-embedding-3-small"]
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 1_715_367_049, "owned_by": "system"}))
            .collect();
        return Ok(respond(
            StatusCode::OK,
            Bytes::from(json!({"object": "list", "data": data}).to_string()),
            "application/json",
            &rid,
        ));
    }
    if parts.method != Method::POST {
        return Ok(error(404, "", &rid));
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        let b = json!({"error": {"message": "We could not parse the JSON body of your request.", "type": "invalid_request_error", "param": Value::Null, "code": Value::Null}});
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            Bytes::from(b.to_string()),
            "application/json",
            &rid,
        ));
    };
    let model = azure_deployment
        .clone()
        .or_else(|| req["model"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let status = header_num(h, "x-mock-status").and_then(|s| u16::try_from(s).ok());
    if let (Some(n), Some(key)) = (
        header_num(h, "x-mock-fail-first"),
        h.get("x-mock-fail-key").and_then(|v| v.to_str().ok()),
    ) {
        let seen = state.fail_keys.lock().map(|mut m| {
            let c = m.entry(key.to_owned()).or_insert(0);
            *c += 1;
            *c
        });
        if seen.is_ok_and(|c| c <= n) {
            return Ok(error(status.unwrap_or(500), &model, &rid));
        }
    } else if let Some(st) = status.filter(|s| *s >= 400) {
        return Ok(error(st, &model, &rid));
    } else if let Some(st) = status.filter(|s| (300..400).contains(s)) {
        let mut r = respond(
            StatusCode::from_u16(st).unwrap_or(StatusCode::TEMPORARY_REDIRECT),
            Bytes::new(),
            "application/json",
            &rid,
        );
        r.headers_mut().insert(
            http::header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:9/v1/chat/completions"),
        );
        return Ok(r);
    }
    if model.contains("broken") {
        return Ok(error(500, &model, &rid));
    }
    if model.contains("deleted") {
        return Ok(error(404, &model, &rid));
    }
    if model.contains("slow") {
        tokio::time::sleep(SLOW_MODEL_DELAY).await;
    }
    let sim = Sim::new(&req, &endpoint, &model, h);
    Ok(match endpoint.as_str() {
        "/chat/completions" | "/completions" | "/responses" => {
            if req["stream"].as_bool() == Some(true) {
                sim.stream(&endpoint, &req, h, &rid, state.clone())
            } else {
                respond(
                    StatusCode::OK,
                    sim.complete(&endpoint, &req),
                    "application/json",
                    &rid,
                )
            }
        }
        "/embeddings" => respond(
            StatusCode::OK,
            sim.embeddings(&req),
            "application/json",
            &rid,
        ),
        _ => {
            let b = json!({"error": {"message": format!("Invalid URL (POST {path})"), "type": "invalid_request_error", "param": Value::Null, "code": Value::Null}});
            respond(
                StatusCode::NOT_FOUND,
                Bytes::from(b.to_string()),
                "application/json",
                &rid,
            )
        }
    })
}

/// One simulated answer.
struct Sim {
    model: String,
    words: Vec<String>,
    finish: &'static str,
    prompt_tokens: u64,
    cached: u64,
    reasoning: u64,
    tool: Option<String>,
    created: u64,
    id: String,
}

impl Sim {
    fn new(req: &Value, endpoint: &str, model: &str, h: &HeaderMap) -> Sim {
        let prompt_field = match endpoint {
            "/chat/completions" => &req["messages"],
            "/completions" => &req["prompt"],
            _ => &req["input"],
        };
        let mut prompt_bytes = prompt_field.to_string().len() as u64;
        if let Some(i) = req["instructions"].as_str() {
            prompt_bytes += i.len() as u64;
        }
        let prompt_tokens = prompt_bytes.div_ceil(4).max(1);
        let cached = if prompt_tokens >= 1024 {
            prompt_tokens * 3 / 4 / 128 * 128
        } else {
            0
        };
        let want = header_num(h, "x-mock-words").unwrap_or(12) as usize;
        let max = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| req[*k].as_u64())
            .map(|m| m as usize);
        let n = max.map_or(want, |m| want.min(m));
        let finish = if n < want { "length" } else { "stop" };
        let mut words: Vec<String> = format!("This is a simulated reply from {model}.")
            .split(' ')
            .map(str::to_owned)
            .collect();
        while words.len() < n {
            words.push(format!("word{}", words.len()));
        }
        words.truncate(n);
        let tools = req["tools"].as_array().filter(|t| !t.is_empty());
        let tool = if req["tool_choice"] == "none" {
            None
        } else {
            tools
                .and_then(|t| t[0]["function"]["name"].as_str().or(t[0]["name"].as_str()))
                .map(str::to_owned)
        };
        let reasoning = if model.starts_with('o') {
            2 * words.len() as u64
        } else {
            0
        };
        let id: String = format!(
            "{:x}",
            crate::classify::stable_hash(&[
                model.as_bytes(),
                &prompt_bytes.to_le_bytes(),
                &now().to_le_bytes()
            ])
        );
        Sim {
            model: model.to_owned(),
            words,
            finish,
            prompt_tokens,
            cached,
            reasoning,
            tool,
            created: now(),
            id,
        }
    }

    fn completion_tokens(&self) -> u64 {
        self.words.len() as u64 + self.reasoning
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn tool_args(&self) -> String {
        json!({"query": self.text()}).to_string()
    }

    fn chat_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens(),
            "total_tokens": self.prompt_tokens + self.completion_tokens(),
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }

    fn responses_usage(&self) -> Value {
        json!({
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": self.cached, "cache_write_tokens": 0},
            "output_tokens": self.completion_tokens(),
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.prompt_tokens + self.completion_tokens()
        })
    }

    fn response_object(&self, status: &str, with_output: bool) -> Value {
        let output = if with_output {
            json!([{"type": "message", "id": format!("msg_{}", self.id), "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": self.text(), "annotations": [], "logprobs": []}]}])
        } else {
            json!([])
        };
        let mut v = json!({
            "id": format!("resp_{}", self.id), "object": "response", "created_at": self.created, "status": status,
            "error": Value::Null, "incomplete_details": Value::Null, "instructions": Value::Null, "model": self.model,
            "output": output, "parallel_tool_calls": true, "temperature": 1.0, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "metadata": {}
        });
        // the schema has no null usage: an unfinished response carries none
        if status == "completed" {
            v["usage"] = self.responses_usage();
        }
        v
    }

    /// A non-streaming answer, pretty-printed as OpenAI does.
    fn complete(&self, endpoint: &str, _req: &Value) -> Bytes {
        let v = match endpoint {
            "/chat/completions" => {
                let (message, finish) = match &self.tool {
                    Some(name) => (
                        json!({"role": "assistant", "content": Value::Null, "refusal": Value::Null, "annotations": [],
                               "tool_calls": [{"id": format!("call_{}", self.id), "type": "function", "function": {"name": name, "arguments": self.tool_args()}}]}),
                        "tool_calls",
                    ),
                    None => (
                        json!({"role": "assistant", "content": self.text(), "refusal": Value::Null, "annotations": []}),
                        self.finish,
                    ),
                };
                json!({
                    "id": format!("chatcmpl-{}", self.id), "object": "chat.completion", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "message": message, "logprobs": Value::Null, "finish_reason": finish}],
                    "usage": self.chat_usage(), "service_tier": "default", "system_fingerprint": "fp_tailor_mock"
                })
            }
            "/completions" => json!({
                "id": format!("cmpl-{}", self.id), "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"text": self.text(), "index": 0, "logprobs": Value::Null, "finish_reason": self.finish}],
                "usage": self.chat_usage(), "system_fingerprint": "fp_tailor_mock"
            }),
            _ => self.response_object("completed", true),
        };
        Bytes::from(serde_json::to_vec_pretty(&v).unwrap_or_default())
    }

    fn embeddings(&self, req: &Value) -> Bytes {
        let inputs: Vec<String> = match &req["input"] {
            Value::Array(a) => a.iter().map(|x| x.to_string()).collect(),
            other => vec![other.to_string()],
        };
        let dims = req["dimensions"].as_u64().unwrap_or(16).clamp(1, 4096) as usize;
        let b64 = req["encoding_format"] == "base64";
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let mut x = crate::classify::stable_hash(&[text.as_bytes()]);
                let v: Vec<f32> = (0..dims)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                    })
                    .collect();
                let embedding = if b64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let v = json!({"object": "list", "data": data, "model": self.model, "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}});
        Bytes::from(serde_json::to_vec_pretty(&v).unwrap_or_default())
    }

    /// The SSE events of a streamed answer, as OpenAI frames them.
    fn events(&self, endpoint: &str, include_usage: bool) -> (Vec<String>, Vec<String>) {
        let data = |v: Value| format!("data: {v}\n\n");
        let usage_field = |v: &mut Value| {
            if include_usage {
                v["usage"] = Value::Null;
            }
        };
        let mut head = Vec::new();
        let mut body = Vec::new();
        match endpoint {
            "/chat/completions" => {
                let chunk = |delta: Value, finish: Value| {
                    let mut c = json!({"id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "service_tier": "default", "system_fingerprint": "fp_tailor_mock",
                        "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}]});
                    usage_field(&mut c);
                    data(c)
                };
                match &self.tool {
                    Some(name) => {
                        head.push(chunk(json!({"role": "assistant", "content": Value::Null, "tool_calls": [{"index": 0, "id": format!("call_{}", self.id), "type": "function", "function": {"name": name, "arguments": ""}}], "refusal": Value::Null}), Value::Null));
                        let args = self.tool_args();
                        let mut rest = args.as_str();
                        while !rest.is_empty() {
                            let mut cut = rest.len().min(8);
                            while !rest.is_char_boundary(cut) {
                                cut += 1;
                            }
                            body.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": &rest[..cut]}}]}), Value::Null));
                            rest = &rest[cut..];
                        }
                        body.push(chunk(json!({}), json!("tool_calls")));
                    }
                    None => {
                        head.push(chunk(
                            json!({"role": "assistant", "content": "", "refusal": Value::Null}),
                            Value::Null,
                        ));
                        for (i, w) in self.words.iter().enumerate() {
                            let piece = if i == 0 { w.clone() } else { format!(" {w}") };
                            body.push(chunk(json!({"content": piece}), Value::Null));
                        }
                        body.push(chunk(json!({}), json!(self.finish)));
                    }
                }
                if include_usage {
                    body.push(data(json!({"id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "service_tier": "default", "system_fingerprint": "fp_tailor_mock", "choices": [], "usage": self.chat_usage()})));
                }
                body.push("data: [DONE]\n\n".to_owned());
            }
            "/completions" => {
                for (i, w) in self.words.iter().enumerate() {
                    let piece = if i == 0 { w.clone() } else { format!(" {w}") };
                    let last = i + 1 == self.words.len();
                    let mut c = json!({"id": format!("cmpl-{}", self.id), "object": "text_completion", "created": self.created, "model": self.model,
                        "choices": [{"text": piece, "index": 0, "logprobs": Value::Null, "finish_reason": if last { json!(self.finish) } else { Value::Null }}]});
                    usage_field(&mut c);
                    body.push(data(c));
                }
                if include_usage {
                    body.push(data(json!({"id": format!("cmpl-{}", self.id), "object": "text_completion", "created": self.created, "model": self.model, "choices": [], "usage": self.chat_usage()})));
                }
                body.push("data: [DONE]\n\n".to_owned());
            }
            _ => {
                let mut seq = 0u64;
                let mut ev = |kind: &str, mut v: Value| {
                    v["type"] = json!(kind);
                    v["sequence_number"] = json!(seq);
                    seq += 1;
                    format!("event: {kind}\ndata: {v}\n\n")
                };
                let item_id = format!("msg_{}", self.id);
                head.push(ev(
                    "response.created",
                    json!({"response": self.response_object("in_progress", false)}),
                ));
                head.push(ev(
                    "response.in_progress",
                    json!({"response": self.response_object("in_progress", false)}),
                ));
                head.push(ev("response.output_item.added", json!({"output_index": 0, "item": {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}})));
                head.push(ev("response.content_part.added", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})));
                for (i, w) in self.words.iter().enumerate() {
                    let piece = if i == 0 { w.clone() } else { format!(" {w}") };
                    body.push(ev("response.output_text.delta", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []})));
                }
                body.push(ev("response.output_text.done", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": self.text(), "logprobs": []})));
                body.push(ev("response.content_part.done", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": self.text(), "annotations": [], "logprobs": []}})));
                body.push(ev("response.output_item.done", json!({"output_index": 0, "item": {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": self.text(), "annotations": [], "logprobs": []}]}})));
                body.push(ev(
                    "response.completed",
                    json!({"response": self.response_object("completed", true)}),
                ));
            }
        }
        (head, body)
    }

    fn stream(
        &self,
        endpoint: &str,
        req: &Value,
        h: &HeaderMap,
        rid: &str,
        state: Arc<MockState>,
    ) -> Response<MockBody> {
        let include_usage = req["stream_options"]["include_usage"] == true;
        let (head, body) = self.events(endpoint, include_usage);
        let delay = header_num(h, "x-mock-chunk-delay-ms").map(Duration::from_millis);
        let fail_after = header_num(h, "x-mock-fail-after");
        let truncate_after = header_num(h, "x-mock-truncate-after");
        let stall_after = header_num(h, "x-mock-stall-after");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for e in head {
                if tx.send(Ok(Bytes::from(e))).await.is_err() {
                    return;
                }
            }
            for (i, e) in body.into_iter().enumerate() {
                // pacing is between chunks: the first token comes at once, as time to first token
                // is what a proxy adds to
                if let (Some(d), true) = (delay, i > 0) {
                    tokio::time::sleep(d).await;
                }
                if fail_after == Some(i as u64) {
                    // let what was sent reach the wire first, as a real mid-stream reset would
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let _ = tx
                        .send(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "mock: reset mid-stream",
                        )))
                        .await;
                    return;
                }
                if truncate_after == Some(i as u64) {
                    return;
                }
                if stall_after == Some(i as u64) {
                    // silent, connection open, until the reader goes away
                    tx.closed().await;
                    state.cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if tx.send(Ok(Bytes::from(e))).await.is_err() {
                    state.cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        });
        let mut r = Response::new(Either::Right(ChannelBody(rx)));
        common_headers(r.headers_mut(), "text/event-stream; charset=utf-8", rid);
        r
    }
}
