//! The request path, as one `tower::Service`.
//!
//! ```text
//! request ─▶ path/method ─▶ read body (≤ max_body_bytes) ─▶ RequestView::parse ─▶ classify
//!         ─▶ RequestMeter::start ─▶ for model in [chosen, fallbacks..]: rewrite body, send
//!              └─ connect error / 429 / 5xx / deleted model ─▶ next model (before any byte)
//!         ─▶ response headers (+ x-tailor-route, x-tailor-model) ─▶ MeteredBody (SSE or JSON)
//! ```
//!
//! The live state (config plus resolved metric handles) is loaded once per request from an
//! `ArcSwap` and kept for the whole request, so a reload never mixes two configs in one request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::classify::{self, Decision};
use crate::config::{Auth, Config};
use crate::error::ProxyError;
use crate::forward::{self, HttpClient};
use crate::metrics::{Metrics, RouteModelMeter};
use crate::request::{Endpoint, RequestView};
use crate::usage::meter::{MeteredBody, Outcome, RequestMeter};

/// The body of every response tailor sends.
pub type RespBody = Either<Full<Bytes>, MeteredBody<Incoming>>;

/// Largest upstream error body tailor buffers (to decide on fallback and pass it on).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// A config together with the metric handles of every (route, model) pair it can produce.
pub struct LiveState {
    pub config: Config,
    /// Per route: (model index, handles) for every arm and fallback.
    meters: Vec<Vec<(usize, RouteModelMeter)>>,
    /// Unix time the config was loaded (`created` in `/v1/models`).
    loaded_at: u64,
}

impl LiveState {
    pub fn build(config: Config, metrics: &Arc<Metrics>) -> LiveState {
        let meters = config
            .routes
            .iter()
            .map(|r| {
                let mut v: Vec<(usize, RouteModelMeter)> = Vec::new();
                for m in r
                    .arms
                    .iter()
                    .map(|a| a.model)
                    .chain(r.fallback.iter().copied())
                {
                    if !v.iter().any(|(i, _)| *i == m) {
                        v.push((m, metrics.meter(&r.name, &config.models[m].name)));
                    }
                }
                v
            })
            .collect();
        let loaded_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        LiveState {
            config,
            meters,
            loaded_at,
        }
    }

    fn meter(&self, route: usize, model: usize) -> Option<RouteModelMeter> {
        self.meters
            .get(route)?
            .iter()
            .find(|(m, _)| *m == model)
            .map(|(_, h)| h.clone())
    }
}

/// State shared by every request.
pub struct Shared {
    pub live: ArcSwap<LiveState>,
    pub metrics: Arc<Metrics>,
    client: HttpClient,
    /// Seed and counter for request ids and A/B draws.
    seed: u64,
    counter: AtomicU64,
    /// False once shutdown begins (`/readyz` answers 503).
    pub ready: AtomicBool,
}

impl Shared {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Shared>, rustls::Error> {
        let live = LiveState::build(config, &metrics);
        // RandomState is seeded from the OS: a cheap random seed without another dependency
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        };
        Ok(Arc::new(Shared {
            live: ArcSwap::from_pointee(live),
            metrics,
            client: forward::client()?,
            seed,
            counter: AtomicU64::new(0),
            ready: AtomicBool::new(true),
        }))
    }

    /// A fresh pseudo-random number (splitmix64 over a seeded counter).
    fn next_random(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        classify::stable_hash(&[&self
            .seed
            .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .to_le_bytes()])
    }
}

/// The proxy as a tower service.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Proxy {
        Proxy { shared }
    }
}

/// Request bodies the proxy accepts: hyper's `Incoming` in production, any body in tests.
pub trait ReqBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}
impl<B> ReqBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

impl<B: ReqBody> tower::Service<Request<B>> for Proxy {
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(handle(shared, req).await) })
    }
}

/// Turns a tailor error into its response, counted and logged once, here.
fn reject(shared: &Shared, method: &Method, path: &str, err: ProxyError) -> Response<RespBody> {
    if matches!(err, ProxyError::Unrouted(_)) {
        shared.metrics.unrouted.inc();
    } else {
        shared
            .metrics
            .rejected
            .with_label_values(&[err.kind()])
            .inc();
    }
    let path: String = path.chars().take(200).collect();
    tracing::info!(
        target: "tailor::access",
        %method,
        path,
        status = err.status().as_u16(),
        error = err.kind(),
        message = %err,
        "rejected"
    );
    err.into_response::<Full<Bytes>>().map(Either::Left)
}

