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
//! | `x-mock-format: F[,F]`  | how the JSON and SSE are written: see [`format`] |
//! | `x-mock-retry-after: V`  | with `x-mock-status: 429`: the `retry-after` value, as given |
//! | `x-mock-big-event: N`    | chat streams: the first word's chunk carries N more bytes of text |
//!
//! and by the upstream model id: an id containing `broken` answers 500, one containing `deleted`
//! answers 404 `model_not_found` (a deleted fine-tune), one containing `slow` answers after
//! [`SLOW_MODEL_DELAY`]. A missing key answers 401, and the key
//! `sk-invalid` answers 401 `invalid_api_key`.
//! A `traceparent` the simulator receives comes back in the response header `x-mock-traceparent`.
//!
//! Token counts are deterministic: prompt tokens = ceil(bytes of the prompt field / 4); with 1024
//! or more, three quarters (rounded down to 128) are reported cached; completion tokens = words;
//! model ids starting with `o` also report reasoning tokens (2 per word, inside completion).
//!
//! - this file: the server, and the dispatch by path, key and fault header.
//! - [`answer`]: token counts and JSON answers. [`stream`]: SSE answers and stream faults.
//! - [`files`]: files (multipart uploads streamed to disk), batches, moderations, images.
//! - [`wire`]: OpenAI's headers and error bodies. [`format`]: other servers' JSON and SSE styles
//!   (`x-mock-format: spaced | crlf | cr | nospace | noevent | usage-first | comments | unicode`).

mod answer;
mod files;
pub mod format;
mod stream;
mod wire;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::answer::Sim;
use self::wire::{error, header_num, respond, MockBody};
use crate::server::{self, ServeLimits};

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
    cancelled: Arc<AtomicU64>,
    counter: AtomicU64,
    keep: usize,
    /// Uploaded files and batches (`files`).
    files: files::Store,
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
        cancelled: Arc::default(),
        counter: AtomicU64::new(0),
        keep: if record { 10_000 } else { 0 },
        files: files::Store::default(),
    });
    let (stop, stopped) = watch::channel(false);
    let s = state.clone();
    tokio::spawn(server::serve(
        listener,
        stopped,
        move || {
            let s = s.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| handle(s.clone(), req))
        },
        ServeLimits {
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    ));
    Ok(MockServer { addr, state, stop })
}

impl MockState {
    /// Keeps a received request for tests to inspect (the last `keep`).
    fn record(&self, parts: &http::request::Parts, body: Bytes) {
        if self.keep == 0 {
            return;
        }
        if let Ok(mut v) = self.received.lock() {
            if v.len() >= self.keep {
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
                body,
            });
        }
    }
}

/// Azure's answer to a path without `api-version`.
fn azure_not_found(rid: &str) -> Response<MockBody> {
    respond(
        StatusCode::NOT_FOUND,
        Bytes::from_static(br#"{"error":{"code":"404","message":"Resource not found"}}"#),
        "application/json",
        rid,
    )
}

/// OpenAI's 401 for a missing key (`Authorization: Bearer`, or Azure's `api-key`), or for the
/// key `sk-invalid`; None for any other key.
fn key_error(h: &HeaderMap, azure: bool, rid: &str) -> Option<Response<MockBody>> {
    let key = if azure {
        h.get("api-key").and_then(|v| v.to_str().ok())
    } else {
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    };
    match key {
        None | Some("") => {
            let body = json!({"error": {"message": "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", "type": "invalid_request_error", "param": Value::Null, "code": Value::Null}});
            Some(respond(
                StatusCode::UNAUTHORIZED,
                Bytes::from(body.to_string()),
                "application/json",
                rid,
            ))
        }
        Some("sk-invalid") => Some(error(401, "", rid)),
        Some(_) => None,
    }
}

/// How long a model whose id contains `slow` takes before it answers.
pub const SLOW_MODEL_DELAY: Duration = Duration::from_millis(1500);

/// Answers one request; a `traceparent` it carried is echoed in `x-mock-traceparent`, so a test
/// that only sees the response can check what reached the upstream.
async fn handle(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let traceparent = req.headers().get("traceparent").cloned();
    let mut resp = answer(state, req).await?;
    if let Some(v) = traceparent {
        resp.headers_mut().insert("x-mock-traceparent", v);
    }
    Ok(resp)
}

async fn answer(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let rid = format!("req_{n:024x}");
    let (parts, body) = req.into_parts();
    if let Some(rest) = files::api_path(parts.uri.path()) {
        // files may be large: their bodies stream, and only the head is recorded
        state.record(&parts, Bytes::new());
        let azure = parts.uri.path().starts_with("/openai/");
        if azure
            && !parts
                .uri
                .query()
                .is_some_and(|q| q.contains("api-version="))
        {
            return Ok(azure_not_found(&rid));
        }
        if let Some(denied) = key_error(&parts.headers, azure, &rid) {
            return Ok(denied);
        }
        return Ok(files::handle(&state.files, &parts, rest, body, &rid).await);
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    state.record(&parts, body.clone());
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
        return Ok(azure_not_found(&rid));
    }
    if let Some(denied) = key_error(h, azure_deployment.is_some(), &rid) {
        return Ok(denied);
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
        let mut r = error(st, &model, &rid);
        // any retry-after an upstream may send, however odd (`1e20`, `soon`)
        if let Some(v) = h.get("x-mock-retry-after").filter(|_| st == 429) {
            r.headers_mut().insert("retry-after", v.clone());
        }
        return Ok(r);
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
                sim.stream(&endpoint, &req, h, &rid, state.cancelled.clone())
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
