//! The request path, as one `tower::Service`.
//!
//! ```text
//! request ─▶ path/method ─▶ header limits (431) ─▶ client key (401) ─▶ server slot (429)
//!         ─▶ read body (≤ max_body_bytes, 413) ─▶ RequestView::parse (400) ─▶ classify (404)
//!         ─▶ route slot (429) ─▶ RequestMeter::start
//!         ─▶ for model in [chosen, fallbacks..] (unhealthy ones skipped while others remain):
//!              for try in 0..=retries: rewrite body, send (connect + header timeouts)
//!                 connect error / timeout / 429 / 5xx ─▶ backoff (or retry-after) and try again
//!                 404 model_not_found ─▶ next model at once
//!              ─▶ next model, counted in tailor_fallbacks_total{reason}
//!         ─▶ response headers (+ x-tailor-*) ─▶ MeteredBody (SSE or JSON, idle/total limits)
//! ```
//!
//! Everything before the first response byte may be retried; nothing after it is. The live state
//! (config, metric handles, upstream clients, route limits) is loaded once per request from an
//! `ArcSwap` and kept for the whole request, so a reload never mixes two configs in one request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::classify::{self, Decision};
use crate::config::{Auth, Config};
use crate::error::ProxyError;
use crate::forward::{self, Pools};
use crate::health::{HealthRegistry, ModelHealth};
use crate::metrics::{Metrics, RouteModelMeter};
use crate::request::{Endpoint, RequestView, SystemPrompt};
use crate::usage::meter::{BodyLimits, MeteredBody, Outcome, RequestMeter};

/// The body of every response tailor sends.
pub type RespBody = Either<Full<Bytes>, MeteredBody<Incoming>>;

/// Largest upstream error body tailor buffers (to decide on fallback and pass it on).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// The `client` label when no `clients:` are configured.
pub const ANONYMOUS: &str = "anonymous";

/// A config with everything derived from it: swapped as one value on reload.
pub struct LiveState {
    pub config: Config,
    /// Per route: (model index, handles per client index) for every arm and fallback.
    meters: Vec<Vec<(usize, Vec<RouteModelMeter>)>>,
    /// Per model index.
    health: Vec<Arc<ModelHealth>>,
    /// Per API worker thread and upstream index: a pooled client.
    pub(crate) clients: Pools,
    /// Per route: its concurrency limit.
    route_slots: Vec<Option<Arc<Semaphore>>>,
    /// Unix time the config was loaded (`created` in `/v1/models`).
    loaded_at: u64,
}

impl LiveState {
    pub fn build(
        config: Config,
        metrics: &Arc<Metrics>,
        health: &HealthRegistry,
    ) -> Result<LiveState, rustls::Error> {
        let client_names: Vec<&str> = if config.clients.is_empty() {
            vec![ANONYMOUS]
        } else {
            config.clients.iter().map(|c| c.name.as_str()).collect()
        };
        let meters = config
            .routes
            .iter()
            .map(|r| {
                let mut v: Vec<(usize, Vec<RouteModelMeter>)> = Vec::new();
                for m in r
                    .arms
                    .iter()
                    .map(|a| a.model)
                    .chain(r.fallback.iter().copied())
                {
                    if !v.iter().any(|(i, _)| *i == m) {
                        let per_client = client_names
                            .iter()
                            .map(|c| metrics.meter(&r.name, &config.models[m].name, c))
                            .collect();
                        v.push((m, per_client));
                    }
                }
                v
            })
            .collect();
        let health = config
            .models
            .iter()
            .map(|m| health.get(&m.name, config.health))
            .collect();
        let clients = Pools::build(&config.upstreams, config.server.workers)?;
        let route_slots = config
            .routes
            .iter()
            .map(|r| r.max_concurrency.map(|n| Arc::new(Semaphore::new(n))))
            .collect();
        metrics.publish_config(&config);
        let loaded_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(LiveState {
            config,
            meters,
            health,
            clients,
            route_slots,
            loaded_at,
        })
    }

    /// Starts the dataset writers of every route that captures (repairing torn files at once).
    fn start_captures(&self, captures: &crate::capture::Captures) {
        for c in self.config.routes.iter().filter_map(|r| r.capture.as_ref()) {
            captures.ensure(&c.path);
        }
    }

