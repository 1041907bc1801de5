//! The one error type of the request path, and its mapping to OpenAI-shaped JSON.
//!
//! Every error a client sees is `{"error":{"message","type","param","code"}}` with all four keys,
//! so the official SDKs raise the exception they would raise against OpenAI. The status code is
//! decided in one exhaustive `match` ([`ProxyError::status`]), grouped by who is at fault.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

/// Why a request could not be served. Grouped by fault: the client, the upstream, or tailor.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // ---- the client's fault (4xx) ----
    /// The body is not JSON, or not a JSON object.
    #[error("We could not parse the JSON body of your request. ({0})")]
    InvalidJson(String),
    /// A required field is absent or has the wrong type.
    #[error("{message}")]
    InvalidField {
        param: &'static str,
        code: &'static str,
        message: String,
    },
    /// The body is larger than `server.max_body_bytes`.
    #[error("Request body too large: the limit is {limit} bytes.")]
    BodyTooLarge { limit: usize },
    /// No route matches the request and there is no catch-all.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    Unrouted(String),
    /// `GET /v1/models/{id}` for a name no route lists.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    /// `clients:` is configured and the request has no valid key.
    #[error("Incorrect API key provided. tailor expects `Authorization: Bearer <key>` with a key from its `clients:` list.")]
    Unauthorized,
    /// More headers, or larger ones, than `server.max_header_count` / `max_header_bytes` allow.
    #[error("Request headers too large: at most {count} headers and {bytes} bytes.")]
    HeadersTooLarge { count: usize, bytes: usize },
    /// A concurrency limit is full (`scope`: `server` or the route's name).
    #[error("Too many requests in flight ({scope} limit): retry shortly.")]
    Overloaded { scope: String },
    /// A dollar budget of `limits:` is spent for its window.
    #[error("Budget `{limit}` is spent for this {per}: it resets in {reset_secs} s.")]
    BudgetExceeded {
        limit: String,
        per: &'static str,
        reset_secs: u64,
    },
    /// A requests- or tokens-per-minute limit of `limits:` is reached (`what`: requests | tokens).
    #[error("Rate limit `{limit}` reached on {what} per min: limit {max}, used {used}, requested {requested}. Retry in {reset_secs} s.")]
    RateLimited {
        /// The request alone is larger than the limit: a retry cannot help.
        never_fits: bool,
        limit: String,
        what: &'static str,
        max: u64,
        used: u64,
        requested: u64,
        reset_secs: u64,
        /// OpenAI's `x-ratelimit-*` headers for the limits that matched.
        headers: Vec<(&'static str, String)>,
    },
    /// The shared store (Redis) is down or slow and `shared_state.on_error` is `deny`.
    #[error("The shared budget store is unavailable: retry shortly.")]
    SharedStateUnavailable,
    /// The path is not one tailor serves.
    #[error("Invalid URL ({method} {path})")]
    NotFound { method: String, path: String },
    /// A passthrough path the passthrough upstream cannot serve (Azure: deployment paths).
    #[error("{message}")]
    NotForwarded { message: String },
    /// The path exists but not with this method.
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed { method: String, path: String },

    // ---- the upstream's fault (5xx) ----
    /// Could not connect to, or lost, the upstream before a response started.
    #[error("upstream `{upstream}` is unreachable: {reason}")]
    UpstreamUnavailable { upstream: String, reason: String },
    /// The upstream's API key variable was not set when the config was loaded.
    #[error("tailor has no API key for upstream `{upstream}`: set the environment variable {env}")]
    UpstreamKeyMissing { upstream: String, env: String },
    /// The upstream did not answer within the time limit.
    #[error("upstream `{upstream}` timed out before responding")]
    UpstreamTimeout { upstream: String },

    // ---- tailor's fault (5xx) ----
    /// A bug or an impossible state; the message is logged, the client gets a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The HTTP status: decided here, in one exhaustive match.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::InvalidJson(_) | ProxyError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Unrouted(_)
            | ProxyError::UnknownModel(_)
            | ProxyError::NotFound { .. }
            | ProxyError::NotForwarded { .. } => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Overloaded { .. }
            | ProxyError::BudgetExceeded { .. }
            | ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::SharedStateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamKeyMissing { .. } | ProxyError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Bounded label value naming the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::InvalidJson(_) => "invalid_json",
            ProxyError::InvalidField { .. } => "invalid_field",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::Unrouted(_) => "unrouted",
            ProxyError::UnknownModel(_) => "unknown_model",
            ProxyError::NotFound { .. } | ProxyError::NotForwarded { .. } => "not_found",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::BudgetExceeded { .. } => "budget_exceeded",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::SharedStateUnavailable => "shared_state_unavailable",
            ProxyError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamKeyMissing { .. } => "upstream_key_missing",
            ProxyError::Internal(_) => "internal",
        }
    }

    /// OpenAI's `type`, `param` and `code` for this error.
    fn openai_fields(&self) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        match self {
            ProxyError::InvalidJson(_) => ("invalid_request_error", None, None),
            ProxyError::InvalidField { param, code, .. } => {
                ("invalid_request_error", Some(*param), Some(*code))
            }
            ProxyError::BodyTooLarge { .. } => {
                ("invalid_request_error", None, Some("request_too_large"))
            }
            ProxyError::Unrouted(_) | ProxyError::UnknownModel(_) => (
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ProxyError::NotFound { .. } | ProxyError::NotForwarded { .. } => {
                ("invalid_request_error", None, Some("unknown_url"))
            }
            ProxyError::Unauthorized => ("invalid_request_error", None, Some("invalid_api_key")),
            ProxyError::HeadersTooLarge { .. } => (
                "invalid_request_error",
                None,
                Some("request_header_fields_too_large"),
            ),
            ProxyError::Overloaded { .. } => {
                ("rate_limit_error", None, Some("concurrency_limit_exceeded"))
            }
            ProxyError::MethodNotAllowed { .. } => {
                ("invalid_request_error", None, Some("method_not_allowed"))
            }
            ProxyError::BudgetExceeded { .. } => {
                ("insufficient_quota", None, Some("budget_exceeded"))
            }
            ProxyError::RateLimited { what, .. } => (what, None, Some("rate_limit_exceeded")),
            ProxyError::SharedStateUnavailable => {
                ("server_error", None, Some("shared_state_unavailable"))
            }
            ProxyError::UpstreamUnavailable { .. } => {
                ("upstream_error", None, Some("upstream_unavailable"))
            }
            ProxyError::UpstreamTimeout { .. } => {
                ("upstream_error", None, Some("upstream_timeout"))
            }
            ProxyError::UpstreamKeyMissing { .. } => {
                ("server_error", None, Some("upstream_key_missing"))
            }
            ProxyError::Internal(_) => ("server_error", None, Some("internal_error")),
        }
    }

    /// The message the client sees. Internal details stay in the log.
    fn public_message(&self) -> String {
        match self {
            ProxyError::Internal(_) => "The proxy hit an internal error.".to_owned(),
            other => other.to_string(),
        }
    }

    /// The JSON body, OpenAI-shaped with all four keys present.
    pub fn body(&self) -> Bytes {
        let (kind, param, code) = self.openai_fields();
        error_body(&self.public_message(), kind, param, code)
    }

    /// The full HTTP response. Errors from tailor itself tell the SDK not to retry what cannot
    /// succeed on a retry (client errors).
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let status = self.status();
        let mut resp = Response::new(B::from(self.body()));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let retry_after = |h: &mut http::HeaderMap, secs: u64| {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        };
        if let ProxyError::Overloaded { .. } | ProxyError::SharedStateUnavailable = self {
            // transient: the SDK's retry with backoff is what we want
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        } else if let ProxyError::RateLimited {
            reset_secs,
            headers: limits,
            never_fits,
            ..
        } = &self
        {
            // the SDK waits retry-after and tries again: right for a rate within its window,
            // not for a request larger than the whole rate
            retry_after(headers, *reset_secs);
            if *never_fits {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            for (k, v) in limits {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.insert(*k, v);
                }
            }
        } else if let ProxyError::BudgetExceeded { reset_secs, .. } = self {
            // a spent budget stays spent until its window resets: no automatic retry
            retry_after(headers, reset_secs);
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        } else {
            // a client error would fail again; an upstream failure was already retried by tailor
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}

