//! Metering: one [`RequestMeter`] per routed request, recording exactly once: when the response
//! body ends, or on drop (a client that hangs up is still counted), and [`MeteredBody`], the
//! response body wrapper that sees every frame as it passes.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::price::{Price, PICO_PER_USD};
use super::sse::SseScanner;
use super::{find_in_json, Usage};
use crate::error::error_body;
use crate::metrics::RouteModelMeter;

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ClientCancelled,
    UpstreamError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

/// Status recorded when the client went away before a response was sent (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// The metering state of one routed request.
pub struct RequestMeter {
    meter: RouteModelMeter,
    price: Price,
    started: Instant,
    request_id: String,
    upstream_request_id: Option<HeaderValue>,
    status: Option<StatusCode>,
    stream: bool,
    done: bool,
}

impl RequestMeter {
    /// Starts metering; the route's in-flight gauge goes up until the request is recorded.
    pub fn start(
        meter: RouteModelMeter,
        price: Price,
        started: Instant,
        stream: bool,
        request_id: String,
    ) -> RequestMeter {
        meter.in_flight.inc();
        RequestMeter {
            meter,
            price,
            started,
            request_id,
            upstream_request_id: None,
            status: None,
            stream,
            done: false,
        }
    }

    /// The request moved to another model (fallback): usage goes to that model's series.
    pub fn switch_model(&mut self, meter: RouteModelMeter, price: Price) {
        // in-flight is per route, and the route does not change
        self.meter = meter;
        self.price = price;
    }

    pub fn meter(&self) -> &RouteModelMeter {
        &self.meter
    }

    /// The response status is known.
    pub fn responded(&mut self, status: StatusCode, upstream_request_id: Option<HeaderValue>) {
        self.status = Some(status);
        self.upstream_request_id = upstream_request_id;
    }

    /// Records the request: counters, cost, duration, the access log line. Idempotent.
    pub fn finish(&mut self, usage: Option<Usage>, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = &self.meter;
        let status = match (self.status, outcome) {
            (Some(s), _) => s,
            (None, Outcome::ClientCancelled) => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            (None, _) => StatusCode::BAD_GATEWAY,
        };
        let u = usage.unwrap_or_default();
        let cost = self.price.cost_pico(&u);
        if usage.is_some() {
            m.record_usage(&u, cost);
        }
        m.record_request(status);
        let elapsed = self.started.elapsed();
        m.duration.observe(elapsed.as_secs_f64());
        m.in_flight.dec();
        tracing::info!(
            target: "tailor::access",
            request_id = %self.request_id,
            upstream_request_id = self.upstream_request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            route = %m.route,
            model = %m.model,
            status = status.as_u16(),
            stream = self.stream,
            outcome = outcome.as_str(),
            input_tokens = u.input,
            cached_tokens = u.cached,
            output_tokens = u.output,
            reasoning_tokens = u.reasoning,
            cost_usd = cost as f64 / PICO_PER_USD,
            duration_ms = elapsed.as_secs_f64() * 1e3,
        );
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        self.finish(None, Outcome::ClientCancelled);
    }
}

/// How the body is read for usage.
enum Mode {
    /// A JSON body: frames are kept (reference-counted, not copied) and scanned at the end.
    Json { frames: Vec<Bytes>, success: bool },
    /// An SSE stream, scanned event by event.
    Sse(SseScanner),
}

/// The response body wrapper: forwards frames as they arrive and meters the request.
pub struct MeteredBody<B> {
    inner: B,
    mode: Mode,
    meter: RequestMeter,
    /// An SSE error event to send after a stream broke, then end.
    tail: Option<Bytes>,
    first_frame_seen: bool,
    ended: bool,
}

impl<B> MeteredBody<B> {
    /// Wraps a JSON (non-streaming, or error) body.
    pub fn json(inner: B, meter: RequestMeter, success: bool) -> MeteredBody<B> {
        MeteredBody {
            inner,
            mode: Mode::Json {
                frames: Vec::new(),
                success,
            },
            meter,
            tail: None,
            first_frame_seen: false,
            ended: false,
        }
    }

    /// Wraps an SSE body; `strip_usage_chunk` drops the usage chunk the client did not ask for.
    pub fn sse(inner: B, meter: RequestMeter, strip_usage_chunk: bool) -> MeteredBody<B> {
        MeteredBody {
            inner,
            mode: Mode::Sse(SseScanner::new(strip_usage_chunk)),
            meter,
            tail: None,
            first_frame_seen: false,
            ended: false,
        }
    }

    fn usage(&self) -> Option<Usage> {
        match &self.mode {
            Mode::Json {
                frames,
                success: true,
            } => match frames.as_slice() {
                [] => None,
                [one] => find_in_json(one),
                many => {
                    let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
                    for f in many {
                        all.extend_from_slice(f);
                    }
                    find_in_json(&all)
                }
            },
            Mode::Json { success: false, .. } => None,
            Mode::Sse(s) => s.usage(),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let usage = self.usage();
        self.meter.finish(usage, outcome);
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

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // the client went away mid-body: record what was seen (usage, if it already passed)
        if !self.ended {
            self.ended = true;
            self.finish(Outcome::ClientCancelled);
        }
    }
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

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = this.tail.take() {
                return Poll::Ready(Some(Ok(Frame::data(t))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                    };
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
                        Mode::Json { frames, .. } => {
                            frames.push(data.clone());
                            data
                        }
                        Mode::Sse(s) => s.feed(data),
                    };
                    // A body with a known length may never be polled to `None`: end it here.
                    if this.inner.is_end_stream() {
                        this.end_of_upstream();
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Some(Err(e)) => {
                    this.meter.meter().upstream_error("stream");
                    tracing::debug!(error = %e, "upstream body failed");
                    this.ended = true;
                    this.finish(Outcome::UpstreamError);
                    match &mut this.mode {
                        // A JSON body cannot be mended: abort, so the client sees a broken body.
                        Mode::Json { .. } => return Poll::Ready(Some(Err(e))),
                        Mode::Sse(s) => {
                            let rest = s.finish();
                            this.tail = Some(with_error_event(
                                rest,
                                "The upstream stream broke before it was complete.",
                            ));
                        }
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
