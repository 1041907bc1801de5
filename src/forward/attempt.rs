//! One routed request's way through its candidate models, all before the first response byte:
//!
//! ```text
//! for model in [chosen, fallbacks..] (models in a cool-down last):
//!     no key ─▶ next model
//!     for try in 0..=retries: rewrite body, send (connect + header timeouts)
//!         2xx ─▶ stream back through MeteredBody: done
//!         final answer (400, 401...) ─▶ to the client as it is: done
//!         policy::judge says retry ─▶ wait (backoff, or retry-after up to its cap), try again
//!     ─▶ next model, counted in tailor_fallbacks_total{reason}
//! nothing left ─▶ the last answer or error, with x-should-retry: false
//! ```
//!
//! Nothing after the first byte is retried.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::Response;
use http_body_util::{BodyExt, Either, Full, Limited};
use tokio::time::Instant;

use super::client::UpstreamBody;
use super::policy::{self, Failure, NoAnswer};
use super::upstream;
use crate::classify::Decision;
use crate::config::{Auth, Config};
use crate::error::ProxyError;
use crate::request::{RequestView, SystemPrompt};
use crate::state::{LiveState, Shared};
use crate::telemetry::TraceHeaders;
use crate::usage::body::{BodyLimits, MeteredBody, RespBody};
use crate::usage::event::Step;
use crate::usage::meter::{Outcome, RequestMeter};

/// Largest upstream error body tailor buffers (to decide on fallback and pass it on).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// One routed request, ready to be sent.
pub struct Attempt<'a> {
    pub shared: &'a Shared,
    pub live: &'a LiveState,
    pub decision: &'a Decision<'a>,
    pub view: &'a RequestView<'a>,
    pub parts: &'a http::request::Parts,
    /// The client's index (its metric series).
    pub client: usize,
    /// The random part of the request id (re-signed for the model that answers after a fallback).
    pub nonce: u64,
    /// `stream_options.include_usage` is added upstream (and the usage removed for the client).
    pub inject_usage: bool,
    /// `traceparent` (and `tracestate`) for the upstream, when tracing is on.
    pub trace: Option<&'a TraceHeaders>,
}

