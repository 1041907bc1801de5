//! `passthrough:`: every other `/v1/...` path (files, batches, fine-tuning, moderations, images,
//! audio...) goes to one upstream as it is, both bodies streamed.
//!
//! ```text
//! path check (404) ─▶ URL (404 on Azure for deployment paths) ─▶ server slot (429) ─▶ upstream
//! key (500) ─▶ body within passthrough.max_body_bytes (413): a JSON body whose length is known
//! and within server.max_body_bytes is read for its `model`, anything else streams ─▶ RequestMeter (route
//! `passthrough`, endpoint = the family) ─▶ one try, no retry (the body is not kept) ─▶ the
//! response streams back through MeteredBody (usage read from a JSON answer)
//! ```

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Either, Full, Limited};
use tokio::time::Instant;

use super::body::{read_body, ReqBody};
use crate::config::{Auth, Model, Passthrough};
use crate::error::ProxyError;
use crate::forward::client::StreamingBody;
use crate::forward::passthrough::{self as pass, Family};
use crate::forward::upstream::response_headers;
use crate::state::{LiveState, Shared, ANONYMOUS};
use crate::usage::body::{BodyLimits, MeteredBody, RespBody};
use crate::usage::event::{Finished, Subscriber};
use crate::usage::meter::{ArmMeter, Outcome, RequestMeter};
use crate::usage::price::Price;

/// The `route` label of passthrough requests.
pub const ROUTE: &str = "passthrough";

/// Passthrough requests belong to no arm: the economics ledger is not told of them.
struct NoLedger;
impl Subscriber for NoLedger {
    fn finished(&self, _: &Finished<'_>) {}
}

/// Forwards one request. `suffix` is the path after `/v1`.
pub async fn run<B: ReqBody>(
    shared: &Arc<Shared>,
    live: Arc<LiveState>,
    client: usize,
    suffix: &str,
    req: Request<B>,
) -> Result<Response<RespBody>, ProxyError> {
    let started = Instant::now();
    let cfg = &live.config;
    let Some(pt) = &cfg.passthrough else {
        return Err(ProxyError::Internal("passthrough is not configured".into()));
    };
    if let Err(why) = pass::check_path(suffix) {
        tracing::debug!(why, "passthrough path refused");
        return Err(ProxyError::NotFound {
            method: req.method().to_string(),
            path: format!("/v1{}", suffix.chars().take(200).collect::<String>()),
        });
    }
    let family = Family::of(suffix);
    let upstream = &cfg.upstreams[pt.upstream];
    let target = pass::target(upstream, suffix, req.uri().query())
        .map_err(|message| ProxyError::NotForwarded { message })?;
    let slot = super::pipeline::try_slot(
        &shared.server_in_flight,
        cfg.server.max_concurrency,
        "server",
    )?;
    if let Auth::Key { key: None, env } = &upstream.auth {
        return Err(ProxyError::UpstreamKeyMissing {
            upstream: upstream.name.clone(),
            env: env.clone(),
        });
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > pt.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge {
            limit: usize::try_from(pt.max_body_bytes).unwrap_or(usize::MAX),
        });
    }
    // a small JSON body (moderations, image generation, batch creation) is read for its model,
    // which prices the answer's usage; anything else (uploads) streams as it comes
    let json = is_json(&parts.headers);
    // set when the client's body fails as it streams (a hang-up mid-upload, or over the limit)
    let client_failed = Arc::new(AtomicBool::new(false));
    let small = declared.is_some_and(|n| n <= cfg.server.max_body_bytes as u64);
    let (body, model): (StreamingBody, Option<usize>) = if json && small {
        let bytes = read_body(body, &parts.headers, cfg.server.max_body_bytes).await?;
        let model = requested_model(&bytes).and_then(|m| known_model(&cfg.models, pt, &m));
        (
            Full::new(bytes).map_err(|e| match e {}).boxed_unsync(),
            model,
        )
    } else {
        let limit = usize::try_from(pt.max_body_bytes).unwrap_or(usize::MAX);
        let watched = Watched {
            inner: Box::pin(Limited::new(body, limit)),
            failed: client_failed.clone(),
        };
        (watched.boxed_unsync(), None)
    };
    let model_name = model.map_or("", |m| cfg.models[m].name.as_str());
    let client_name = cfg
        .clients
        .get(client)
        .map_or(ANONYMOUS, |c| c.name.as_str());
    let arm = ArmMeter {
        metrics: shared.metrics.meter(ROUTE, model_name, client_name),
        price: model.map_or(Price::FREE, |m| cfg.models[m].price),
        health: None,
        ledger: Arc::new(NoLedger),
    };
    let request_id = live.ids.mint(ROUTE, model_name, shared.next_random());
    let mut meter = RequestMeter::start(
        arm,
        started,
        family.as_str(),
        false,
        request_id,
        0,
        vec![slot],
    )
    .without_estimate();
    let upstream_req = pass::request(upstream, parts.method, &target, &parts.headers, body)?;
    let http = shared
        .keep
        .clients
        .streaming(upstream.timeouts.connect)
        .map_err(|e| ProxyError::Internal(format!("TLS setup: {e}")))?;
    let sent = tokio::time::timeout(upstream.timeouts.headers, http.request(upstream_req)).await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let (err, outcome) = if too_large(&e) {
                let limit = usize::try_from(pt.max_body_bytes).unwrap_or(usize::MAX);
                (ProxyError::BodyTooLarge { limit }, Outcome::Ok)
            } else if client_failed.load(Ordering::Relaxed) {
                // the client stopped sending its body: nobody waits for an answer
                // (counted once, here, as 499: not also as a rejected request)
                meter.finish(None, 0, Outcome::ClientCancelled);
                let err = ProxyError::InvalidJson("could not read the request body".into());
                return Ok(err.into_response::<Full<Bytes>>().map(Either::Left));
            } else {
                let reason = if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                meter.metrics().upstream_error(reason);
                let err = ProxyError::UpstreamUnavailable {
                    upstream: upstream.name.clone(),
                    reason: reason.to_owned(),
                };
                (err, Outcome::UpstreamError)
            };
            return Ok(error_response(err, meter, outcome));
        }
        Err(_) => {
            meter.metrics().upstream_error("timeout");
            let err = ProxyError::UpstreamTimeout {
                upstream: upstream.name.clone(),
            };
            return Ok(error_response(err, meter, Outcome::UpstreamError));
        }
    };
    let (rparts, rbody) = resp.into_parts();
    meter.responded(rparts.status, rparts.headers.get("x-request-id").cloned());
    let request_id = meter.request_id().to_owned();
    let limits = BodyLimits {
        idle: upstream.timeouts.idle,
        deadline: None,
        drain: shared.drain_over.clone().cancelled_owned(),
        max_sse_event: cfg.server.max_sse_event_bytes,
    };
    let json = is_json(&rparts.headers);
    let mut out = Response::new(Either::Right(MeteredBody::passthrough(
        rbody, meter, json, limits,
    )));
    *out.status_mut() = rparts.status;
    *out.headers_mut() = response_headers(&rparts.headers, true);
    tag(out.headers_mut(), &request_id);
    Ok(out)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// The body's top-level `model`, if it is a JSON object that has one.
