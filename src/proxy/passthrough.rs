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
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::{discard_rest, read_body, ReqBody};
use super::pipeline::try_slot;
use super::upload::{self, Failure, Progress, Upload};
use crate::config::{Auth, Config, Model, Passthrough, Upstream};
use crate::error::ProxyError;
use crate::forward::client::StreamingBody;
use crate::forward::client::UpstreamBody;
use crate::forward::passthrough::{self as pass, Family};
use crate::forward::policy;
use crate::forward::upstream::{self, response_headers};
use crate::request::view::duplicate;
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
    let (parts, body) = req.into_parts();
    let Some(pt) = &cfg.passthrough else {
        return refuse(
            body,
            ProxyError::Internal("passthrough is not configured".into()),
        )
        .await;
    };
    let upstream = &cfg.upstreams[pt.upstream];
    // decide first: every refusal reads the body away, so the client reads the answer (closing
    // a socket with unread bytes resets it)
    let decided = decide(cfg, pt, &parts, suffix);
    let (target, family) = match decided {
        Ok(d) => d,
        Err(e) => return refuse(body, e).await,
    };
    let slot = match try_slot(
        &shared.server_in_flight,
        cfg.server.max_concurrency,
        "server",
    ) {
        Ok(s) => s,
        Err(e) => return refuse(body, e).await,
    };
    // a JSON body of a known length within server.max_body_bytes (moderations, image generation,
    // batch creation) is read for its model, which prices the answer's usage; anything else
    // (uploads) streams as it comes
    let declared = content_length(&parts.headers);
    let small = declared.is_some_and(|n| n <= cfg.server.max_body_bytes as u64);
    let (body, progress, model): (StreamingBody, _, _) = if is_json(&parts.headers) && small {
        let bytes = read_body(body, &parts.headers, cfg.server.max_body_bytes).await?;
        let model = requested_model(&bytes)?.and_then(|m| known_model(&cfg.models, pt, &m));
        let full = Full::new(bytes).map_err(|e| match e {}).boxed_unsync();
        (full, upload::whole(), model)
    } else {
        let (up, progress) = Upload::new(body, pt.max_body_bytes);
        (up.map_err(Into::into).boxed_unsync(), progress, None)
    };
    let upstream_req = pass::request(upstream, parts.method, &target, &parts.headers, body)?;
    let http = shared
        .keep
        .clients
        .streaming(upstream.timeouts.connect)
        .map_err(|e| ProxyError::Internal(format!("TLS setup: {e}")))?;
    let model_name = model.map_or("", |m| cfg.models[m].name.as_str());
    let client_name = cfg
        .clients
        .get(client)
        .map_or(ANONYMOUS, |c| c.name.as_str());
    let arm = Arc::new(ArmMeter {
        metrics: shared.metrics.meter(ROUTE, model_name, client_name),
        price: model.map_or(Price::FREE, |m| cfg.models[m].price),
        health: None,
        ledger: Arc::new(NoLedger),
        // (never used: a passthrough answer without usage is not estimated)
        encoding: model.map_or(crate::tokens::Encoding::O200kBase, |m| {
            cfg.models[m].encoding()
        }),
    });
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
    let answer = wait(
        http.request(upstream_req),
        &progress,
        upstream,
        || too_large(pt),
        shared.drain_over.token().clone(),
    )
    .await;
    let resp = match answer {
        Ok(resp) => resp,
        Err((err, outcome, kind)) => {
            if let Some(kind) = kind {
                meter.metrics().upstream_error(kind);
            }
            return Ok(error_response(err, meter, outcome));
        }
    };
    let (rparts, rbody) = resp.into_parts();
    let status = rparts.status;
    meter.responded(status, rparts.headers.get("x-request-id").cloned());
    // as for routed requests: an upstream's 5xx, or a 401 / 403 to tailor's own key, is the
    // upstream's failure; other answers are passed on as the client's business
    let judged = policy::final_outcome(status, &upstream.auth);
    if judged == Outcome::UpstreamError || status == StatusCode::TOO_MANY_REQUESTS {
        meter.metrics().upstream_error(policy::error_kind(status));
    }
    meter.judge_answer(judged);
    let request_id = meter.request_id().to_owned();
    let limits = BodyLimits {
        idle: upstream.timeouts.idle,
        deadline: None,
        drain: Arc::clone(&shared.drain_over),
        max_sse_event: cfg.server.max_sse_event_bytes,
    };
    let json = is_json(&rparts.headers);
    let mut out = Response::new(Either::Right(crate::heap::boxed(|| {
        MeteredBody::passthrough(UpstreamBody::Hyper(rbody), meter, json, limits)
    })));
    *out.status_mut() = status;
    *out.headers_mut() = response_headers(rparts.headers, true);
    tag(out.headers_mut(), &request_id);
    Ok(out)
}

