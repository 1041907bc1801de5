//! Metering: one [`RequestMeter`] per routed request, recording exactly once: when the response
//! body ends, or on drop (a client that hangs up is still counted), and [`MeteredBody`], the
//! response body wrapper that sees every frame as it passes and enforces the body's time limits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::price::{Price, PICO_PER_USD};
use super::sse::SseScanner;
use super::{find_in_json, Usage};
use crate::error::error_body;
use crate::health::ModelHealth;
use crate::metrics::RouteModelMeter;

/// The error type of a response body tailor sends.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a request ended (the `outcome` label of `tailor_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ClientCancelled,
    UpstreamError,
    /// Still running when the drain timeout of a shutdown ran out.
    Shutdown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Shutdown => "shutdown",
        }
    }
}

/// Status recorded when the client went away before a response was sent (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// Largest tail of a JSON response kept to find its `usage` (OpenAI puts usage near the end).
const JSON_USAGE_WINDOW: usize = 1024 * 1024;

/// A request sampled for its route's dataset: the job goes to the capture writer if the request
/// succeeds (and was answered by `only_model`, when set).
pub struct CaptureHook {
    pub request: Bytes,
    /// The request as `tailor simulate` needs it (see [`crate::capture::Meta::request`]).
    pub request_info: serde_json::Value,
    pub path: std::path::PathBuf,
    pub only_model: Option<Arc<str>>,
    pub redact: Arc<Vec<regex::Regex>>,
    pub max_file_bytes: u64,
    pub captures: Arc<crate::capture::Captures>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl CaptureHook {
    fn offer(self, response: Vec<Bytes>, meta: crate::capture::Meta) {
        let route = meta.route.clone();
        let meta = crate::capture::Meta {
            request: self.request_info,
            ..meta
        };
        let job = crate::capture::Job {
            request: self.request,
            response,
            meta,
            redact: self.redact,
            max_file_bytes: self.max_file_bytes,
        };
        if !self.captures.offer(&self.path, job) {
            self.metrics
                .capture_dropped
                .with_label_values(&[&route])
                .inc();
        }
    }
}

/// The metering state of one routed request.
pub struct RequestMeter {
    meter: RouteModelMeter,
    price: Price,
    health: Arc<ModelHealth>,
    started: Instant,
    request_id: String,
    upstream_request_id: Option<HeaderValue>,
    status: Option<StatusCode>,
    stream: bool,
    /// Estimated prompt tokens, recorded when the upstream answered but sent no usage.
    prompt_estimate: u64,
    /// Concurrency slots, released when the request is recorded.
    permits: Vec<OwnedSemaphorePermit>,
    done: bool,
    /// With a shadow copy in flight: where the primary's result goes, and the body so far.
    pair: Option<crate::shadow::PairTx>,
    pair_id_logged: Option<String>,
    /// Sampled for the route's dataset: where it goes, decided at the end.
    capture: Option<CaptureHook>,
    /// What the client was sent (refcounted frames, not copies), kept for the shadow comparison
    /// or the capture, and its size.
    answer: Option<(Vec<Bytes>, usize)>,
}

impl RequestMeter {
    /// Starts metering; the route's in-flight gauge goes up until the request is recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        meter: RouteModelMeter,
        price: Price,
        health: Arc<ModelHealth>,
        started: Instant,
        stream: bool,
        request_id: String,
        prompt_estimate: u64,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> RequestMeter {
        meter.in_flight.inc();
        RequestMeter {
            meter,
            price,
            health,
            started,
            request_id,
            upstream_request_id: None,
            status: None,
            stream,
            prompt_estimate,
            permits,
            done: false,
            pair: None,
            pair_id_logged: None,
            capture: None,
            answer: None,
        }
    }

    /// A shadow copy of this request is in flight: at the end, what the client got goes to it.
    pub fn pair_with(&mut self, tx: crate::shadow::PairTx) {
        self.pair = Some(tx);
        self.answer.get_or_insert_with(Default::default);
    }

    /// This request was sampled for its route's dataset.
    pub fn capture_with(&mut self, hook: CaptureHook) {
        self.capture = Some(hook);
        self.answer.get_or_insert_with(Default::default);
    }