    /// Whether model `i` is in rotation.
    pub fn model_healthy(&self, i: usize) -> bool {
        self.health.get(i).is_some_and(|h| h.is_healthy())
    }

    fn meter(&self, route: usize, model: usize, client: usize) -> Option<RouteModelMeter> {
        let (_, per_client) = self.meters.get(route)?.iter().find(|(m, _)| *m == model)?;
        per_client.get(client).cloned()
    }

    /// Which client a request's key belongs to: `Some(index)`, or `None` for a missing or wrong
    /// key. Every configured hash is compared, each in constant time, so the time taken says
    /// nothing about which key, or how much of one, matched.
    fn authenticate(&self, headers: &HeaderMap) -> Option<usize> {
        use sha2::{Digest, Sha256};
        if self.config.clients.is_empty() {
            return Some(0);
        }
        let key = headers
            .get(AUTHORIZATION)?
            .as_bytes()
            .strip_prefix(b"Bearer ")?;
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = None;
        for (i, c) in self.config.clients.iter().enumerate() {
            let diff = c
                .key_sha256
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(i);
            }
        }
        found
    }
}

/// State shared by every request.
pub struct Shared {
    pub live: ArcSwap<LiveState>,
    pub metrics: Arc<Metrics>,
    pub health: HealthRegistry,
    /// `server.max_concurrency` slots (fixed at start-up).
    server_slots: Arc<Semaphore>,
    /// Seed and counter for request ids, A/B draws and backoff jitter.
    seed: u64,
    counter: AtomicU64,
    /// False once shutdown begins (`/readyz` answers 503).
    pub ready: AtomicBool,
    /// Cancelled when a shutdown's drain time is over: open bodies end with an error.
    pub drain_over: CancellationToken,
    /// `server.shadow_max_concurrency` slots (fixed at start-up).
    pub(crate) shadow_slots: Arc<Semaphore>,
    /// Dataset writers, one per capture file (kept across reloads).
    pub captures: Arc<crate::capture::Captures>,
}

impl Shared {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Shared>, rustls::Error> {
        let health = HealthRegistry::default();
        let server_slots = Arc::new(Semaphore::new(config.server.max_concurrency));
        let shadow_slots = Arc::new(Semaphore::new(config.server.shadow_max_concurrency));
        let live = LiveState::build(config, &metrics, &health)?;
        let captures: Arc<crate::capture::Captures> = Arc::default();
        live.start_captures(&captures);
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
            health,
            server_slots,
            seed,
            counter: AtomicU64::new(0),
            ready: AtomicBool::new(true),
            drain_over: CancellationToken::new(),
            shadow_slots,
            captures,
        }))
    }

    /// Validates nothing (the config already is): builds the derived state and swaps it in.
    /// Requests in flight keep the snapshot they loaded.
    pub fn swap_config(&self, config: Config) -> Result<(), rustls::Error> {
        let live = LiveState::build(config, &self.metrics, &self.health)?;
        live.start_captures(&self.captures);
        self.live.store(Arc::new(live));
        Ok(())
    }

    /// The economics of the live config over everything counted since start.
    pub fn economics(&self) -> crate::economics::Report {
        let live = self.live.load();
        crate::economics::report(&live.config, &self.metrics.ledger.snapshot())
    }

    /// Sets `tailor_model_healthy` for the current models (called before each scrape).
    pub fn refresh_health_gauges(&self) {
        let live = self.live.load();
        for (m, h) in live.config.models.iter().zip(&live.health) {
            self.metrics
                .model_healthy
                .with_label_values(&[&m.name])
                .set(i64::from(h.is_healthy()));
        }
    }

    /// A fresh pseudo-random number (splitmix64 over a seeded counter).
    pub(crate) fn next_random(&self) -> u64 {
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
    tracing::info!(target: "tailor::access", %method, path, status = err.status().as_u16(), error = err.kind(), message = %err, "rejected");
    err.into_response::<Full<Bytes>>().map(Either::Left)
}

/// Header count and size against the configured limits.
fn headers_within(headers: &HeaderMap, cfg: &Config) -> Result<(), ProxyError> {
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > cfg.server.max_header_count || bytes > cfg.server.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            count: cfg.server.max_header_count,
            bytes: cfg.server.max_header_bytes,
        });
    }
    Ok(())
}

