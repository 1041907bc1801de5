//! [`MeteredBody`]: the response body wrapper. It forwards each upstream frame as it arrives,
//! reads usage on the way (the tail of a JSON body, or SSE events one by one), enforces the body's
//! idle, total and drain limits, and hands the request to its [`RequestMeter`] exactly once at the
//! end. A stream that breaks after it started ends with an SSE error event, never a fake `[DONE]`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::meter::{Outcome, RequestMeter};
use super::sse::SseScanner;
use super::{find_in_json, Usage};
use crate::error::error_body;
use crate::forward::client::UpstreamBody;

/// The body of every response tailor sends: a whole body it made, or an upstream's, metered.
/// The metered body is boxed: the response is moved through every layer from the attempt to
/// hyper's dispatcher, and at 700-odd bytes its state was most of what each move copied.
pub type RespBody = Either<Full<Bytes>, Box<MeteredBody<UpstreamBody>>>;

/// The error type of a response body tailor sends.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest tail of a JSON response kept to find its `usage` (OpenAI puts usage near the end).
const JSON_USAGE_WINDOW: usize = 1024 * 1024;

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
    /// Anything else (a passthrough file download): forwarded, not read.
    Opaque,
}

/// A shutdown's "the drain time is over" signal as response bodies read it: a flag each frame
/// checks without a lock (a `CancellationToken` locks to answer, and to be cloned), and a token
/// to wait on while the upstream has nothing to send.
#[derive(Debug, Default)]
pub struct DrainOver {
    over: AtomicBool,
    token: CancellationToken,
}

