//! Metering: one [`RequestMeter`] per routed request, recording exactly once: when the response
//! body ends (`MeteredBody`, in body.rs), or on drop (a client that hangs up is still counted).
//! Recording adds the tokens and cost to the metrics, writes the access line, and then announces
//! [`Finished`] to the arm's and the request's subscribers (economics, shadow, capture).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

pub use super::event::Outcome;
use super::event::{AttemptEvent, Finished, Step, Subscriber, MAX_KEPT_ANSWER_BYTES};
use super::price::{Price, PICO_DIGITS};
use super::Usage;
use crate::forward::health::ModelHealth;
use crate::limits::Slot;
use crate::metrics::RouteModelMeter;
use crate::request::Endpoint;
use crate::tokens::chat;
use crate::tokens::stream::StreamText;
use crate::tokens::Encoding;

/// Status recorded when the client went away before a response was sent (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// Where a request's numbers go while one model answers it: resolved once per config for each
/// (route, model, client), so the request path does no lookups.
#[derive(Clone)]
pub struct ArmMeter {
    pub metrics: RouteModelMeter,
    pub price: Price,
    /// The model's health, told of broken streams (None: passthrough requests, which say
    /// nothing about a model's chat answers).
    pub health: Option<Arc<ModelHealth>>,
    /// Told of every request this arm finishes (the economics ledger).
    pub ledger: Arc<dyn Subscriber>,
    /// The model's tokenizer, for estimates when the upstream reports no usage.
    pub encoding: Encoding,
}

/// What the client was sent, kept (refcounted frames, not copies) for subscribers that want it.
#[derive(Default)]
struct Kept {
    frames: Vec<Bytes>,
    bytes: usize,
    truncated: bool,
}

/// The metering state of one routed request.
pub struct RequestMeter {
    arm: Arc<ArmMeter>,
    started: Instant,
    request_id: String,
    upstream_request_id: Option<HeaderValue>,
    status: Option<StatusCode>,
    stream: bool,
    /// The `endpoint` label: chat, completions, embeddings, responses, or a passthrough family.
    endpoint: &'static str,
    /// Estimated prompt tokens (bytes / 4), recorded when the upstream answered but sent no
    /// usage and the body sent cannot be tokenized.
    prompt_estimate: u64,
    /// The body last sent upstream (refcounted, not copied), tokenized only if the upstream
    /// answers and sends no usage (a broken stream, a hang-up): rare, so never on the way of a
    /// request that completes.
    sent: Option<(Endpoint, Bytes)>,
    /// Concurrency slots, released when the request is recorded.
    permits: Vec<Slot>,
    /// How the answer itself was judged (passthrough: an upstream's 401 to tailor's key is its
    /// failure), when the body then ends cleanly.
    judged: Option<Outcome>,
    /// A successful answer without usage is billed by estimate (false: passthrough, where an
    /// answer without usage, a file or a job, costs nothing by itself).
    estimate: bool,
    done: bool,
    /// A shadow copy runs: the pair's id (the request id when it was launched), for the access line.
    shadow_pair: Option<String>,
    /// This request's own subscribers (a shadow pair, a capture sample).
    subscribers: Vec<Box<dyn Subscriber>>,
    answer: Option<Kept>,
    /// Retries and fallbacks, noted only when a subscriber wants them (a trace span).
    attempts: Option<Vec<AttemptEvent>>,
}

impl RequestMeter {
    /// Starts metering; the route's in-flight gauge goes up until the request is recorded.
    pub fn start(
        arm: Arc<ArmMeter>,
        started: Instant,
        endpoint: &'static str,
        stream: bool,
        request_id: String,
        prompt_estimate: u64,
        permits: Vec<Slot>,
    ) -> RequestMeter {
        arm.metrics.in_flight.inc();
        RequestMeter {
            arm,
            started,
            request_id,
            upstream_request_id: None,
            status: None,
            endpoint,
            stream,
            prompt_estimate,
            sent: None,
            permits,
            estimate: true,
            judged: None,
            done: false,
            shadow_pair: None,
            subscribers: Vec::new(),
            answer: None,
            attempts: None,
        }
    }

    /// The answer's status says how the request ended, if its body ends cleanly.
    pub fn judge_answer(&mut self, outcome: Outcome) {
        self.judged = Some(outcome);
    }

    /// An answer without usage is recorded as having none, not estimated.
    pub fn without_estimate(mut self) -> RequestMeter {
        self.estimate = false;
        self
    }

    /// Adds a subscriber of this request's end.
    pub fn subscribe(&mut self, s: Box<dyn Subscriber>) {
        if s.wants_answer() {
            self.answer.get_or_insert_with(Kept::default);
        }
        if s.wants_attempts() {
            self.attempts.get_or_insert_with(Vec::new);
        }
        self.subscribers.push(s);
    }

    /// A shadow copy of this request runs: its access line carries the pair id (the request id
    /// now, which a fallback may change later).
    pub fn mark_shadowed(&mut self) {
        self.shadow_pair = Some(self.request_id.clone());
    }

    /// Keeps (refcounted, not copied) what the client is sent, when a subscriber wants it.
    pub fn keep_answer(&mut self, out: &Bytes) {
        if let Some(k) = &mut self.answer {
            if k.truncated || k.bytes + out.len() > MAX_KEPT_ANSWER_BYTES {
                k.truncated = true;
            } else {
                k.bytes += out.len();
                k.frames.push(out.clone());
            }
        }
    }

    /// A failed try is retried or the request moves on: noted when a subscriber wants it (one
    /// branch otherwise).
    pub fn note_attempt(&mut self, step: Step, reason: &'static str, status: Option<u16>) {
        if let Some(v) = &mut self.attempts {
            v.push(AttemptEvent {
                at: self.started.elapsed(),
                step,
                reason,
                status,
            });
        }
    }

