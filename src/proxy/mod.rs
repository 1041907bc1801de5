//! The request path as one `tower::Service`: path and method dispatch, then the steps before
//! any body is read, then a routed request's own steps ([`pipeline`]).
//!
//! ```text
//! request ─▶ header limits (431) ─▶ client key (401)            auth.rs
//!         ─▶ GET /v1/models[/{id}]                               models.rs
//!         ─▶ POST /v1/feedback (a score for an answer, any replica)  feedback.rs
//!         ─▶ POST /v1/{chat/completions,completions,embeddings,responses}
//!              ─▶ server slot ─▶ body ─▶ view ─▶ classify ─▶ meter ─▶ forward   pipeline.rs
//!         ─▶ any other /v1 path, with `passthrough:`: forwarded as it is   passthrough.rs
//!         ─▶ anything else: 404 / 405
//! ```
//!
//! Every error before forwarding becomes its OpenAI-shaped response here, in [`reject`], where it
//! is counted and logged once.

mod auth;
mod body;
mod feedback;
mod models;
mod passthrough;
mod pipeline;
mod upload;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use tokio::time::Instant;

pub use self::body::ReqBody;
use crate::error::ProxyError;
use crate::request::Endpoint;
use crate::state::Shared;
use crate::telemetry::Tracer;
use crate::usage::body::RespBody;

/// The proxy as a tower service.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Proxy {
        Proxy { shared }
    }
}

impl<B: ReqBody> tower::Service<Request<B>> for Proxy {
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        handle(self.shared.clone(), req)
    }
}

/// A request's answer to come.
pub type Answer = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>>;

/// An answer ready now.
fn ready(resp: Response<RespBody>) -> Answer {
    Box::pin(std::future::ready(Ok(resp)))
}

/// What the span of a refused API request needs, taken before the request is consumed (only
/// with tracing on).
struct RejectTrace {
    tracer: Arc<Tracer>,
    /// The client's `traceparent` and `tracestate`.
    headers: HeaderMap,
    endpoint: Endpoint,
    started: Instant,
}

impl RejectTrace {
    fn new(tracer: &Arc<Tracer>, headers: &HeaderMap, endpoint: Endpoint) -> RejectTrace {
        let mut keep = HeaderMap::new();
        for name in ["traceparent", "tracestate"] {
            for v in headers.get_all(name) {
                keep.append(name, v.clone());
            }
        }
        RejectTrace {
            tracer: tracer.clone(),
            headers: keep,
            endpoint,
            started: Instant::now(),
        }
    }
}

/// Turns a tailor error into its response, counted and logged once, here; traced when tracing
/// is on and it was an API request.
fn reject(
    shared: &Shared,
    method: &Method,
    path: &str,
    err: ProxyError,
    trace: Option<&RejectTrace>,
) -> Response<RespBody> {
    if let Some(t) = trace {
        let model = match &err {
            ProxyError::Unrouted(m) => Some(m.as_str()),
            _ => None,
        };
        t.tracer.rejected(
            &t.headers,
            || shared.next_random(),
            t.endpoint,
            model,
            err.status().as_u16(),
            err.kind(),
            t.started.elapsed(),
        );
    }
    if matches!(err, ProxyError::Unrouted(_)) {
        shared.metrics.unrouted.inc();
    } else {
        shared
            .metrics
            .rejected
            .with_label_values(&[err.kind()])
            .inc();
    }
    let path: String = path.chars().take(200).collect();
    tracing::info!(target: "tailor::access", %method, path, status = err.status().as_u16(), error = err.kind(), detail = %err, "rejected");
    err.into_response::<Full<Bytes>>().map(Either::Left)
}

