//! How a request is addressed and authenticated for an upstream (OpenAI-style or Azure), and
//! which headers cross the proxy in each direction.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;
use http_body_util::Full;

use crate::config::{Auth, Model, Upstream, UpstreamKind};
use crate::error::ProxyError;
use crate::request::Endpoint;

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

/// Request headers that tailor sets itself or must not pass on. `keep_length`: the body is
/// forwarded unchanged (passthrough), so its `content-length` stays true.
fn drop_request_header(name: &HeaderName, passthrough_auth: bool, keep_length: bool) -> bool {
    name == header::HOST
        || (name == header::CONTENT_LENGTH && !keep_length)
        // tailor must read the response to meter it: ask for it uncompressed
        || name == header::ACCEPT_ENCODING
        || ((name == header::AUTHORIZATION || name == API_KEY) && !passthrough_auth)
        || name.as_str().starts_with("x-tailor-")
}

/// Builds the upstream request for `model` on `upstream`.
pub fn request(
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
    let mut req = Request::post(&uri)
        .body(Full::new(body))
        .map_err(|e| ProxyError::Internal(format!("upstream URL `{uri}`: {e}")))?;
    set_headers(upstream, client_headers, req.headers_mut(), false)?;
    Ok(req)
}

/// The upstream request's headers: the client's, less hop-by-hop headers and what tailor sets
/// itself, then the upstream's credentials.
pub(super) fn set_headers(
    upstream: &Upstream,
    client_headers: &HeaderMap,
    headers: &mut HeaderMap,
    keep_length: bool,
) -> Result<(), ProxyError> {
    let passthrough_auth = matches!(upstream.auth, Auth::Passthrough);
    headers.reserve(client_headers.len() + 2);
    for (name, value) in client_headers {
        if !is_hop_by_hop(name, client_headers)
            && !drop_request_header(name, passthrough_auth, keep_length)
        {
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
    Ok(())
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
        let r = request(
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
        let r = request(
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
        let r = request(
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
