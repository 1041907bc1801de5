//! "A request finished": the one event metering announces. Side paths (the economics ledger,
//! a shadow pair, a capture sample) subscribe to it; the meter never calls them by name.
//!
//! A subscriber is either resolved once per config for an arm (route, model) and told of every
//! request that arm finishes, or attached to one request (a shadow copy, a capture sample).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Usage;

/// Largest answer the meter keeps (refcounted frames, not copies) for subscribers that want it.
pub const MAX_KEPT_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// How a request ended (the `outcome` label of `tailor_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: a success, or the upstream's own verdict on the request passed on as it is.
    Ok,
    ClientCancelled,
    /// No answer, a broken stream, retries and fallbacks spent, an upstream 5xx, or the upstream
    /// refusing tailor's own credentials (401 / 403: see `forward::policy::final_outcome`).
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

/// A try that failed before the first byte and what tailor did next, noted on the request's
/// record only when a subscriber asked for them (see [`Subscriber::wants_attempts`]).
#[derive(Debug, Clone)]
pub struct AttemptEvent {
    /// From the request's arrival.
    pub at: Duration,
    pub step: Step,
    /// Why the try failed (`policy::Failure::as_str`: a bounded set).
    pub reason: &'static str,
    /// The upstream's status, when it answered at all.
    pub status: Option<u16>,
}

/// What tailor did after a failed try.
#[derive(Debug, Clone)]
pub enum Step {
    /// Tried `model` again (`retry` is 1 for the first retry) after waiting `wait`.
    Retry {
        model: Arc<str>,
        retry: u32,
        wait: Duration,
    },
    /// Moved on from `from` to the next candidate `to`.
    Fallback { from: Arc<str>, to: Arc<str> },
}

/// How one routed request ended, after its metrics were recorded.
#[derive(Debug)]
pub struct Finished<'a> {
    pub route: &'a Arc<str>,
    /// The model that answered (the last one tried).
    pub model: &'a Arc<str>,
    pub request_id: &'a str,
    /// Answered successfully and completely (2xx, body ended cleanly).
    pub answered: bool,
    /// Failed by the upstream's or tailor's fault (a client hanging up is no failure).
    pub failed: bool,
    pub usage: Usage,
    /// The usage is tailor's estimate: the upstream sent none (hang-up, broken stream).
    pub estimated: bool,
    pub cost_pico: u128,
    /// From the request's arrival to its end.
    pub elapsed: Duration,
    /// What the client was sent, when a subscriber asked for it (see [`Subscriber::wants_answer`]).
    pub answer: &'a [Bytes],
    /// The answer was larger than [`MAX_KEPT_ANSWER_BYTES`]: `answer` holds only its start.
    pub answer_truncated: bool,
    /// The status the client was sent (499 when it hung up before any).
    pub status: u16,
    pub outcome: Outcome,
    /// Retries and fallbacks, in order, when a subscriber asked for them (see
    /// [`Subscriber::wants_attempts`]); empty otherwise.
    pub attempts: &'a [AttemptEvent],
}

/// Told once of each request it subscribed to.
pub trait Subscriber: Send + Sync {
    /// Whether [`Finished::answer`] must carry the bytes the client was sent.
    fn wants_answer(&self) -> bool {
        false
    }

    /// Whether [`Finished::attempts`] must carry the retries and fallbacks.
    fn wants_attempts(&self) -> bool {
        false
    }

    /// The request ended; called once, after its counters, cost and access line are recorded.
    fn finished(&self, f: &Finished<'_>);
}