async fn handle<B: ReqBody>(shared: Arc<Shared>, req: Request<B>) -> Response<RespBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let live = shared.live.load_full();
    let suffix = path.strip_prefix("/v1").filter(|s| s.starts_with('/'));
    let client = match headers_within(req.headers(), &live.config) {
        Err(e) => return reject(&shared, &method, &path, e),
        Ok(()) if suffix.is_none() => None,
        Ok(()) => match live.authenticate(req.headers()) {
            Some(c) => Some(c),
            None => return reject(&shared, &method, &path, ProxyError::Unauthorized),
        },
    };
    let err = match (suffix, &method, client) {
        (Some("/models"), &Method::GET, _) => return json_response(models_list(&live)),
        (Some(s), &Method::GET, _) if s.starts_with("/models/") => {
            let id = &s["/models/".len()..];
            match model_get(&live, id) {
                Some(body) => return json_response(body),
                None => ProxyError::UnknownModel(id.chars().take(256).collect()),
            }
        }
        (Some(s), m, Some(client)) if Endpoint::from_suffix(s).is_some() || s == "/models" => {
            match Endpoint::from_suffix(s) {
                Some(ep) if m == Method::POST => {
                    return proxy(&shared, live, ep, client, req).await
                }
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
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(req);
    if declared.is_some_and(|n| n > limit as u64) {
        discard_rest(body).await;
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        // (a `while let` would keep the frame's error type alive across the await below)
        let data = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame.into_data(),
            Some(Err(e)) => {
                return Err(ProxyError::InvalidJson(format!(
                    "could not read the request body: {}",
                    e.into()
                )))
            }
        };
        if let Ok(data) = data {
            total += data.len();
            if total > limit {
                discard_rest(body).await;
                return Err(ProxyError::BodyTooLarge { limit });
            }
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        1 => chunks.swap_remove(0), // the usual case: one frame, no copy
        _ => Bytes::from(chunks.concat()),
    })
}

/// Reads and drops the rest of a rejected body (up to 64 MiB, for up to 2 s) so the client gets
/// to read the 413 instead of a connection reset: closing a socket with unread bytes sends RST.
async fn discard_rest<B: ReqBody>(mut body: std::pin::Pin<&mut B>) {
    let drain = async {
        let mut left = 64usize << 20;
        loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => frame.into_data(),
                _ => break,
            };
            if let Ok(d) = data {
                left = left.saturating_sub(d.len());
                if left == 0 {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

fn try_slot(slots: &Arc<Semaphore>, scope: &str) -> Result<OwnedSemaphorePermit, ProxyError> {
    slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ProxyError::Overloaded {
            scope: scope.to_owned(),
        })
}

async fn proxy<B: ReqBody>(
    shared: &Arc<Shared>,
    live: Arc<LiveState>,
    endpoint: Endpoint,
    client: usize,
    req: Request<B>,
) -> Response<RespBody> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let rejected = |e| reject(shared, &parts.method, parts.uri.path(), e);
    let server_slot = match try_slot(&shared.server_slots, "server") {
        Ok(p) => p,
        Err(e) => return rejected(e),
    };
    let body = match read_body(body, &parts.headers, live.config.server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return rejected(e),
    };
    let view = match RequestView::parse(&body, endpoint) {
        Ok(v) => v,
        Err(e) => return rejected(e),
    };
    let draw = shared.next_random();
    let healthy = |m: usize| live.health[m].is_healthy();
    let Some(decision) = classify::classify(&live.config, &view, &parts.headers, draw, &healthy)
    else {
        return rejected(ProxyError::Unrouted(view.model.chars().take(256).collect()));
    };
    let route = &live.config.routes[decision.route];
    let mut permits = vec![server_slot];
    if let Some(slots) = &live.route_slots[decision.route] {
        match try_slot(slots, &route.name) {
            Ok(p) => permits.push(p),
            Err(e) => return rejected(e),
        }
    }
    let request_id = format!("tlr-{:016x}", shared.next_random());
    tracing::debug!(request_id, route = %route.name, model = %live.config.models[decision.model].name, pick = %decision.pick, "routed");
    let Some(first_meter) = live.meter(decision.route, decision.model, client) else {
        return rejected(ProxyError::Internal("no meter for the routed model".into()));
    };
    let mut meter = RequestMeter::start(
        first_meter,
        live.config.models[decision.model].price,
        live.health[decision.model].clone(),
        started,
        view.stream,
        request_id,
        view.estimated_prompt_tokens(),
        permits,
    );
    if let Some(c) = &route.capture {
        // sample in millionths
        if shared.next_random() % 1_000_000 < (c.sample * 1e6).round() as u64 {
            meter.capture_with(crate::usage::meter::CaptureHook {
                request: body.clone(),
                request_info: crate::capture::request_info(
                    &view,
                    &parts.headers,
                    route
                        .prompt_for(decision.model)
                        .map_or(0, |p| p.text.len().div_ceil(4) as u64),
                ),
                path: c.path.clone(),
                only_model: c
                    .only_model
                    .map(|m| live.config.models[m].name.as_str().into()),
                redact: c.redact.clone(),
                max_file_bytes: c.max_file_bytes,
                captures: shared.captures.clone(),
                metrics: shared.metrics.clone(),
            });
        }
    }
    if let Some(pair) = crate::shadow::launch(
        shared,
        &live,
        route,
        &view,
        endpoint,
        &parts,
        meter.request_id(),
    ) {
        meter.pair_with(pair);
    }
    let attempt = Attempt {
        shared,
        live: &live,
        decision: &decision,
        view: &view,
        endpoint,
        parts: &parts,
        client,
        inject_usage: view.needs_usage_injection(),
    };
    attempt.run(meter).await
}

/// One request's way through its candidate models and their retries.
struct Attempt<'a> {
    shared: &'a Shared,
    live: &'a LiveState,
    decision: &'a Decision<'a>,
    view: &'a RequestView<'a>,
    endpoint: Endpoint,
    parts: &'a http::request::Parts,
    client: usize,
    /// `stream_options.include_usage` is added upstream (and the usage removed for the client).
    inject_usage: bool,
}

/// What one try of one model gave.
enum Tried {
    /// A 2xx answer: its body has not been read.
    Success(Response<Incoming>),
    /// A non-2xx answer, read in full.
    Answer(http::response::Parts, Bytes),
    /// No answer: `connect`, `timeout` or `transport`.
    Failed(&'static str),
}

/// Why a request moved on from a model that answered (the `reason` label of
/// `tailor_fallbacks_total`; the others are `connect`, `timeout`, `transport`, `no_key`).
fn answer_reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "model_not_found",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        _ => "server_error",
    }
}