/// Serves one request: answered at once when no body is needed (the models, and every refusal
/// before a body), else by a future of that path alone, on the heap. A future is copied whole
/// each time it moves, and one holding every path's state was copied three times per request.
fn handle<B: ReqBody>(shared: Arc<Shared>, req: Request<B>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let live = shared.live.load_full();
    let suffix = path.strip_prefix("/v1").filter(|s| s.starts_with('/'));
    // one branch when tracing is off
    let trace = match (&live.tracer, suffix.and_then(Endpoint::from_suffix)) {
        (Some(t), Some(endpoint)) if method == Method::POST => {
            Some(RejectTrace::new(t, req.headers(), endpoint))
        }
        _ => None,
    };
    let client = match auth::headers_within(req.headers(), &live.config) {
        Err(e) => return ready(reject(&shared, &method, &path, e, trace.as_ref())),
        Ok(()) if suffix.is_none() => None,
        Ok(()) => match auth::authenticate(&live.config, req.headers()) {
            Some(c) => Some(c),
            None => {
                let err = ProxyError::Unauthorized;
                return ready(reject(&shared, &method, &path, err, trace.as_ref()));
            }
        },
    };
    let routed = suffix.and_then(Endpoint::from_suffix);
    let err = match (suffix, routed, &method, client) {
        (Some("/models"), _, &Method::GET, _) => return ready(json_response(models::list(&live))),
        (Some(s), _, &Method::GET, _) if s.starts_with("/models/") => {
            let id = &s["/models/".len()..];
            match models::get(&live, id) {
                Some(body) => return ready(json_response(body)),
                None => ProxyError::UnknownModel(id.chars().take(256).collect()),
            }
        }
        (Some("/feedback"), _, &Method::POST, Some(_)) => {
            return Box::pin(async move {
                let (parts, body) = req.into_parts();
                let answer = match body::read_body(body, &parts.headers, feedback::MAX_BODY).await {
                    Ok(b) => {
                        feedback::record(&live, &shared.metrics, &shared.keep.ledger, &b).await
                    }
                    Err(e) => Err(e),
                };
                Ok(match answer {
                    Ok(answer) => json_response(answer),
                    Err(e) => reject(&shared, &method, &path, e, trace.as_ref()),
                })
            });
        }
        (_, Some(ep), &Method::POST, Some(client)) => {
            return crate::heap::pinned(|| async move {
                Ok(match pipeline::run(&shared, live, ep, client, req).await {
                    Ok(resp) => resp,
                    Err(e) => reject(&shared, &method, &path, e, trace.as_ref()),
                })
            });
        }
        // the rest of the API (and other methods on the routed paths: GET /v1/chat/completions
        // lists stored completions), when `passthrough:` is configured
        // (/v1/feedback is tailor's own, whatever the method)
        (Some(s), _, _, Some(client)) if s != "/feedback" && live.config.passthrough.is_some() => {
            let suffix = s.to_owned();
            return Box::pin(async move {
                Ok(
                    match passthrough::run(&shared, live, client, &suffix, req).await {
                        Ok(resp) => resp,
                        Err(e) => reject(&shared, &method, &path, e, trace.as_ref()),
                    },
                )
            });
        }
        (Some(s), routed, m, Some(_)) if routed.is_some() || s == "/models" => {
            ProxyError::MethodNotAllowed {
                method: m.to_string(),
                path: path.clone(),
            }
        }
        _ => ProxyError::NotFound {
            method: method.to_string(),
            path: path.chars().take(200).collect(),
        },
    };
    ready(reject(&shared, &method, &path, err, trace.as_ref()))
}