    /// The body about to be sent upstream: the basis of the prompt count if no usage comes back.
    pub fn sending(&mut self, endpoint: Endpoint, body: &Bytes) {
        self.sent = Some((endpoint, body.clone()));
    }

    /// The tokenizer of the model answering now.
    pub fn encoding(&self) -> Encoding {
        self.arm.encoding
    }

    /// The prompt's tokens, counted with OpenAI's rules from the body `sent` when the encoder is
    /// loaded (it is, moments after start), else the estimate made at the start.
    fn prompt_tokens(&self, sent: Option<&(Endpoint, Bytes)>) -> u64 {
        let enc = self.arm.encoding;
        sent.filter(|_| enc.loaded().is_some())
            .and_then(|(endpoint, body)| chat::request_prompt_tokens(enc, *endpoint, body))
            .unwrap_or(self.prompt_estimate)
    }

    /// The request moved to another model (fallback): usage goes to that model's series.
    pub fn switch_model(&mut self, arm: Arc<ArmMeter>) {
        // in-flight is per route, and the route does not change
        self.arm = arm;
    }

    /// The metric handles of the model answering now.
    pub fn metrics(&self) -> &RouteModelMeter {
        &self.arm.metrics
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// A new id for the request (after a fallback, naming the model that answers now).
    pub fn set_request_id(&mut self, id: String) {
        self.request_id = id;
    }

    /// A stream that had started broke: that counts against the model's health (failures
    /// before the first byte are counted by the forwarder, try by try).
    pub fn stream_failed(&self) {
        if let Some(h) = &self.arm.health {
            h.failure();
        }
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The response status is known.
    pub fn responded(&mut self, status: StatusCode, upstream_request_id: Option<HeaderValue>) {
        self.status = Some(status);
        // a copy: a slice of the upstream's read buffer would pin that buffer (8 KiB) for as
        // long as a stream runs
        self.upstream_request_id =
            upstream_request_id.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    }

    /// Records the request: counters, cost, duration, the access line, then the subscribers.
    /// Idempotent. Without upstream usage, a successful answer is billed by estimate: the prompt
    /// sent and the generated text `seen`, counted with the model's tokenizer; an answer that
    /// never started is billed nothing.
    pub fn finish(&mut self, usage: Option<Usage>, seen: Option<&StreamText>, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.permits.clear();
        // a body that ended cleanly ends as its answer was judged (`policy::final_outcome`)
        let outcome = match (outcome, self.judged) {
            (Outcome::Ok, Some(judged)) => judged,
            (o, _) => o,
        };
        // the request body is not needed past this point: not kept as long as the meter
        let sent = self.sent.take();
        let m = &self.arm.metrics;
        let status = match (self.status, outcome) {
            (Some(s), _) => s,
            (None, Outcome::ClientCancelled) => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            (None, _) => StatusCode::BAD_GATEWAY,
        };
        let (usage, source) = match usage {
            Some(u) => (Some(u), "upstream"),
            None if self.estimate && self.status.is_some_and(|s| s.is_success()) => (
                Some(Usage {
                    input: self.prompt_tokens(sent.as_ref()),
                    cached: 0,
                    output: seen.map_or(0, StreamText::tokens),
                    reasoning: 0,
                }),
                "estimate",
            ),
            None => (None, "none"),
        };
        let u = usage.unwrap_or_default();
        let cost = self.arm.price.cost_pico(&u);
        if usage.is_some() {
            m.record_usage(&u, cost);
        }
        if source == "estimate" {
            m.record_estimate(&u, cost);
        }
        m.record_request(self.endpoint, status, outcome.as_str());
        let elapsed = self.started.elapsed();
        m.duration.observe(elapsed.as_secs_f64());
        m.in_flight.dec();
        crate::logs::access(|l| {
            let upstream_id = self.upstream_request_id.as_ref();
            l.str("request_id", &self.request_id)
                .str(
                    "upstream_request_id",
                    upstream_id.and_then(|v| v.to_str().ok()).unwrap_or(""),
                )
                .str("route", &m.route)
                .str("model", &m.model)
                .str("client", &m.client)
                .u64("status", status.as_u16().into())
                .bool("stream", self.stream)
                .str("outcome", outcome.as_str())
                .str("usage", source)
                .u64("input_tokens", u.input)
                .u64("cached_tokens", u.cached)
                .u64("output_tokens", u.output)
                .u64("reasoning_tokens", u.reasoning)
                .decimal("cost_usd", cost, PICO_DIGITS)
                .decimal("duration_ms", elapsed.as_micros(), 3)
                .str("shadow_pair", self.shadow_pair.as_deref().unwrap_or(""));
        });
        let kept = self.answer.take().unwrap_or_default();
        let attempts = self.attempts.take().unwrap_or_default();
        let event = Finished {
            route: &m.route,
            model: &m.model,
            request_id: &self.request_id,
            answered: outcome == Outcome::Ok && status.is_success(),
            // the upstream's or tailor's fault: a stream that broke after its 200 included; a
            // client hanging up, or a request the upstream judged invalid (passed on as it is), not
            failed: matches!(outcome, Outcome::UpstreamError | Outcome::Shutdown),
            usage: u,
            estimated: source == "estimate",
            cost_pico: cost,
            elapsed,
            answer: &kept.frames,
            answer_truncated: kept.truncated,
            status: status.as_u16(),
            outcome,
            attempts: &attempts,
        };
        self.arm.ledger.finished(&event);
        for s in &self.subscribers {
            s.finished(&event);
        }
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        self.finish(None, None, Outcome::ClientCancelled);
    }
}
