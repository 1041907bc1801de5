//! What one try's result means for the request, decided by pure functions of the upstream's
//! answer: final (the client gets it as it is), worth another try of the same model, or a reason
//! to move on to the next model. Table-tested below; the attempt loop (attempt.rs) acts on them.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

use crate::config::Auth;
use crate::usage::meter::Outcome;

/// A try that got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// No connection could be made.
    Connect,
    /// No response headers within the time limit.
    Timeout,
    /// The connection broke, or the request could not be built.
    Transport,
}

impl NoAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            NoAnswer::Connect => "connect",
            NoAnswer::Timeout => "timeout",
            NoAnswer::Transport => "transport",
        }
    }
}

/// Why a model could not serve the request (the `reason` label of `tailor_fallbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NoAnswer(NoAnswer),
    /// The upstream's key variable is not set: no try was made.
    NoKey,
    /// 404 `model_not_found`: a deleted fine-tune.
    ModelNotFound,
    /// 429.
    RateLimited,
    /// 5xx, 408, 409.
    ServerError,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoAnswer(n) => n.as_str(),
            Failure::NoKey => "no_key",
            Failure::ModelNotFound => "model_not_found",
            Failure::RateLimited => "rate_limited",
            Failure::ServerError => "server_error",
        }
    }

    /// Whether the same model is worth another try (after a backoff, or its `retry-after`).
    pub fn retry_same(self) -> bool {
        match self {
            Failure::NoAnswer(_) | Failure::RateLimited | Failure::ServerError => true,
            // a deleted model stays deleted, a missing key stays missing: straight to the next
            Failure::ModelNotFound | Failure::NoKey => false,
        }
    }
}

/// What a non-2xx answer means: `None` when it is final (the upstream judged the request itself
/// invalid, 400, 401, 403...: it would fail the same way on another model), else why the model
/// could not serve it.
pub fn judge(status: StatusCode, body: &[u8]) -> Option<Failure> {
    match status.as_u16() {
        404 if memchr::memmem::find(body, b"model_not_found").is_some() => {
            Some(Failure::ModelNotFound)
        }
        429 => Some(Failure::RateLimited),
        408 | 409 | 500..=u16::MAX => Some(Failure::ServerError),
        0..=407 | 410..=428 | 430..=499 => None,
    }
}

/// The outcome of a final non-2xx answer (one [`judge`] passes on as it is, or a passthrough
/// answer). A 5xx is the upstream's failure, however cleanly its body ends. 401 and 403 reject
/// tailor's own credentials (`api_key_env`, or none): a wrong or revoked upstream key is an
/// upstream error, the first thing an operator alerts on. With `auth: passthrough` they reject
/// the caller's key, and any other 4xx judges the request itself: the client's doing, `ok`.
pub fn final_outcome(status: StatusCode, auth: &Auth) -> Outcome {
    match (status.as_u16(), auth) {
        (500..=599, _) => Outcome::UpstreamError,
        (401 | 403, Auth::Key { .. } | Auth::None) => Outcome::UpstreamError,
        _ => Outcome::Ok,
    }
}

/// Bounded label values for `tailor_upstream_errors_total{kind}` of an answer's status.
pub fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limited",
        401 | 403 => "auth",
        404 => "not_found",
        400..=499 => "client_error",
        0..=399 | 500..=u16::MAX => "server_error",
    }
}

/// The wait a 429 asks for: `retry-after-ms` if usable, else `retry-after` in seconds (OpenAI
/// sends whole seconds). A value that is not a finite, representable, non-negative number is
/// ignored (then the usual backoff applies): `retry-after: 1e20` must not overflow a `Duration`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let secs = |s: f64| Duration::try_from_secs_f64(s).ok();
    num("retry-after-ms")
        .and_then(|ms| secs(ms / 1000.0))
        .or_else(|| num(RETRY_AFTER.as_str()).and_then(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn answers_are_judged_by_status_and_body() {
        let nf = br#"{"error": {"code": "model_not_found"}}"#.as_slice();
        let rows: [(u16, &[u8], Option<Failure>); 10] = [
            (429, b"", Some(Failure::RateLimited)),
            (502, b"", Some(Failure::ServerError)),
            (500, b"", Some(Failure::ServerError)),
            (408, b"", Some(Failure::ServerError)),
            (409, b"", Some(Failure::ServerError)),
            (404, nf, Some(Failure::ModelNotFound)),
            (404, br#"{"error":{"code":"unknown_url"}}"#, None),
            (401, b"", None),
            (400, b"", None),
            (403, b"", None),
        ];
        for (status, body, want) in rows {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(judge(s, body), want, "{status}");
        }
        assert!(Failure::RateLimited.retry_same());
        assert!(Failure::NoAnswer(NoAnswer::Timeout).retry_same());
        assert!(!Failure::ModelNotFound.retry_same());
        assert!(!Failure::NoKey.retry_same());
        assert_eq!(Failure::NoAnswer(NoAnswer::Connect).as_str(), "connect");
    }

    #[test]
    fn a_rejected_upstream_key_is_an_upstream_error_a_rejected_caller_key_is_not() {
        let key = Auth::Key {
            env: "K".into(),
            key: None,
        };
        for (status, auth, want) in [
            (401, &key, Outcome::UpstreamError),
            (403, &key, Outcome::UpstreamError),
            (401, &Auth::None, Outcome::UpstreamError),
            (401, &Auth::Passthrough, Outcome::Ok),
            (403, &Auth::Passthrough, Outcome::Ok),
            (400, &key, Outcome::Ok),
            (404, &key, Outcome::Ok),
            (422, &key, Outcome::Ok),
            (500, &key, Outcome::UpstreamError),
            (503, &Auth::Passthrough, Outcome::UpstreamError),
        ] {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(final_outcome(s, auth), want, "{status} {auth:?}");
        }
    }

    #[test]
    fn error_kinds_are_bounded() {
        for (status, kind) in [
            (429, "rate_limited"),
            (401, "auth"),
            (403, "auth"),
            (404, "not_found"),
            (422, "client_error"),
            (503, "server_error"),
        ] {
            assert_eq!(error_kind(StatusCode::from_u16(status).unwrap()), kind);
        }
    }

    #[test]
    fn retry_after_never_panics_and_prefers_ms() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert_eq!(
            retry_after(&h(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "2"), ("retry-after-ms", "150")])),
            Some(Duration::from_millis(150))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", " 0.5 ")])),
            Some(Duration::from_millis(500))
        );
        for bad in ["1e20", "1e300", "-1", "NaN", "inf", "soon", ""] {
            assert_eq!(retry_after(&h(&[("retry-after", bad)])), None, "{bad}");
        }
        for bad in ["1e300", "-1", "NaN", "inf", "soon", ""] {
            assert_eq!(retry_after(&h(&[("retry-after-ms", bad)])), None, "{bad}");
        }
        // huge but representable: the cap decides (the attempt loop moves on)
        assert!(retry_after(&h(&[("retry-after-ms", "1e20")]))
            .is_some_and(|d| d.as_secs() > 1e16 as u64));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