/// `retry-after` in seconds (OpenAI sends whole seconds; `retry-after-ms` is preferred if present).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    num("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| num(RETRY_AFTER.as_str()).map(Duration::from_secs_f64))
}

impl Attempt<'_> {
    fn cfg(&self) -> &Config {
        &self.live.config
    }

    /// Candidate models: the chosen one, then the fallbacks; models in a cool-down go last (tried
    /// only when every healthy one failed: a slim chance beats a certain error).
    fn candidates(&self) -> Vec<usize> {
        let all = std::iter::once(self.decision.model).chain(
            self.decision
                .fallbacks
                .iter()
                .copied()
                .filter(|m| *m != self.decision.model),
        );
        let (mut healthy, unhealthy): (Vec<usize>, Vec<usize>) =
            all.partition(|m| self.live.health[*m].is_healthy());
        healthy.extend(unhealthy);
        healthy
    }

    async fn run(&self, mut meter: RequestMeter) -> Response<RespBody> {
        let cfg = self.cfg();
        let route = &cfg.routes[self.decision.route];
        let candidates = self.candidates();
        let first_upstream = &cfg.upstreams[cfg.models[candidates[0]].upstream];
        // non-streaming requests have a total deadline covering every try and the body
        let deadline = (!self.view.stream).then(|| meter.started() + first_upstream.timeouts.total);
        let mut last: Option<Response<RespBody>> = None;
        let mut prev: Option<(usize, &'static str)> = None;
        for &mi in &candidates {
            let model = &cfg.models[mi];
            if let Some((from, reason)) = prev {
                self.shared
                    .metrics
                    .fallbacks
                    .with_label_values(&[&route.name, &cfg.models[from].name, &model.name, reason])
                    .inc();
                match self.live.meter(self.decision.route, mi, self.client) {
                    Some(m) => meter.switch_model(m, model.price, self.live.health[mi].clone()),
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
                // warned once at start-up; per request only at debug (the access line has the status)
                tracing::debug!(request_id = meter.request_id(), error = %err, "cannot authenticate upstream");
                meter.meter().upstream_error("no_key");
                meter.responded(err.status(), None);
                last = Some(self.tag(
                    err.into_response::<Full<Bytes>>().map(Either::Left),
                    &model.name,
                    &meter,
                ));
                prev = Some((mi, "no_key"));
                continue;
            }
            let policy = upstream.retry;
            let mut tries = 0;
            let tried = loop {
                let tried = self.try_once(mi, deadline, &mut meter).await;
                // failed: counts against the model's health; retry: worth another try of it
                let (failed, retry) = match &tried {
                    Tried::Success(_) => (false, false),
                    Tried::Answer(p, body) => {
                        let f = forward::should_fall_back(p.status, body);
                        // a deleted model stays deleted: straight to the fallback
                        (f, f && p.status != StatusCode::NOT_FOUND)
                    }
                    Tried::Failed(_) => (true, true),
                };
                if failed {
                    self.live.health[mi].failure();
                }
                if !retry || tries >= policy.max {
                    break tried;
                }
                // wait: retry-after for a 429 (up to the cap), else exponential backoff with full jitter
                let wait = match &tried {
                    Tried::Answer(p, _) if p.status == StatusCode::TOO_MANY_REQUESTS => {
                        match retry_after(&p.headers) {
                            Some(ra) if ra > policy.retry_after_cap => break tried, // too long: move on
                            Some(ra) => ra,
                            None => self.backoff(policy.backoff, policy.max_backoff, tries),
                        }
                    }
                    _ => self.backoff(policy.backoff, policy.max_backoff, tries),
                };
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    break tried;
                }
                tokio::time::sleep(wait).await;
                tries += 1;
            };
            match tried {
                Tried::Success(resp) => {
                    self.live.health[mi].success();
                    return self.stream_back(resp, meter, mi, deadline);
                }
                Tried::Answer(p, body) => {
                    let moves_on = forward::should_fall_back(p.status, &body);
                    let reason = answer_reason(p.status);
                    let mut out = Response::new(Either::Left(Full::new(body)));
                    *out.status_mut() = p.status;
                    *out.headers_mut() = forward::response_headers(&p.headers, false);
                    let out = self.tag(out, &model.name, &meter);
                    if !moves_on {
                        // the upstream's own answer (400, 401...): the client gets it as it is
                        meter.finish(None, 0, Outcome::Ok);
                        return out;
                    }
                    last = Some(out);
                    prev = Some((mi, reason));
                }
                Tried::Failed(kind) => {
                    let err = match kind {
                        "timeout" => ProxyError::UpstreamTimeout {
                            upstream: upstream.name.clone(),
                        },
                        _ => ProxyError::UpstreamUnavailable {
                            upstream: upstream.name.clone(),
                            reason: kind.to_owned(),
                        },
                    };
                    meter.responded(err.status(), None);
                    last = Some(self.tag(
                        err.into_response::<Full<Bytes>>().map(Either::Left),
                        &model.name,
                        &meter,
                    ));
                    prev = Some((mi, kind));
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        meter.finish(None, 0, Outcome::UpstreamError);
        let mut out = last.unwrap_or_else(|| {
            reject(
                self.shared,
                &self.parts.method,
                self.parts.uri.path(),
                ProxyError::Internal("no upstream attempt was made".into()),
            )
        });
        // tailor already retried: the SDK must not multiply the attempts
        out.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
        out
    }

    fn backoff(&self, base: Duration, max: Duration, tries: u32) -> Duration {
        let cap = base.saturating_mul(1u32 << tries.min(16)).min(max);
        let r = (self.shared.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        cap.mul_f64(r)
    }

    /// Sends the request to `model` once, within the header timeout (and the deadline).
    async fn try_once(
        &self,
        mi: usize,
        deadline: Option<Instant>,
        meter: &mut RequestMeter,
    ) -> Tried {
        let cfg = self.cfg();
        let model = &cfg.models[mi];
        let upstream = &cfg.upstreams[model.upstream];
        let prompt = cfg.routes[self.decision.route]
            .prompt_for(mi)
            .map(|p| SystemPrompt {
                text: &p.text,
                replace: p.replace,
            });
        let body = self.view.rewrite(&model.id, self.inject_usage, prompt);
        let req = match forward::upstream_request(
            upstream,
            model,
            self.endpoint,
            self.parts.uri.query(),
            &self.parts.headers,
            body,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(request_id = meter.request_id(), error = %e, "cannot build upstream request");
                return Tried::Failed("transport");
            }
        };
        let mut until = Instant::now() + upstream.timeouts.headers;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        let resp = match tokio::time::timeout_at(
            until,
            self.live.clients.get(model.upstream).request(req),
        )
        .await
        {
            Err(_) => {
                meter.meter().upstream_error("timeout");
                // per try at debug: the access line and tailor_upstream_errors_total carry the outcome
                tracing::debug!(request_id = meter.request_id(), upstream = %upstream.name, model = %model.name, "upstream timed out before headers");
                return Tried::Failed("timeout");
            }
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                meter.meter().upstream_error(kind);
                tracing::debug!(request_id = meter.request_id(), upstream = %upstream.name, model = %model.name, error = %e, "upstream request failed");
                return Tried::Failed(kind);
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        meter.responded(status, resp.headers().get("x-request-id").cloned());
        if status.is_success() {
            return Tried::Success(resp);
        }
        meter.meter().upstream_error(forward::status_kind(status));
        let (parts, body) = resp.into_parts();
        let read = Limited::new(body, MAX_ERROR_BODY).collect();
        let body =
            match tokio::time::timeout_at(until.max(Instant::now() + Duration::from_secs(5)), read)
                .await
            {
                Ok(Ok(c)) => c.to_bytes(),
                _ => Bytes::new(),
            };
        Tried::Answer(parts, body)
    }

    /// A 2xx answer: its headers now, its body through the metering wrapper.
    fn stream_back(
        &self,
        resp: Response<Incoming>,
        meter: RequestMeter,
        mi: usize,
        deadline: Option<Instant>,
    ) -> Response<RespBody> {
        let cfg = self.cfg();
        let model = &cfg.models[mi];
        let idle = cfg.upstreams[model.upstream].timeouts.idle;
        let limits = BodyLimits {
            idle,
            deadline,
            drain: self.shared.drain_over.clone().cancelled_owned(),
        };
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let status = resp.status();
        let request_id = meter.request_id().to_owned();
        let (rparts, rbody) = resp.into_parts();
        let body = if is_sse {
            MeteredBody::sse(rbody, meter, self.inject_usage, limits)
        } else {
            MeteredBody::json(rbody, meter, limits)
        };
        let mut out = Response::new(Either::Right(body));
        *out.status_mut() = status;
        *out.headers_mut() = forward::response_headers(&rparts.headers, !is_sse);
        tag_with(
            out,
            &cfg.routes[self.decision.route].name,
            &model.name,
            &request_id,
        )
    }

    fn tag(
        &self,
        resp: Response<RespBody>,
        model: &str,
        meter: &RequestMeter,
    ) -> Response<RespBody> {
        tag_with(
            resp,
            &self.cfg().routes[self.decision.route].name,
            model,
            meter.request_id(),
        )
    }
}

/// Adds `x-tailor-route`, `x-tailor-model` and tailor's own request id.
fn tag_with(
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
            "tailor_requests_total{client=\"anonymous\",code=\"502\",model=\"m\",outcome=\"upstream_error\",route=\"r\"} 1",
            // the first try and two retries (retries.max defaults to 2)
            "tailor_upstream_errors_total{kind=\"connect\",model=\"m\",route=\"r\"} 3",
            "tailor_requests_total{client=\"anonymous\",code=\"500\",model=\"k\",outcome=\"upstream_error\",route=\"nokey\"} 1",
            "tailor_in_flight_requests{route=\"r\"} 0",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
    }
}