impl DrainOver {
    /// The drain time is over: open bodies end with an error.
    pub fn fire(&self) {
        self.over.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether [`DrainOver::fire`] was called.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Cancelled when [`DrainOver::fire`] is called.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// Time limits of a response body.
pub struct BodyLimits {
    /// Longest gap between two upstream reads.
    pub idle: Duration,
    /// End of the whole request (non-streaming requests), if any.
    pub deadline: Option<Instant>,
    /// Fires when a shutdown's drain time is over: the body ends with an error.
    pub drain: Arc<DrainOver>,
    /// Largest SSE event (`server.max_sse_event_bytes`): a larger one ends the stream.
    pub max_sse_event: usize,
}

/// The usage in the kept tail of a JSON body.
fn json_usage(frames: &VecDeque<Bytes>, kept: usize) -> Option<Usage> {
    match frames.len() {
        0 => None,
        1 => frames.front().and_then(|f| find_in_json(f)),
        _ => {
            let mut all = BytesMut::with_capacity(kept);
            for f in frames {
                all.extend_from_slice(f);
            }
            find_in_json(&all)
        }
    }
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
    drain: Arc<DrainOver>,
    /// What the body waits on while the upstream has nothing: the idle or total time limit and
    /// the drain. Made at the first wait, so a body that arrived whole registers no timer and
    /// takes no lock. The idle limit counts from the first wait after each frame (a client slow to
    /// take the frames does not make the upstream look stalled).
    waits: Option<Waits>,
    armed: bool,
}

/// Why a body ends before its upstream's end: the error kind counted, the message sent.
struct Ended {
    kind: &'static str,
    message: &'static str,
    outcome: Outcome,
}

impl Ended {
    const SHUTDOWN: Ended = Ended {
        kind: "shutdown",
        message: "tailor is shutting down and could not finish this response.",
        outcome: Outcome::Shutdown,
    };
}

/// See [`MeteredBody::waits`].
struct Waits {
    timer: Pin<Box<Sleep>>,
    drain: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<B> MeteredBody<B> {
    fn new(inner: B, mode: Mode, meter: RequestMeter, limits: BodyLimits) -> MeteredBody<B> {
        MeteredBody {
            inner,
            mode,
            meter,
            tail: None,
            first_frame_seen: false,
            ended: false,
            idle: limits.idle,
            deadline: limits.deadline,
            drain: limits.drain,
            waits: None,
            armed: false,
        }
    }

    /// The upstream has nothing now: arms the time limit (from now) unless it already runs since
    /// the last frame, and polls it and the drain. `Some(why)` when one fired.
    fn wait(&mut self, cx: &mut Context<'_>) -> Option<Ended> {
        let rearm = !std::mem::replace(&mut self.armed, true);
        let waits = match &mut self.waits {
            Some(w) => {
                if rearm {
                    w.timer
                        .as_mut()
                        .reset(next_timeout(self.idle, self.deadline));
                }
                w
            }
            None => self.waits.insert(Waits {
                timer: Box::pin(tokio::time::sleep_until(next_timeout(
                    self.idle,
                    self.deadline,
                ))),
                drain: Box::pin(self.drain.token().clone().cancelled_owned()),
            }),
        };
        if waits.drain.as_mut().poll(cx).is_ready() {
            return Some(Ended::SHUTDOWN);
        }
        if waits.timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        Some(match self.deadline {
            Some(d) if Instant::now() >= d => Ended {
                kind: "timeout",
                message: "The request took longer than the upstream's total time limit.",
                outcome: Outcome::UpstreamError,
            },
            _ => Ended {
                kind: "stall",
                message: "The upstream stopped sending for longer than its idle time limit.",
                outcome: Outcome::UpstreamError,
            },
        })
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
        let scanner = SseScanner::with_limit(strip_usage_chunk, limits.max_sse_event)
            .with_encoding(meter.encoding());
        MeteredBody::new(inner, Mode::Sse(scanner), meter, limits)
    }

    /// Wraps a passthrough body: read for usage at its end when it is JSON, else only passed on.
    pub fn passthrough(
        inner: B,
        meter: RequestMeter,
        json: bool,
        limits: BodyLimits,
    ) -> MeteredBody<B> {
        if json {
            MeteredBody::json(inner, meter, limits)
        } else {
            MeteredBody::new(inner, Mode::Opaque, meter, limits)
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let (usage, text) = match &self.mode {
            Mode::Sse(s) => (s.usage(), Some(s.text())),
            Mode::Json { frames, kept } => (json_usage(frames, *kept), None),
            Mode::Opaque => (None, None),
        };
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
                self.meter.metrics().upstream_error("stream");
                self.meter.stream_failed();
                outcome = Outcome::UpstreamError;
                self.tail = Some(with_error_event(
                    rest,
                    "The upstream stream ended before it was complete.",
                ));
            } else if !rest.is_empty() {
                // the client gets it: so do the subscribers that keep the answer
                self.meter.keep_answer(&rest);
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
            self.meter.metrics().upstream_error(kind);
            self.meter.stream_failed();
        }
        tracing::debug!(
            request_id = self.meter.request_id(),
            kind,
            "response body ended early"
        );
        // an SSE stream's unfinished last event is read first: its usage may be there
        let rest = match &mut self.mode {
            Mode::Json { .. } | Mode::Opaque => None,
            Mode::Sse(s) => Some(s.finish()),
        };
        if let Some(r) = &rest {
            self.meter.keep_answer(r);
        }
        self.finish(outcome);
        match rest {
            None => Some(message.to_owned().into()),
            Some(rest) => {
                self.tail = Some(with_error_event(rest, message));
                None
            }
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if matches!(&self.mode, Mode::Sse(s) if s.complete()) {
            // the stream's end marker already went to the client: an SDK stops reading at
            // `[DONE]` and may close before the upstream's end is polled, with the whole answer
            self.end_of_upstream();
        } else {
            // the client went away mid-body: record what was seen (usage, if it already passed)
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
            // checked on every frame, not only while waiting: an upstream that is always ahead of
            // the client never waits
            let polled = if this.drain.is_over() {
                Err(Ended::SHUTDOWN)
            } else {
                match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Pending => match this.wait(cx) {
                        None => return Poll::Pending,
                        Some(e) => Err(e),
                    },
                    Poll::Ready(frame) => Ok(frame),
                }
            };
            let frame = match polled {
                Ok(frame) => frame,
                Err(e) => match this.fail(e.outcome, e.kind, e.message) {
                    Some(err) => return Poll::Ready(Some(Err(err))),
                    None => continue,
                },
            };
            match frame {
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                    };
                    this.armed = false;
                    if !this.first_frame_seen {
                        this.first_frame_seen = true;
                        if matches!(this.mode, Mode::Sse(_)) {
                            this.meter
                                .metrics()
                                .ttft
                                .observe(this.meter.started().elapsed().as_secs_f64());
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
                        Mode::Opaque => data,
                    };
                    this.meter.keep_answer(&out);
                    if matches!(&this.mode, Mode::Sse(s) if s.overflowed()) {
                        // the events before it go out, then the error event; the rest is dropped
                        let _ = this.fail(
                            Outcome::UpstreamError,
                            "event_too_large",
                            "The upstream sent an event larger than tailor's limit (server.max_sse_event_bytes).",
                        );
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        continue;
                    }
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
            Mode::Json { .. } | Mode::Opaque => self.inner.size_hint(),
            Mode::Sse(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