/// What one try of one model gave.
enum Tried {
    /// A 2xx answer: its body has not been read.
    Success(Response<UpstreamBody>),
    /// A non-2xx answer, read in full.
    Answer(http::response::Parts, Bytes),
    NoAnswer(NoAnswer),
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
            all.partition(|m| self.live.model_healthy(*m));
        healthy.extend(unhealthy);
        healthy
    }

    /// Sends the request, falling back model by model; the response to give the client.
    pub async fn run(&self, mut meter: RequestMeter) -> Response<RespBody> {
        let cfg = self.cfg();
        let route = &cfg.routes[self.decision.route];
        let candidates = self.candidates();
        let first = candidates.first().copied().unwrap_or(self.decision.model);
        // non-streaming requests have a total deadline covering every try and the body
        let deadline = (!self.view.stream)
            .then(|| meter.started() + cfg.upstreams[cfg.models[first].upstream].timeouts.total);
        let mut last: Option<Response<RespBody>> = None;
        // the model that failed last, why, and its status if it answered
        let mut prev: Option<(usize, Failure, Option<u16>)> = None;
        for &mi in &candidates {
            let model = &cfg.models[mi];
            if let Some((from, why, status)) = prev {
                self.shared
                    .metrics
                    .fallbacks
                    .with_label_values(&[
                        &route.name,
                        &cfg.models[from].name,
                        &model.name,
                        why.as_str(),
                    ])
                    .inc();
                match self.live.arm_meter(self.decision.route, mi, self.client) {
                    Some(arm) => {
                        let step = Step::Fallback {
                            from: meter.metrics().model.clone(),
                            to: arm.metrics.model.clone(),
                        };
                        meter.note_attempt(step, why.as_str(), status);
                        meter.switch_model(arm)
                    }
                    None => break,
                }
                // the id names the model that answers: feedback must land on its arm
                meter.set_request_id(self.live.ids.mint(&route.name, &model.name, self.nonce));
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
                meter.metrics().upstream_error(Failure::NoKey.as_str());
                last = Some(self.error_response(err, mi, &mut meter));
                prev = Some((mi, Failure::NoKey, None));
                continue;
            }
            match self.try_model(mi, deadline, &mut meter).await {
                Tried::Success(resp) => {
                    if let Some(h) = self.live.model_health(mi) {
                        h.success();
                    }
                    return self.stream_back(resp, meter, mi, deadline);
                }
                Tried::Answer(mut p, body) => {
                    let why = policy::judge(p.status, &body);
                    let mut out = Response::new(Either::Left(Full::new(body)));
                    *out.status_mut() = p.status;
                    *out.headers_mut() =
                        upstream::response_headers(std::mem::take(&mut p.headers), false);
                    let out = self.tag(out, mi, meter.request_id());
                    let Some(why) = why else {
                        // the upstream's own answer (400, 401...): the client gets it as it is
                        meter.finish(None, None, policy::final_outcome(p.status, &upstream.auth));
                        return out;
                    };
                    last = Some(out);
                    prev = Some((mi, why, Some(p.status.as_u16())));
                }
                Tried::NoAnswer(why) => {
                    let err = match why {
                        NoAnswer::Timeout => ProxyError::UpstreamTimeout {
                            upstream: upstream.name.clone(),
                        },
                        NoAnswer::Connect | NoAnswer::Transport => {
                            ProxyError::UpstreamUnavailable {
                                upstream: upstream.name.clone(),
                                reason: why.as_str().to_owned(),
                            }
                        }
                    };
                    last = Some(self.error_response(err, mi, &mut meter));
                    prev = Some((mi, Failure::NoAnswer(why), None));
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        meter.finish(None, None, Outcome::UpstreamError);
        let mut out = last.unwrap_or_else(|| {
            let err = ProxyError::Internal("no upstream attempt was made".into());
            tracing::error!(request_id = meter.request_id(), error = %err, "no candidate model");
            err.into_response::<Full<Bytes>>().map(Either::Left)
        });
        // tailor already retried: the SDK must not multiply the attempts
        out.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
        out
    }

    /// Tries model `mi` until it answers, its retries are spent, or the deadline is near.
    async fn try_model(
        &self,
        mi: usize,
        deadline: Option<Instant>,
        meter: &mut RequestMeter,
    ) -> Tried {
        let policy = self.cfg().upstreams[self.cfg().models[mi].upstream].retry;
        let mut tries = 0;
        loop {
            let tried = self.try_once(mi, deadline, meter).await;
            let failure = match &tried {
                Tried::Success(_) => return tried,
                Tried::Answer(p, body) => match policy::judge(p.status, body) {
                    Some(f) => f,
                    None => return tried,
                },
                Tried::NoAnswer(n) => Failure::NoAnswer(*n),
            };
            if let Some(h) = self.live.model_health(mi) {
                h.failure();
            }
            if !failure.retry_same() || tries >= policy.max {
                return tried;
            }
            let backoff = || self.backoff(policy.backoff, policy.max_backoff, tries);
            let wait = match (&tried, failure) {
                // a 429 says how long to wait: honour it up to the cap, else move on
                (Tried::Answer(p, _), Failure::RateLimited) => {
                    match policy::retry_after(&p.headers) {
                        Some(ra) if ra > policy.retry_after_cap => return tried,
                        Some(ra) => ra,
                        None => backoff(),
                    }
                }
                (Tried::Success(_) | Tried::Answer(..) | Tried::NoAnswer(_), _) => backoff(),
            };
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return tried;
            }
            let status = match &tried {
                Tried::Answer(p, _) => Some(p.status.as_u16()),
                Tried::Success(_) | Tried::NoAnswer(_) => None,
            };
            let step = Step::Retry {
                model: meter.metrics().model.clone(),
                retry: tries + 1,
                wait,
            };
            meter.note_attempt(step, failure.as_str(), status);
            tokio::time::sleep(wait).await;
            tries += 1;
        }
    }

    /// Exponential backoff with full jitter.
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
        meter.sending(self.view.endpoint, &body);
        let req = match upstream::request(
            upstream,
            model,
            self.view.endpoint,
            self.parts.uri.query(),
            &self.parts.headers,
            self.trace,
            body,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(request_id = meter.request_id(), error = %e, "cannot build upstream request");
                return Tried::NoAnswer(NoAnswer::Transport);
            }
        };
        let mut until = Instant::now() + upstream.timeouts.headers;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        // on the heap: held inline, it would make every state of the attempt's futures as large
        // as itself, and a future is copied whole each time it moves into the one that awaits it
        let sent = crate::heap::pinned(|| self.live.clients.send(model.upstream, req));
        let resp = match tokio::time::timeout_at(until, sent).await {
            Err(_) => {
                meter.metrics().upstream_error(NoAnswer::Timeout.as_str());
                // per try at debug: the access line and tailor_upstream_errors_total carry the outcome
                tracing::debug!(request_id = meter.request_id(), upstream = %upstream.name, model = %model.name, "upstream timed out before headers");
                return Tried::NoAnswer(NoAnswer::Timeout);
            }
            Ok(Err(e)) => {
                let why = if e.is_connect() {
                    NoAnswer::Connect
                } else {
                    NoAnswer::Transport
                };
                meter.metrics().upstream_error(why.as_str());
                tracing::debug!(request_id = meter.request_id(), upstream = %upstream.name, model = %model.name, error = %e, "upstream request failed");
                return Tried::NoAnswer(why);
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        meter.responded(status, resp.headers().get("x-request-id").cloned());
        if status.is_success() {
            return Tried::Success(resp);
        }
        meter.metrics().upstream_error(policy::error_kind(status));
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
        resp: Response<UpstreamBody>,
        meter: RequestMeter,
        mi: usize,
        deadline: Option<Instant>,
    ) -> Response<RespBody> {
        let cfg = self.cfg();
        let model = &cfg.models[mi];
        let limits = BodyLimits {
            idle: cfg.upstreams[model.upstream].timeouts.idle,
            deadline,
            drain: Arc::clone(&self.shared.drain_over),
            max_sse_event: cfg.server.max_sse_event_bytes,
        };
        let is_sse = upstream::is_media_type(resp.headers(), b"text/event-stream");
        let (rparts, rbody) = resp.into_parts();
        // the client's head first, while the meter (which the body takes) is at hand
        let mut out = Response::new(Either::Left(Full::default()));
        *out.status_mut() = rparts.status;
        *out.headers_mut() = upstream::response_headers(rparts.headers, !is_sse);
        let mut out = self.tag(out, mi, meter.request_id());
        let body = crate::heap::boxed(|| {
            if is_sse {
                MeteredBody::sse(rbody, meter, self.inject_usage, limits)
            } else {
                MeteredBody::json(rbody, meter, limits)
            }
        });
        *out.body_mut() = Either::Right(body);
        out
    }

    /// tailor's own error as this model's answer (the meter records its status).
    fn error_response(
        &self,
        err: ProxyError,
        mi: usize,
        meter: &mut RequestMeter,
    ) -> Response<RespBody> {
        meter.responded(err.status(), None);
        let resp = err.into_response::<Full<Bytes>>().map(Either::Left);
        self.tag(resp, mi, meter.request_id())
    }

    /// Adds `x-tailor-route`, `x-tailor-model` (of model `mi`) and tailor's own request id.
    fn tag(&self, mut resp: Response<RespBody>, mi: usize, request_id: &str) -> Response<RespBody> {
        let live = &self.live;
        let h = resp.headers_mut();
        for (name, value) in [
            (
                upstream::TAILOR_ROUTE,
                live.route_tags.get(self.decision.route),
            ),
            (upstream::TAILOR_MODEL, live.model_tags.get(mi)),
        ] {
            if let Some(Some(v)) = value {
                h.insert(name, v.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(upstream::TAILOR_REQUEST_ID, v);
        }
        resp
    }
}
