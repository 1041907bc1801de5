//! What every simulated answer shares with OpenAI's: headers, error bodies, the body type.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{Either, Full};
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub type MockBody = Either<Full<Bytes>, ChannelBody>;

/// A body fed by a task: how the simulator paces and breaks streams.
pub struct ChannelBody(pub mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

pub fn header_num(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn respond(
    status: StatusCode,
    body: Bytes,
    ctype: &'static str,
    rid: &str,
) -> Response<MockBody> {
    let mut r = Response::new(Either::Left(Full::new(body)));
    *r.status_mut() = status;
    common_headers(r.headers_mut(), ctype, rid);
    r
}

/// The headers OpenAI sends with every answer (values are plausible constants).
const OPENAI_HEADERS: [(&str, &str); 8] = [
    ("openai-processing-ms", "7"),
    ("openai-version", "2020-10-01"),
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-tokens", "29999000"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-reset-tokens", "2ms"),
];

pub fn common_headers(h: &mut HeaderMap, ctype: &'static str, rid: &str) {
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-request-id", v);
    }
    for (k, v) in OPENAI_HEADERS {
        h.insert(k, HeaderValue::from_static(v));
    }
}

/// OpenAI's error answer for a status.
pub fn error(status: u16, model: &str, rid: &str) -> Response<MockBody> {
    let (message, kind, code): (String, &str, Value) = match status {
        400 => ("Invalid request.".into(), "invalid_request_error", Value::Null),
        401 => ("Incorrect API key provided: sk-inv*****. You can find your API key at https://platform.openai.com/account/api-keys.".into(), "invalid_request_error", json!("invalid_api_key")),
        403 => ("You are not allowed to sample from this model".into(), "invalid_request_error", Value::Null),
        404 => (format!("The model `{model}` does not exist or you do not have access to it."), "invalid_request_error", json!("model_not_found")),
        429 => (format!("Rate limit reached for {model} on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in 6ms."), "requests", json!("rate_limit_exceeded")),
        503 => ("The engine is currently overloaded, please try again later".into(), "server_error", Value::Null),
        _ => ("The server had an error while processing your request. Sorry about that!".into(), "server_error", Value::Null),
    };
    let body = json!({ "error": { "message": message, "type": kind, "param": Value::Null, "code": code } });
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = respond(st, Bytes::from(body.to_string()), "application/json", rid);
    if status == 429 {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        r.headers_mut().insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
    }
    r
}
