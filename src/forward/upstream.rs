//! How a request is addressed and authenticated for an upstream (OpenAI-style or Azure), and
//! which headers cross the proxy in each direction.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;

use crate::config::{Auth, Model, Upstream, UpstreamKind};
use crate::error::ProxyError;
use crate::request::Endpoint;
use crate::telemetry::TraceHeaders;

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

/// The header names a message's `connection` header lists (hop-by-hop for that message too);
/// empty, and no allocation, when it lists only `keep-alive` (hop-by-hop anyway) or is absent.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName, listed: &[HeaderName]) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE || listed.contains(name)
}

const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// The headers tailor adds to every answer: the route, the model and its own request id.
pub const TAILOR_ROUTE: HeaderName = HeaderName::from_static("x-tailor-route");
pub const TAILOR_MODEL: HeaderName = HeaderName::from_static("x-tailor-model");
pub const TAILOR_REQUEST_ID: HeaderName = HeaderName::from_static("x-tailor-request-id");

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

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Builds the upstream request for `model` on `upstream`. With `trace` (tracing on), the client's
/// `traceparent` and `tracestate` are replaced by tailor's (a malformed one is never passed on);
/// without it they pass like any other header.
pub fn request(
    upstream: &Upstream,
    model: &Model,
    endpoint: Endpoint,
    query: Option<&str>,
    client_headers: &HeaderMap,
    trace: Option<&TraceHeaders>,
    body: Bytes,
) -> Result<Request<Bytes>, ProxyError> {
    let uri = match (query, model.addresses.uri(upstream, &model.id, endpoint)) {
        (None, Some(uri)) => uri.clone(),
        _ => {
            let url = crate::config::upstream_url(upstream, &model.id, endpoint, query);
            url.parse()
                .map_err(|e| ProxyError::Internal(format!("upstream URL `{url}`: {e}")))?
        }
    };
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    set_headers(upstream, client_headers, trace, req.headers_mut(), false)?;
    if let Some(host) = model.addresses.host(upstream, &model.id) {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    Ok(req)
}

/// The upstream request's headers: the client's, less hop-by-hop headers and what tailor sets
/// itself, then the trace context (when tailor traces) and the upstream's credentials.
pub(super) fn set_headers(
    upstream: &Upstream,
    client_headers: &HeaderMap,
    trace: Option<&TraceHeaders>,
    headers: &mut HeaderMap,
    keep_length: bool,
) -> Result<(), ProxyError> {
    let passthrough_auth = matches!(upstream.auth, Auth::Passthrough);
    headers.reserve(client_headers.len() + 3);
    let listed = connection_listed(client_headers);
    for (name, value) in client_headers {
        if !is_hop_by_hop(name, &listed)
            && !drop_request_header(name, passthrough_auth, keep_length)
            && !(trace.is_some() && (name == TRACEPARENT || name == TRACESTATE))
        {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(t) = trace {
        headers.insert(TRACEPARENT, t.traceparent.clone());
        if let Some(s) = &t.tracestate {
            headers.insert(TRACESTATE, s.clone());
        }
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Auth::Key { key: Some(key), .. } = &upstream.auth {
        let (name, value) = match upstream.kind {
            UpstreamKind::Openai => (header::AUTHORIZATION, key.bearer_header()),
            UpstreamKind::Azure => (API_KEY, key.plain_header()),
        };
        let value = value
            .ok_or_else(|| ProxyError::Internal("API key is not a valid header value".into()))?;
        headers.insert(name, value.clone());
    }
    Ok(())
}

/// Whether `headers` give the body media type `ty` (written in lowercase): in any case, with or
/// without parameters (RFC 9110 8.3.1), and not a longer type that starts the same.
pub fn is_media_type(headers: &HeaderMap, ty: &[u8]) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.get(..ty.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(ty))
            && matches!(v.get(ty.len()), None | Some(b';' | b' ' | b'\t'))
    })
}

/// The upstream's response headers as the client gets them: without hop-by-hop headers, and
/// without `content-length` unless `keep_length` (the body passes unchanged, so it stays true)
/// and no transfer coding came with it.
pub fn response_headers(mut headers: HeaderMap, keep_length: bool) -> HeaderMap {
    // a length beside a transfer coding is not the body's (RFC 9112 6.3: a proxy removes it): the
    // body was read by its coding, and the client's framing is made anew
    let keep_length = keep_length && !headers.contains_key(header::TRANSFER_ENCODING);
    let listed = connection_listed(&headers);
    let dropped = |name: &HeaderName| {
        is_hop_by_hop(name, &listed) || (!keep_length && name == header::CONTENT_LENGTH)
    };
    // only the names present are removed (most answers carry one or two: a small list, where
    // removing each of ten names cost a lookup and a probe)
    let present: Vec<HeaderName> = headers.keys().filter(|n| dropped(n)).cloned().collect();
    for name in &present {
        headers.remove(name);
    }
    // tailor's own three `x-tailor-*` headers follow
    headers.reserve(3);
    headers
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
            None,
            Bytes::from_static(b"{}"),
        )
        .unwrap();
        assert_eq!(r.uri(), "https://example.test/base/chat/completions?a=1");
        let h = r.headers();
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-up");
        assert_eq!(h["openai-organization"], "org-1");
        assert_eq!(h[header::ACCEPT_ENCODING], "identity");
        // never the client's host (an https upstream's is the HTTP client's to set)
        assert!(!h.contains_key(header::HOST));
        for gone in [
            "x-secret-hop",
            "connection",
            "x-tailor-debug",
            "content-length",
            "api-key",
        ] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
    }

    #[test]
    fn trace_headers_replace_the_clients_only_when_tracing() {
        let mut h = client_headers();
        h.insert("traceparent", HeaderValue::from_static("00-BAD-client"));
        h.insert("tracestate", HeaderValue::from_static("a=b"));
        let c = cfg("");
        let build = |trace: Option<&TraceHeaders>| {
            request(
                &c.upstreams[0],
                &c.models[0],
                Endpoint::Chat,
                None,
                &h,
                trace,
                Bytes::new(),
            )
            .unwrap()
        };
        // tracing off: the client's headers pass like any other
        let off = build(None);
        assert_eq!(off.headers()["traceparent"], "00-BAD-client");
        let ours =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let on = build(Some(&TraceHeaders {
            traceparent: ours.clone(),
            tracestate: None,
        }));
        let tp: Vec<_> = on.headers().get_all("traceparent").iter().collect();
        assert_eq!(tp, [&ours]);
        assert!(!on.headers().contains_key("tracestate"));
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
            None,
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
            None,
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
    fn media_types_in_any_case_with_parameters_and_nothing_longer() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            h
        };
        for v in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "APPLICATION/JSON ;charset=UTF-8",
        ] {
            assert!(is_media_type(&with(v), b"application/json"), "{v}");
        }
        for v in [
            "application/jsonl",
            "application/json-patch+json",
            "text/json",
            "application/jso",
        ] {
            assert!(!is_media_type(&with(v), b"application/json"), "{v}");
        }
        assert!(!is_media_type(&HeaderMap::new(), b"application/json"));
        assert!(is_media_type(
            &with("Text/Event-Stream"),
            b"text/event-stream"
        ));
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
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        let out = response_headers(h.clone(), false);
        let cookies: Vec<_> = out.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "every value, in order");
        assert!(
            !out.contains_key(header::TRANSFER_ENCODING)
                && !out.contains_key(header::CONTENT_LENGTH)
        );
        assert_eq!(out["x-request-id"], "req_1");
        assert_eq!(out["retry-after"], "2");
        // a length beside a transfer coding goes even when the body passes unchanged (RFC 9112
        // 6.3); without one it stays
        assert!(!response_headers(h.clone(), true).contains_key(header::CONTENT_LENGTH));
        h.remove(header::TRANSFER_ENCODING);
        assert_eq!(
            response_headers(h.clone(), true)[header::CONTENT_LENGTH],
            "5"
        );
        // and what `connection` lists
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        let out = response_headers(h, true);
        assert!(!out.contains_key("x-hop") && !out.contains_key(header::CONNECTION));
        assert_eq!(out["x-request-id"], "req_1");
    }
}