fn json_response(body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(Either::Left(Full::new(body)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    //! Service tests: the proxy called as a `tower::Service`, no listener involved.
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use http::{HeaderValue, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const CFG: &str = r#"
upstreams:
  down: { url: "http://127.0.0.1:1/v1", auth: none }
  keyless: { url: "http://127.0.0.1:1/v1", api_key_env: TAILOR_UNSET_KEY }
models:
  m: { upstream: down, id: gpt-4o-2024-08-06 }
  k: { upstream: keyless, id: gpt-4o-2024-08-06 }
routes:
  - { name: r, match: { model: [gpt-4o, alias] }, split: [{ model: m }] }
  - { name: nokey, match: { model: nokey }, split: [{ model: k }] }
"#;

    fn proxy() -> (Proxy, Arc<Metrics>) {
        let cfg = Config::from_yaml(CFG, &|_| None).unwrap();
        let metrics = Metrics::new().unwrap();
        (
            Proxy::new(Shared::new(cfg, metrics.clone()).unwrap()),
            metrics,
        )
    }

    async fn call(
        p: &Proxy,
        method: Method,
        path: &str,
        body: &str,
    ) -> (StatusCode, HeaderValue, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let resp = p.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let retry = resp
            .headers()
            .get("x-should-retry")
            .cloned()
            .unwrap_or(HeaderValue::from_static(""));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_before_routing() {
        let (p, metrics) = proxy();
        let cases = [
            (Method::POST, "/v1/chat/completions", "{", 400, None),
            (
                Method::POST,
                "/v1/chat/completions",
                r#"{"model":"gpt-4o"}"#,
                400,
                Some("missing_required_parameter"),
            ),
            (
                Method::POST,
                "/v1/chat/completions",
                r#"{"model":"x","messages":[]}"#,
                404,
                Some("model_not_found"),
            ),
            (
                Method::POST,
                "/v1/embeddings",
                r#"{"model":"x","input":"a"}"#,
                404,
                Some("model_not_found"),
            ),
            (
                Method::PUT,
                "/v1/chat/completions",
                "",
                405,
                Some("method_not_allowed"),
            ),
            (
                Method::POST,
                "/v1/models",
                "",
                405,
                Some("method_not_allowed"),
            ),
            (
                Method::GET,
                "/v2/chat/completions",
                "",
                404,
                Some("unknown_url"),
            ),
            (
                Method::GET,
                "/v1/models/nope",
                "",
                404,
                Some("model_not_found"),
            ),
        ];
        for (m, path, body, status, code) in cases {
            let (s, retry, v) = call(&p, m.clone(), path, body).await;
            assert_eq!(s.as_u16(), status, "{m} {path} {body}: {v}");
            assert_eq!(v["error"]["code"].as_str(), code, "{v}");
            assert_eq!(retry, "false");
        }
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(text.contains("tailor_unrouted_requests_total 2"), "{text}");
        assert!(
            text.contains("tailor_rejected_requests_total{reason=\"unknown_model\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn models_list() {
        let (p, _) = proxy();
        let (s, _, v) = call(&p, Method::GET, "/v1/models", "").await;
        assert_eq!(s, StatusCode::OK);
        let ids: Vec<_> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o", "alias", "nokey"]);
        assert_eq!(v["data"][0]["object"], "model");
    }

    #[tokio::test]
    async fn unreachable_upstream_and_missing_key() {
        let (p, metrics) = proxy();
        let (s, retry, v) = call(
            &p,
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"alias","messages":[]}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
        assert_eq!(v["error"]["code"], "upstream_unavailable");
        assert_eq!(retry, "false");
        let (s, _, v) = call(
            &p,
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"nokey","messages":[]}"#,
        )
        .await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TAILOR_UNSET_KEY"));
        let text = String::from_utf8(metrics.encode()).unwrap();
        for want in [
            "tailor_requests_total{client=\"anonymous\",code=\"502\",endpoint=\"chat\",model=\"m\",outcome=\"upstream_error\",route=\"r\"} 1",
            // the first try and two retries (retries.max defaults to 2)
            "tailor_upstream_errors_total{kind=\"connect\",model=\"m\",route=\"r\"} 3",
            "tailor_requests_total{client=\"anonymous\",code=\"500\",endpoint=\"chat\",model=\"k\",outcome=\"upstream_error\",route=\"nokey\"} 1",
            "tailor_in_flight_requests{route=\"r\"} 0",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
    }
}