/// `{"error":{"message":..,"type":..,"param":..,"code":..}}` as bytes.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let v = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<ProxyError> {
        vec![
            ProxyError::InvalidJson("x".into()),
            ProxyError::InvalidField {
                param: "messages",
                code: "missing_required_parameter",
                message: "m".into(),
            },
            ProxyError::BodyTooLarge { limit: 10 },
            ProxyError::Unrouted("gpt-9".into()),
            ProxyError::UnknownModel("gpt-9".into()),
            ProxyError::Unauthorized,
            ProxyError::HeadersTooLarge { count: 1, bytes: 2 },
            ProxyError::Overloaded {
                scope: "server".into(),
            },
            ProxyError::NotFound {
                method: "GET".into(),
                path: "/x".into(),
            },
            ProxyError::MethodNotAllowed {
                method: "GET".into(),
                path: "/v1/chat/completions".into(),
            },
            ProxyError::NotForwarded {
                message: "not on Azure".into(),
            },
            ProxyError::UpstreamUnavailable {
                upstream: "openai".into(),
                reason: "refused".into(),
            },
            ProxyError::UpstreamTimeout {
                upstream: "openai".into(),
            },
            ProxyError::UpstreamKeyMissing {
                upstream: "azure".into(),
                env: "AZURE_KEY".into(),
            },
            ProxyError::Internal("secret detail".into()),
            ProxyError::BudgetExceeded {
                limit: "team".into(),
                per: "day",
                reset_secs: 60,
            },
            ProxyError::RateLimited {
                never_fits: false,
                limit: "tpm".into(),
                what: "tokens",
                max: 10,
                used: 9,
                requested: 2,
                reset_secs: 3,
                headers: vec![("x-ratelimit-limit-tokens", "10".into())],
            },
            ProxyError::SharedStateUnavailable,
        ]
    }

    #[test]
    fn every_error_has_four_keys_and_a_fitting_status() {
        let expected = [
            400, 400, 413, 404, 404, 401, 431, 429, 404, 405, 404, 502, 504, 500, 500, 429, 429,
            503,
        ];
        for (e, code) in all().into_iter().zip(expected) {
            assert_eq!(e.status().as_u16(), code, "{e:?}");
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            let obj = v["error"].as_object().unwrap();
            for k in ["message", "type", "param", "code"] {
                assert!(obj.contains_key(k), "{k} missing in {v}");
            }
            assert!(obj["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn internal_details_are_not_shown() {
        let b = ProxyError::Internal("secret detail".into()).body();
        assert!(!String::from_utf8_lossy(&b).contains("secret"));
    }

    #[test]
    fn unrouted_is_model_not_found() {
        let v: serde_json::Value =
            serde_json::from_slice(&ProxyError::Unrouted("gpt-9".into()).body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
    }
}
