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
}

/// Told once of each request it subscribed to.
pub trait Subscriber: Send + Sync {
    /// Whether [`Finished::answer`] must carry the bytes the client was sent.
    fn wants_answer(&self) -> bool {
        false
    }

    /// The request ended; called once, after its counters, cost and access line are recorded.
    fn finished(&self, f: &Finished<'_>);
}