async fn handle<B: ReqBody>(shared: Arc<Shared>, req: Request<B>) -> Response<RespBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let suffix = path.strip_prefix("/v1").filter(|s| s.starts_with('/'));
    let err = match (suffix, &method) {
        (Some("/models"), &Method::GET) => return json_response(models_list(&shared.live.load())),
        (Some(s), &Method::GET) if s.starts_with("/models/") => {
            let id = &s["/models/".len()..];
            match model_get(&shared.live.load(), id) {
                Some(body) => return json_response(body),
                None => ProxyError::UnknownModel(id.chars().take(256).collect()),
            }
        }
        (Some(s), m) if Endpoint::from_suffix(s).is_some() || s == "/models" => {
            match Endpoint::from_suffix(s) {
                Some(ep) if m == Method::POST => return proxy(&shared, ep, req).await,
                _ => ProxyError::MethodNotAllowed {
                    method: m.to_string(),
                    path: path.clone(),
                },
            }
        }
        _ => ProxyError::NotFound {
            method: method.to_string(),
            path: path.chars().take(200).collect(),
        },
    };
    reject(&shared, &method, &path, err)
}

fn json_response(body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(Either::Left(Full::new(body)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn model_object(id: &str, created: u64) -> serde_json::Value {
    serde_json::json!({ "id": id, "object": "model", "created": created, "owned_by": "tailor" })
}

fn models_list(live: &LiveState) -> Bytes {
    let data: Vec<_> = live
        .config
        .listed_models
        .iter()
        .map(|m| model_object(m, live.loaded_at))
        .collect();
    Bytes::from(serde_json::json!({ "object": "list", "data": data }).to_string())
}

fn model_get(live: &LiveState, id: &str) -> Option<Bytes> {
    live.config
        .listed_models
        .iter()
        .find(|m| *m == id)
        .map(|m| Bytes::from(model_object(m, live.loaded_at).to_string()))
}

/// Reads the request body up to the configured limit.
async fn read_body<B: ReqBody>(
    req: B,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(req, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ProxyError::BodyTooLarge { limit }),
        Err(e) => Err(ProxyError::InvalidJson(format!(
            "could not read the request body: {e}"
        ))),
    }
}

async fn proxy<B: ReqBody>(
    shared: &Shared,
    endpoint: Endpoint,
    req: Request<B>,
) -> Response<RespBody> {
    let started = Instant::now();
    let live = shared.live.load_full();
    let (parts, body) = req.into_parts();
    let body = match read_body(body, &parts.headers, live.config.server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return reject(shared, &parts.method, parts.uri.path(), e),
    };
    let view = match RequestView::parse(&body, endpoint) {
        Ok(v) => v,
        Err(e) => return reject(shared, &parts.method, parts.uri.path(), e),
    };
    let draw = shared.next_random();
    let Some(decision) = classify::classify(&live.config, &view, &parts.headers, draw) else {
        let err = ProxyError::Unrouted(view.model.chars().take(256).collect());
        return reject(shared, &parts.method, parts.uri.path(), err);
    };
    let request_id = format!("tlr-{:016x}", shared.next_random());
    let route_name = &live.config.routes[decision.route].name;
    tracing::debug!(request_id, route = %route_name, model = %live.config.models[decision.model].name, pick = %decision.pick, "routed");
    forward_with_fallback(
        shared, &live, &decision, &view, endpoint, &parts, started, request_id,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn forward_with_fallback(
    shared: &Shared,
    live: &LiveState,
    decision: &Decision<'_>,
    view: &RequestView<'_>,
    endpoint: Endpoint,
    parts: &http::request::Parts,
    started: Instant,
    request_id: String,
) -> Response<RespBody> {
    let cfg = &live.config;
    let route = &cfg.routes[decision.route];
    let inject_usage = view.needs_usage_injection();
    let candidates: Vec<usize> = std::iter::once(decision.model)
        .chain(
            decision
                .fallbacks
                .iter()
                .copied()
                .filter(|m| *m != decision.model),
        )
        .collect();
    let Some(first_meter) = live.meter(decision.route, decision.model) else {
        return reject(
            shared,
            &parts.method,
            parts.uri.path(),
            ProxyError::Internal("no meter for the routed model".into()),
        );
    };
    let mut meter = RequestMeter::start(
        first_meter,
        cfg.models[decision.model].price,
        started,
        view.stream,
        request_id.clone(),
    );
    let mut last_error: Option<Response<RespBody>> = None;

    for (attempt, &mi) in candidates.iter().enumerate() {
        let model = &cfg.models[mi];
        if attempt > 0 {
            let from = &cfg.models[candidates[attempt - 1]].name;
            shared
                .metrics
                .fallbacks
                .with_label_values(&[&route.name, from, &model.name])
                .inc();
            match live.meter(decision.route, mi) {
                Some(m) => meter.switch_model(m, model.price),
                None => break,
            }
        }
        let upstream = &cfg.upstreams[model.upstream];
        if let Auth::Key { key: None, env } = &upstream.auth {
            // a config without this key still serves its other upstreams; this model is skipped
            let err = ProxyError::UpstreamKeyMissing {
                upstream: upstream.name.clone(),
                env: env.clone(),
            };
            tracing::warn!(request_id, error = %err, "cannot authenticate upstream");
            meter.meter().upstream_error("no_key");
            meter.responded(err.status(), None);
            last_error = Some(tag(
                err.into_response::<Full<Bytes>>().map(Either::Left),
                &route.name,
                &model.name,
                &request_id,
            ));
            continue;
        }
        let body = view.rewrite(&model.id, inject_usage);
        let up_req = match forward::upstream_request(
            upstream,
            model,
            endpoint,
            parts.uri.query(),
            &parts.headers,
            body,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(request_id, error = %e, "cannot build upstream request");
                meter.responded(e.status(), None);
                meter.finish(None, Outcome::UpstreamError);
                return tag(
                    e.into_response::<Full<Bytes>>().map(Either::Left),
                    &route.name,
                    &model.name,
                    &request_id,
                );
            }
        };
        let resp = match shared.client.request(up_req).await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                meter.meter().upstream_error(kind);
                tracing::warn!(request_id, upstream = %upstream.name, model = %model.name, error = %e, "upstream request failed");
                let err = ProxyError::UpstreamUnavailable {
                    upstream: upstream.name.clone(),
                    reason: kind.to_owned(),
                };
                let mut r = err.into_response::<Full<Bytes>>().map(Either::Left);
                r.headers_mut()
                    .insert("x-should-retry", HeaderValue::from_static("false"));
                last_error = Some(tag(r, &route.name, &model.name, &request_id));
                meter.responded(StatusCode::BAD_GATEWAY, None);
                continue;
            }
        };
        let status = resp.status();
        let upstream_id = resp.headers().get("x-request-id").cloned();
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if status.is_success() {
            meter.responded(status, upstream_id);
            let (rparts, rbody) = resp.into_parts();
            let mut out = Response::new(if is_sse {
                Either::Right(MeteredBody::sse(rbody, meter, inject_usage))
            } else {
                Either::Right(MeteredBody::json(rbody, meter, true))
            });
            *out.status_mut() = status;
            *out.headers_mut() = forward::response_headers(&rparts.headers, !is_sse);
            return tag(out, &route.name, &model.name, &request_id);
        }
        // An error answer: small, so buffer it to decide on fallback, then pass it on verbatim.
        meter.meter().upstream_error(forward::status_kind(status));
        let (rparts, rbody) = resp.into_parts();
        let err_body = match Limited::new(rbody, MAX_ERROR_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::new(),
        };
        meter.responded(status, upstream_id);
        let fall_back =
            attempt + 1 < candidates.len() && forward::should_fall_back(status, &err_body);
        tracing::debug!(
            request_id,
            status = status.as_u16(),
            fall_back,
            "upstream error answer"
        );
        let mut out = Response::new(Either::Left(Full::new(err_body)));
        *out.status_mut() = status;
        *out.headers_mut() = forward::response_headers(&rparts.headers, false);
        let out = tag(out, &route.name, &model.name, &request_id);
        if !fall_back {
            meter.finish(None, Outcome::Ok);
            return out;
        }
        last_error = Some(out);
    }
    meter.finish(None, Outcome::UpstreamError);
    last_error.unwrap_or_else(|| {
        reject(
            shared,
            &parts.method,
            parts.uri.path(),
            ProxyError::Internal("no upstream attempt was made".into()),
        )
    })
}

/// Adds `x-tailor-route`, `x-tailor-model` and tailor's own request id.
fn tag(
    mut resp: Response<RespBody>,
    route: &str,
    model: &str,
    request_id: &str,
) -> Response<RespBody> {
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-tailor-route", route),
        ("x-tailor-model", model),
        ("x-tailor-request-id", request_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    //! Service tests: the proxy called as a `tower::Service`, no listener involved.
    use super::*;
    use tower::ServiceExt;

    const CFG: &str = r#"
upstreams:
  down: { url: "http://127.0.0.1:1/v1", auth: none }
  keyless: { url: "http://127.0.0.1:1/v1", api_key_env: TAILOR_UNSET_KEY }
models:
  m: { upstream: down, id: gpt-4o-2024-08-06 }
  k: { upstream: keyless, id: gpt-4o-2024-08-06 }
routes:
  - { name: r, match: { model: [gpt-4o, alias] }, split: [{ model: m }] }
  - { name: nokey, match: { model: nokey }, split: [{ model: k }] }
"#;

    fn proxy() -> (Proxy, Arc<Metrics>) {
        let cfg = Config::from_yaml(CFG, &|_| None).unwrap();
        let metrics = Metrics::new().unwrap();
        (
            Proxy::new(Shared::new(cfg, metrics.clone()).unwrap()),
            metrics,
        )
    }

    async fn call(
        p: &Proxy,
        method: Method,
        path: &str,
        body: &str,
    ) -> (StatusCode, HeaderValue, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let resp = p.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let retry = resp
            .headers()
            .get("x-should-retry")
            .cloned()
            .unwrap_or(HeaderValue::from_static(""));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_before_routing() {
        let (p, metrics) = proxy();
        let cases = [
            (Method::POST, "/v1/chat/completions", "{", 400, None),
            (
                Method::POST,
                "/v1/chat/completions",
                r#"{"model":"gpt-4o"}"#,
                400,
                Some("missing_required_parameter"),
            ),
            (
                Method::POST,
                "/v1/chat/completions",
                r#"{"model":"x","messages":[]}"#,
                404,
                Some("model_not_found"),
            ),
            (
                Method::POST,
                "/v1/embeddings",
                r#"{"model":"x","input":"a"}"#,
                404,
                Some("model_not_found"),
            ),
            (
                Method::PUT,
                "/v1/chat/completions",
                "",
                405,
                Some("method_not_allowed"),
            ),
            (
                Method::POST,
                "/v1/models",
                "",
                405,
                Some("method_not_allowed"),
            ),
            (
                Method::GET,
                "/v2/chat/completions",
                "",
                404,
                Some("unknown_url"),
            ),
            (
                Method::GET,
                "/v1/models/nope",
                "",
                404,
                Some("model_not_found"),
            ),
        ];
        for (m, path, body, status, code) in cases {
            let (s, retry, v) = call(&p, m.clone(), path, body).await;
            assert_eq!(s.as_u16(), status, "{m} {path} {body}: {v}");
            assert_eq!(v["error"]["code"].as_str(), code, "{v}");
            assert_eq!(retry, "false");
        }
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(text.contains("tailor_unrouted_requests_total 2"), "{text}");
        assert!(
            text.contains("tailor_rejected_requests_total{reason=\"unknown_model\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn models_list() {
        let (p, _) = proxy();
        let (s, _, v) = call(&p, Method::GET, "/v1/models", "").await;
        assert_eq!(s, StatusCode::OK);
        let ids: Vec<_> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o", "alias", "nokey"]);
        assert_eq!(v["data"][0]["object"], "model");
    }

    #[tokio::test]
    async fn unreachable_upstream_and_missing_key() {
        let (p, metrics) = proxy();
        let (s, retry, v) = call(
            &p,
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"alias","messages":[]}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
        assert_eq!(v["error"]["code"], "upstream_unavailable");
        assert_eq!(retry, "false");
        let (s, _, v) = call(
            &p,
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"nokey","messages":[]}"#,
        )
        .await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TAILOR_UNSET_KEY"));
        let text = String::from_utf8(metrics.encode()).unwrap();
        for want in [
            "tailor_requests_total{code=\"502\",model=\"m\",route=\"r\"} 1",
            "tailor_upstream_errors_total{kind=\"connect\",model=\"m\",route=\"r\"} 1",
            "tailor_requests_total{code=\"500\",model=\"k\",route=\"nokey\"} 1",
            "tailor_in_flight_requests{route=\"r\"} 0",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
    }
}