/// Where the request goes and its family, or why it may not go (pure).
fn decide(
    cfg: &Config,
    pt: &Passthrough,
    parts: &http::request::Parts,
    suffix: &str,
) -> Result<(String, Family), ProxyError> {
    let upstream = &cfg.upstreams[pt.upstream];
    if let Err(why) = pass::check_path(suffix) {
        tracing::debug!(why, "passthrough path refused");
        return Err(ProxyError::NotFound {
            method: parts.method.to_string(),
            path: format!("/v1{}", suffix.chars().take(200).collect::<String>()),
        });
    }
    let target = pass::target(upstream, suffix, parts.uri.query())
        .map_err(|message| ProxyError::NotForwarded { message })?;
    if let Auth::Key { key: None, env } = &upstream.auth {
        return Err(ProxyError::UpstreamKeyMissing {
            upstream: upstream.name.clone(),
            env: env.clone(),
        });
    }
    if content_length(&parts.headers).is_some_and(|n| n > pt.max_body_bytes) {
        return Err(too_large(pt));
    }
    Ok((target, Family::of(suffix)))
}

/// Reads the body away (bounded), then refuses the request.
async fn refuse<B: ReqBody, T>(body: B, err: ProxyError) -> Result<T, ProxyError> {
    discard_rest(std::pin::pin!(body)).await;
    Err(err)
}

fn too_large(pt: &Passthrough) -> ProxyError {
    ProxyError::BodyTooLarge {
        limit: usize::try_from(pt.max_body_bytes).unwrap_or(usize::MAX),
    }
}

