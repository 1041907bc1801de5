//! The upstream side: one HTTP client, and how a request is addressed and authenticated for an
//! upstream (OpenAI-style or Azure), which headers cross the proxy in each direction, and which
//! upstream failures move a request to its fallback model.

use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{Auth, Model, Upstream, UpstreamKind};
use crate::error::ProxyError;
use crate::request::Endpoint;

/// The shared upstream client (HTTP/1.1 and HTTP/2 over TLS, or plain HTTP), pooled.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a pooled client. TCP_NODELAY is on so SSE events are not held back by Nagle. The client
/// follows no redirects: where a request goes is decided by the config alone.
/// Fails only if the TLS provider supports no protocol version (a build defect).
pub fn client(connect_timeout: Duration) -> Result<HttpClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

thread_local! {
    /// Which API worker thread this is (0 outside them: admin, tests, the simulator).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as API worker `i`: its requests use the `i`th pool set.
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// The upstream clients, one per upstream for each API worker thread. A pooled connection is
/// driven by a task on the thread that opened it; each worker having its own pools keeps a
/// request and its upstream connection on one thread (no cross-thread wake-ups per request).
pub struct Pools(Vec<Vec<HttpClient>>);

impl Pools {
    /// Clients for `workers` threads, each with every upstream's connect timeout.
    pub fn build(upstreams: &[Upstream], workers: usize) -> Result<Pools, rustls::Error> {
        (0..workers.max(1))
            .map(|_| {
                upstreams
                    .iter()
                    .map(|u| client(u.timeouts.connect))
                    .collect()
            })
            .collect::<Result<_, _>>()
            .map(Pools)
    }

    /// The calling worker's client for upstream `i`.
    pub fn get(&self, upstream: usize) -> &HttpClient {
        let set = &self.0[WORKER.with(Cell::get) % self.0.len()];
        &set[upstream]
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) are never forwarded, in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(name)
        || name == header::UPGRADE
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// Request headers that tailor sets itself or must not pass on.
fn drop_request_header(name: &HeaderName, passthrough: bool) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        // tailor must read the response to meter it: ask for it uncompressed
        || name == header::ACCEPT_ENCODING
        || ((name == header::AUTHORIZATION || name == API_KEY) && !passthrough)
        || name.as_str().starts_with("x-tailor-")
}

/// Builds the upstream request for `model` on `upstream`.
pub fn upstream_request(
    upstream: &Upstream,
    model: &Model,
    endpoint: Endpoint,
    query: Option<&str>,
    client_headers: &HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ProxyError> {
    let uri = match upstream.kind {
        UpstreamKind::Openai => match query {
            Some(q) => format!("{}{}?{q}", upstream.url, endpoint.suffix()),
            None => format!("{}{}", upstream.url, endpoint.suffix()),
        },
        UpstreamKind::Azure => format!(
            "{}/openai/deployments/{}{}?api-version={}",
            upstream.url,
            model.id,
            endpoint.suffix(),
            upstream.api_version.as_deref().unwrap_or_default()
        ),
    };
    let passthrough = matches!(upstream.auth, Auth::Passthrough);
    let mut req = Request::post(&uri)
        .body(Full::new(body))
        .map_err(|e| ProxyError::Internal(format!("upstream URL `{uri}`: {e}")))?;
    let headers = req.headers_mut();
    headers.reserve(client_headers.len() + 2);
    for (name, value) in client_headers {
        if !is_hop_by_hop(name, client_headers) && !drop_request_header(name, passthrough) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Auth::Key { key: Some(key), .. } = &upstream.auth {
        let (name, value) = match upstream.kind {
            UpstreamKind::Openai => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
            UpstreamKind::Azure => (API_KEY, key.expose().to_owned()),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| ProxyError::Internal("API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(req)
}

/// Copies upstream response headers for the client, without hop-by-hop headers. `keep_length`:
/// the body passes unchanged, so `content-length` stays valid.
pub fn response_headers(upstream: &HeaderMap, keep_length: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len() + 3);
    for (name, value) in upstream {
        if is_hop_by_hop(name, upstream) || (!keep_length && name == header::CONTENT_LENGTH) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Bounded label values for `tailor_upstream_errors_total{kind}`.
pub fn status_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limited",
        401 | 403 => "auth",
        404 => "not_found",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

/// Whether an upstream answer moves the request to the next fallback model: the model could not
/// serve it, but another might (rate limit, server error, a deleted fine-tune). A request the
/// upstream judged invalid (400, 401, 403...) would fail the same way elsewhere.
pub fn should_fall_back(status: StatusCode, body: &[u8]) -> bool {
    match status.as_u16() {
        404 => memchr::memmem::find(body, b"model_not_found").is_some(),
        408 | 409 | 429 => true,
        s => s >= 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret};

    fn cfg(kind: &str) -> Config {
        let y = format!(
            r#"
upstreams:
  u: {{ url: "https://example.test/base/", api_key_env: K {kind} }}
models:
  m: {{ upstream: u, id: dep-1, price: {{ input: 1, output: 1 }} }}
routes: [{{ name: r, split: [{{ model: m }}] }}]
"#
        );
        Config::from_yaml(&y, &|_| Some("sk-up".into())).unwrap()
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client-key"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("proxy"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert("x-tailor-debug", HeaderValue::from_static("1"));
        h.insert("openai-organization", HeaderValue::from_static("org-1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h
    }

    #[test]
    fn openai_request_uses_the_upstream_key_only() {
        let c = cfg("");
        let r = upstream_request(
            &c.upstreams[0],
            &c.models[0],
            Endpoint::Chat,
            Some("a=1"),
            &client_headers(),
            Bytes::from_static(b"{}"),
        )
        .unwrap();
        assert_eq!(r.uri(), "https://example.test/base/chat/completions?a=1");
        let h = r.headers();
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-up");
        assert_eq!(h["openai-organization"], "org-1");
        assert_eq!(h[header::ACCEPT_ENCODING], "identity");
        for gone in [
            "x-secret-hop",
            "connection",
            "host",
            "x-tailor-debug",
            "content-length",
            "api-key",
        ] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
    }

    #[test]
    fn azure_request_shape() {
        let c = cfg(", kind: azure, api_version: \"2024-10-21\"");
        let r = upstream_request(
            &c.upstreams[0],
            &c.models[0],
            Endpoint::Chat,
            Some("ignored=1"),
            &client_headers(),
            Bytes::new(),
        )
        .unwrap();
        assert_eq!(r.uri(), "https://example.test/base/openai/deployments/dep-1/chat/completions?api-version=2024-10-21");
        assert_eq!(r.headers()["api-key"], "sk-up");
        assert!(!r.headers().contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn passthrough_forwards_the_callers_key() {
        let mut c = cfg("");
        c.upstreams[0].auth = Auth::Passthrough;
        let r = upstream_request(
            &c.upstreams[0],
            &c.models[0],
            Endpoint::Embeddings,
            None,
            &client_headers(),
            Bytes::new(),
        )
        .unwrap();
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer client-key");
        assert_eq!(r.uri(), "https://example.test/base/embeddings");
        c.upstreams[0].auth = Auth::Key {
            env: "K".into(),
            key: Some(Secret::new("sk-2".into())),
        };
    }

    #[test]
    fn fallback_policy() {
        assert!(should_fall_back(StatusCode::TOO_MANY_REQUESTS, b""));
        assert!(should_fall_back(StatusCode::BAD_GATEWAY, b""));
        assert!(should_fall_back(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"model_not_found"}}"#
        ));
        assert!(!should_fall_back(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"unknown_url"}}"#
        ));
        assert!(!should_fall_back(StatusCode::UNAUTHORIZED, b""));
        assert!(!should_fall_back(StatusCode::BAD_REQUEST, b""));
    }

    #[test]
    fn response_headers_drop_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert("x-request-id", HeaderValue::from_static("req_1"));
        h.insert("retry-after", HeaderValue::from_static("2"));
        let out = response_headers(&h, false);
        assert!(
            !out.contains_key(header::TRANSFER_ENCODING)
                && !out.contains_key(header::CONTENT_LENGTH)
        );
        assert_eq!(out["x-request-id"], "req_1");
        assert_eq!(out["retry-after"], "2");
        assert_eq!(response_headers(&h, true)[header::CONTENT_LENGTH], "5");
    }
}