    /// Keeps (refcounted, not copied) what the client is sent, for a shadow comparison or a
    /// capture.
    fn capture(&mut self, out: &Bytes) {
        if let Some((frames, kept)) = &mut self.answer {
            if *kept + out.len() <= crate::capture::MAX_RESPONSE_BYTES {
                *kept += out.len();
                frames.push(out.clone());
            }
        }
    }

    /// The request moved to another model (fallback): usage goes to that model's series.
    pub fn switch_model(&mut self, meter: RouteModelMeter, price: Price, health: Arc<ModelHealth>) {
        // in-flight is per route, and the route does not change
        self.meter = meter;
        self.price = price;
        self.health = health;
    }

    pub fn meter(&self) -> &RouteModelMeter {
        &self.meter
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// A stream that had started broke: that counts against the model's health (failures
    /// before the first byte are counted by the forwarder, try by try).
    fn stream_failed(&self) {
        self.health.failure();
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The response status is known.
    pub fn responded(&mut self, status: StatusCode, upstream_request_id: Option<HeaderValue>) {
        self.status = Some(status);
        self.upstream_request_id = upstream_request_id;
    }

    /// Records the request: counters, cost, duration, the access log line. Idempotent.
    /// Without upstream usage, a successful answer is billed by estimate: the prompt estimate and
    /// `text_bytes / 4` output tokens; an answer that never started is billed nothing.
    pub fn finish(&mut self, usage: Option<Usage>, text_bytes: u64, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.permits.clear();
        let m = &self.meter;
        let status = match (self.status, outcome) {
            (Some(s), _) => s,
            (None, Outcome::ClientCancelled) => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            (None, _) => StatusCode::BAD_GATEWAY,
        };
        let (usage, source) = match usage {
            Some(u) => (Some(u), "upstream"),
            None if self.status.is_some_and(|s| s.is_success()) => (
                Some(Usage {
                    input: self.prompt_estimate,
                    cached: 0,
                    output: text_bytes.div_ceil(4),
                    reasoning: 0,
                }),
                "estimate",
            ),
            None => (None, "none"),
        };
        let u = usage.unwrap_or_default();
        let cost = self.price.cost_pico(&u);
        if usage.is_some() {
            m.record_usage(&u, cost);
        }
        m.record_request(status, outcome.as_str());
        let elapsed = self.started.elapsed();
        // a client hanging up is no failure of the model
        let failed = !status.is_success() && outcome != Outcome::ClientCancelled;
        m.stats.record(!failed, &u, cost, elapsed);
        let answered = outcome == Outcome::Ok && status.is_success();
        let body = self
            .answer
            .take()
            .map(|(frames, _)| frames)
            .unwrap_or_default();
        if let Some(hook) = self.capture.take() {
            if answered && hook.only_model.as_ref().is_none_or(|only| *only == m.model) {
                hook.offer(
                    body.clone(),
                    crate::capture::Meta {
                        request: serde_json::Value::Null,
                        request_id: self.request_id.clone(),
                        unix_time: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64()),
                        route: m.route.clone(),
                        model: m.model.clone(),
                        usage: u,
                        cost_usd: cost as f64 / PICO_PER_USD,
                    },
                );
            }
        }
        if let Some(tx) = self.pair.take() {
            self.pair_id_logged = Some(tx.id().to_owned());
            tx.send(crate::shadow::PrimaryResult {
                ok: answered,
                latency: elapsed,
                output_tokens: u.output,
                cost_pico: cost,
                body,
            });
        }
        m.duration.observe(elapsed.as_secs_f64());
        m.in_flight.dec();
        tracing::info!(
            target: "tailor::access",
            request_id = %self.request_id,
            upstream_request_id = self.upstream_request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            route = %m.route,
            model = %m.model,
            client = %m.client,
            status = status.as_u16(),
            stream = self.stream,
            outcome = outcome.as_str(),
            usage = source,
            input_tokens = u.input,
            cached_tokens = u.cached,
            output_tokens = u.output,
            reasoning_tokens = u.reasoning,
            cost_usd = cost as f64 / PICO_PER_USD,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            shadow_pair = self.pair_id_logged.as_deref().unwrap_or(""),
        );
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        self.finish(None, 0, Outcome::ClientCancelled);
    }
}

/// How the body is read for usage.
enum Mode {
    /// A JSON body: the last [`JSON_USAGE_WINDOW`] bytes of frames are kept (reference-counted,
    /// not copied) and scanned at the end.
    Json {
        frames: VecDeque<Bytes>,
        kept: usize,
    },
    /// An SSE stream, scanned event by event.
    Sse(SseScanner),
}

/// Time limits of a response body.
pub struct BodyLimits {
    /// Longest gap between two upstream reads.
    pub idle: Duration,
    /// End of the whole request (non-streaming requests), if any.
    pub deadline: Option<Instant>,
    /// Fires when a shutdown's drain time is over: the body ends with an error.
    pub drain: WaitForCancellationFutureOwned,
}

/// The response body wrapper: forwards frames as they arrive and meters the request.
pub struct MeteredBody<B> {
    inner: B,
    mode: Mode,
    meter: RequestMeter,
    /// Bytes to send before ending (an SSE error event after a broken stream).
    tail: Option<Bytes>,
    first_frame_seen: bool,
    ended: bool,
    idle: Duration,
    deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    drain: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<B> MeteredBody<B> {
    fn new(inner: B, mode: Mode, meter: RequestMeter, limits: BodyLimits) -> MeteredBody<B> {
        let first = next_timeout(limits.idle, limits.deadline);
        MeteredBody {
            inner,
            mode,
            meter,
            tail: None,
            first_frame_seen: false,
            ended: false,
            idle: limits.idle,
            deadline: limits.deadline,
            timer: Box::pin(tokio::time::sleep_until(first)),
            drain: Box::pin(limits.drain),
        }
    }

    /// Wraps a JSON (non-streaming) body.
    pub fn json(inner: B, meter: RequestMeter, limits: BodyLimits) -> MeteredBody<B> {
        MeteredBody::new(
            inner,
            Mode::Json {
                frames: VecDeque::new(),
                kept: 0,
            },
            meter,
            limits,
        )
    }

    /// Wraps an SSE body; `strip_usage_chunk` removes the usage the client did not ask for.
    pub fn sse(
        inner: B,
        meter: RequestMeter,
        strip_usage_chunk: bool,
        limits: BodyLimits,
    ) -> MeteredBody<B> {
        MeteredBody::new(
            inner,
            Mode::Sse(SseScanner::new(strip_usage_chunk)),
            meter,
            limits,
        )
    }

    fn usage(&self) -> (Option<Usage>, u64) {
        match &self.mode {
            Mode::Json { frames, kept } => {
                let usage = match frames.len() {
                    0 => None,
                    1 => frames.front().and_then(|f| find_in_json(f)),
                    _ => {
                        let mut all = BytesMut::with_capacity(*kept);
                        for f in frames {
                            all.extend_from_slice(f);
                        }
                        find_in_json(&all)
                    }
                };
                (usage, 0)
            }
            Mode::Sse(s) => (s.usage(), s.text_bytes()),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let (usage, text) = self.usage();
        self.meter.finish(usage, text, outcome);
    }

    /// The upstream body ended cleanly: flush, check the stream was complete, record.
    fn end_of_upstream(&mut self) {
        self.ended = true;
        let mut outcome = Outcome::Ok;
        if let Mode::Sse(s) = &mut self.mode {
            let rest = s.finish();
            if !s.complete() {
                // closed without its end marker: a truncated stream must not look complete
                self.meter.meter().upstream_error("stream");
                self.meter.stream_failed();
                outcome = Outcome::UpstreamError;
                self.tail = Some(with_error_event(
                    rest,
                    "The upstream stream ended before it was complete.",
                ));
            } else if !rest.is_empty() {
                self.tail = Some(rest);
            }
        }
        self.finish(outcome);
    }

    /// Ends the body early. A stream gets an error event; a JSON body is aborted (the client sees
    /// a broken body, not a plausible one).
    fn fail(&mut self, outcome: Outcome, kind: &'static str, message: &str) -> Option<BoxError> {
        self.ended = true;
        if outcome == Outcome::UpstreamError {
            self.meter.meter().upstream_error(kind);
            self.meter.stream_failed();
        }
        tracing::debug!(
            request_id = self.meter.request_id(),
            kind,
            "response body ended early"
        );
        self.finish(outcome);
        match &mut self.mode {
            Mode::Json { .. } => Some(message.to_owned().into()),
            Mode::Sse(s) => {
                let rest = s.finish();
                self.tail = Some(with_error_event(rest, message));
                None
            }
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // the client went away mid-body: record what was seen (usage, if it already passed)
        if !self.ended {
            self.ended = true;
            self.finish(Outcome::ClientCancelled);
        }
    }
}

fn next_timeout(idle: Duration, deadline: Option<Instant>) -> Instant {
    let t = Instant::now() + idle;
    deadline.map_or(t, |d| d.min(t))
}

/// The SSE event sent when a stream breaks after it started: the SDKs raise on a `data:` payload
/// with an `error` key. Never a fake `data: [DONE]`.
fn stream_error_event(message: &str) -> Bytes {
    let body = error_body(message, "server_error", None, Some("upstream_stream_error"));
    let mut ev = BytesMut::with_capacity(body.len() + 8);
    ev.extend_from_slice(b"data: ");
    ev.extend_from_slice(&body);
    ev.extend_from_slice(b"\n\n");
    ev.freeze()
}

/// `rest` (an unterminated last event, possibly empty), closed, then the error event.
fn with_error_event(rest: Bytes, message: &str) -> Bytes {
    let mut out = BytesMut::from(rest.as_ref());
    if !out.is_empty() && !out.ends_with(b"\n\n") {
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(&stream_error_event(message));
    out.freeze()
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = this.tail.take() {
                return Poll::Ready(Some(Ok(Frame::data(t))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.drain.as_mut().poll(cx).is_ready() {
                match this.fail(
                    Outcome::Shutdown,
                    "shutdown",
                    "tailor is shutting down and could not finish this response.",
                ) {
                    Some(e) => return Poll::Ready(Some(Err(e))),
                    None => continue,
                }
            }
            let polled = Pin::new(&mut this.inner).poll_frame(cx);
            let frame = match polled {
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        let (kind, msg) = match this.deadline {
                            Some(d) if Instant::now() >= d => (
                                "timeout",
                                "The request took longer than the upstream's total time limit.",
                            ),
                            _ => (
                                "stall",
                                "The upstream stopped sending for longer than its idle time limit.",
                            ),
                        };
                        match this.fail(Outcome::UpstreamError, kind, msg) {
                            Some(e) => return Poll::Ready(Some(Err(e))),
                            None => continue,
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(f) => f,
            };
            match frame {
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                    };
                    let next = next_timeout(this.idle, this.deadline);
                    this.timer.as_mut().reset(next);
                    if !this.first_frame_seen {
                        this.first_frame_seen = true;
                        if matches!(this.mode, Mode::Sse(_)) {
                            this.meter
                                .meter()
                                .ttft
                                .observe(this.meter.started.elapsed().as_secs_f64());
                        }
                    }
                    let out = match &mut this.mode {
                        Mode::Json { frames, kept } => {
                            *kept += data.len();
                            frames.push_back(data.clone());
                            while frames.len() > 1
                                && *kept - frames.front().map_or(0, Bytes::len) >= JSON_USAGE_WINDOW
                            {
                                *kept -= frames.pop_front().map_or(0, |f| f.len());
                            }
                            data
                        }
                        Mode::Sse(s) => s.feed(data),
                    };
                    this.meter.capture(&out);
                    // A body with a known length may never be polled to `None`: end it here.
                    if this.inner.is_end_stream() {
                        this.end_of_upstream();
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Some(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::debug!(error = %e, "upstream body failed");
                    if let Some(err) = this.fail(
                        Outcome::UpstreamError,
                        "stream",
                        "The upstream stream broke before it was complete.",
                    ) {
                        return Poll::Ready(Some(Err(err)));
                    }
                }
                None => this.end_of_upstream(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            Mode::Json { .. } => self.inner.size_hint(),
            Mode::Sse(_) => SizeHint::default(),
        }
    }
}