/// Why the wait for an answer ended without one: the error for the client, the outcome, and the
/// `tailor_upstream_errors_total` kind when it is the upstream's failure.
type NoAnswer = (ProxyError, Outcome, Option<&'static str>);

/// Waits for the upstream's answer. `timeouts.headers` runs from the end of the request body
/// (an upload may take long), the body may pause at most `timeouts.idle`, and a shutdown's drain
/// ends the wait.
async fn wait<F>(
    send: F,
    progress: &Progress,
    upstream: &Upstream,
    too_large: impl Fn() -> ProxyError,
    drain: CancellationToken,
) -> Result<Response<Incoming>, NoAnswer>
where
    F: std::future::Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>>,
{
    let send = std::pin::pin!(send);
    let mut send = send;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let drained = drain.cancelled();
    let mut drained = std::pin::pin!(drained);
    let name = || upstream.name.clone();
    loop {
        tokio::select! {
            r = &mut send => {
                return r.map_err(|e| match progress.failure() {
                    Some(Failure::TooLarge) => (too_large(), Outcome::Ok, None),
                    Some(Failure::ClientGone) => (ProxyError::RequestBody("broke off before its end"), Outcome::ClientCancelled, None),
                    None => {
                        let kind = if e.is_connect() { "connect" } else { "transport" };
                        (ProxyError::UpstreamUnavailable { upstream: name(), reason: kind.into() }, Outcome::UpstreamError, Some(kind))
                    }
                });
            }
            _ = &mut drained => {
                return Err((ProxyError::ShuttingDown, Outcome::Shutdown, None));
            }
            _ = tick.tick() => {
                match progress.since_end() {
                    Some(t) if t > upstream.timeouts.headers => {
                        return Err((ProxyError::UpstreamTimeout { upstream: name() }, Outcome::UpstreamError, Some("timeout")));
                    }
                    None if progress.since_bytes() > upstream.timeouts.idle => {
                        return Err((ProxyError::RequestBody("stalled longer than the idle time limit"), Outcome::ClientCancelled, None));
                    }
                    _ => {}
                }
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn is_json(headers: &HeaderMap) -> bool {
    upstream::is_media_type(headers, b"application/json")
}

/// The body's top-level `model`, if it is a JSON object that has one. A `model` sent twice is
/// refused: it prices the answer, and the upstream may read the other one.
fn requested_model(body: &[u8]) -> Result<Option<String>, ProxyError> {
    let Ok(fields) = crate::json::object_fields(body) else {
        return Ok(None);
    };
    let mut models = fields.iter().filter(|f| f.key == "model");
    let Some(f) = models.next() else {
        return Ok(None);
    };
    if models.next().is_some() {
        return Err(duplicate("model"));
    }
    Ok(serde_json::from_str::<Cow<str>>(f.value.get())
        .ok()
        .map(Cow::into_owned))
}

/// The configured model a passthrough request names: one on the passthrough upstream, by its
/// upstream id or its name.
fn known_model(models: &[Model], pt: &Passthrough, requested: &str) -> Option<usize> {
    let on = |m: &Model| m.upstream == pt.upstream;
    (models.iter().position(|m| on(m) && m.id == requested))
        .or_else(|| models.iter().position(|m| on(m) && m.name == requested))
}

/// tailor's own error for a request the meter is recording.
fn error_response(
    err: ProxyError,
    mut meter: RequestMeter,
    outcome: Outcome,
) -> Response<RespBody> {
    tracing::debug!(request_id = meter.request_id(), error = %err, "passthrough failed");
    // a client that went away is recorded as 499 (nginx's convention), not as the answer it
    // will never read
    if outcome != Outcome::ClientCancelled {
        meter.responded(err.status(), None);
    }
    let mut resp = err.into_response::<Full<Bytes>>().map(Either::Left);
    tag(resp.headers_mut(), meter.request_id());
    meter.finish(None, None, outcome);
    resp
}

/// `x-tailor-route: passthrough` and tailor's request id.
fn tag(h: &mut HeaderMap, request_id: &str) {
    h.insert(upstream::TAILOR_ROUTE, HeaderValue::from_static(ROUTE));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(upstream::TAILOR_REQUEST_ID, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_read_from_any_spelling_of_json_and_nothing_from_broken_json() {
        for (body, want) in [
            (
                r#"{"model":"gpt-image-1","prompt":"x"}"#,
                Some("gpt-image-1"),
            ),
            (
                "{ \"prompt\" : \"a \\\"model\\\": no\" ,\r\n  \"model\" :\t\"gpt-image-1\" }",
                Some("gpt-image-1"),
            ),
            (r#"{"mod\u0065l": "gpt-\u0069mage-1"}"#, Some("gpt-image-1")),
            (r#"{"input": "no model here"}"#, None),
            (r#"{"model": 5}"#, None),
            (r#"{"model": "gpt-ima"#, None),
            (r#"{"model": "a\"#, None),
            ("[1, 2]", None),
            ("", None),
        ] {
            assert_eq!(
                requested_model(body.as_bytes()).unwrap().as_deref(),
                want,
                "{body}"
            );
        }
        // twice, in any spelling: refused, whichever the upstream would read
        for body in [
            r#"{"model":"dall-e-2","prompt":"x","model":"gpt-image-1"}"#,
            r#"{"model":"dall-e-2", "mod\u0065l": "dall-e-2"}"#,
        ] {
            let e = requested_model(body.as_bytes()).unwrap_err();
            assert_eq!(e.to_string(), "Parameter 'model' appears more than once.");
            assert_eq!(e.status().as_u16(), 400);
        }
    }
}