fn requested_model(body: &[u8]) -> Option<String> {
    let fields = crate::json::object_fields(body).ok()?;
    let f = fields.iter().find(|f| f.key == "model")?;
    serde_json::from_str::<Cow<str>>(f.value.get())
        .ok()
        .map(Cow::into_owned)
}

/// The configured model a passthrough request names: one on the passthrough upstream, by its
/// upstream id or its name.
fn known_model(models: &[Model], pt: &Passthrough, requested: &str) -> Option<usize> {
    let on = |m: &Model| m.upstream == pt.upstream;
    (models.iter().position(|m| on(m) && m.id == requested))
        .or_else(|| models.iter().position(|m| on(m) && m.name == requested))
}

/// A request body that notes when it fails (the client went away, or it outgrew its limit).
struct Watched<B> {
    inner: Pin<Box<B>>,
    failed: Arc<AtomicBool>,
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.failed.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether hyper gave up on the request because its body outgrew `passthrough.max_body_bytes`.
fn too_large(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// tailor's own error for a request the meter is recording.
fn error_response(
    err: ProxyError,
    mut meter: RequestMeter,
    outcome: Outcome,
) -> Response<RespBody> {
    tracing::debug!(request_id = meter.request_id(), error = %err, "passthrough failed");
    meter.responded(err.status(), None);
    let mut resp = err.into_response::<Full<Bytes>>().map(Either::Left);
    tag(resp.headers_mut(), meter.request_id());
    meter.finish(None, 0, outcome);
    resp
}

/// `x-tailor-route: passthrough` and tailor's request id.
fn tag(h: &mut HeaderMap, request_id: &str) {
    h.insert("x-tailor-route", HeaderValue::from_static(ROUTE));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-tailor-request-id", v);
    }
}
