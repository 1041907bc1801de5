//! Where a model's requests go: the upstream URL of each endpoint (OpenAI-style or an Azure
//! deployment) and the `host` header, worked out once when the config is built so that a request
//! only clones them.

use http::header::HeaderValue;
use http::Uri;

use super::types::{Upstream, UpstreamKind};
use crate::request::Endpoint;

/// The upstream URL of `endpoint` for the model `model_id` on `upstream`, with the client's
/// `query` (Azure: tailor's `api-version` instead).
pub fn upstream_url(
    upstream: &Upstream,
    model_id: &str,
    endpoint: Endpoint,
    query: Option<&str>,
) -> String {
    match upstream.kind {
        UpstreamKind::Openai => match query {
            Some(q) => format!("{}{}?{q}", upstream.url, endpoint.suffix()),
            None => format!("{}{}", upstream.url, endpoint.suffix()),
        },
        UpstreamKind::Azure => format!(
            "{}/openai/deployments/{}{}?api-version={}",
            upstream.url,
            model_id,
            endpoint.suffix(),
            upstream.api_version.as_deref().unwrap_or_default()
        ),
    }
}

/// A model's upstream URIs, one per endpoint, and the `host` header they imply, with what they
/// were worked out from: they are used only while that still holds, so a config changed after
/// they were made (the demo points upstreams at its simulator) can never send a request to the
/// old address.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    uris: Vec<Uri>,
    host: Option<HeaderValue>,
    /// The upstream URL, `api_version` and model id they were made from.
    from: (String, Option<String>, String),
}

impl Addresses {
    /// Empty when the URLs do not parse (the request path then reports the error).
    pub fn new(upstream: &Upstream, model_id: &str) -> Addresses {
        let uris: Option<Vec<Uri>> = Endpoint::ALL
            .iter()
            .map(|e| upstream_url(upstream, model_id, *e, None).parse().ok())
            .collect();
        let Some(uris) = uris else {
            return Addresses::default();
        };
        let host = uris.first().and_then(host_header);
        let from = (
            upstream.url.clone(),
            upstream.api_version.clone(),
            model_id.to_owned(),
        );
        Addresses { uris, host, from }
    }

    /// Whether these were made for this upstream and model as they are now.
    fn fits(&self, upstream: &Upstream, model_id: &str) -> bool {
        self.from.0 == upstream.url
            && self.from.1 == upstream.api_version
            && self.from.2 == model_id
    }

    /// The URI of `endpoint` for `model_id` on `upstream`, if it was worked out for them.
    pub fn uri(&self, upstream: &Upstream, model_id: &str, endpoint: Endpoint) -> Option<&Uri> {
        self.uris
            .get(endpoint.index())
            .filter(|_| self.fits(upstream, model_id))
    }

    /// The `host` header for these URIs (`http://` upstreams only), on the same condition.
    pub fn host(&self, upstream: &Upstream, model_id: &str) -> Option<&HeaderValue> {
        self.host.as_ref().filter(|_| self.fits(upstream, model_id))
    }
}

/// `host` or `host:port` when the port is not 80, as hyper-util's HTTP/1 client writes it; only
/// for `http://` upstreams, always HTTP/1 here. An `https://` upstream may speak HTTP/2 (ALPN),
/// whose `:authority` hyper sets: there the client adds `host` on HTTP/1 connections only.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(p) if p != 80 => format!("{host}:{p}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn openai_and_azure_addresses() {
        let c = Config::from_yaml(
            r#"
upstreams:
  o: { url: "http://127.0.0.1:8080/v1", auth: none }
  a: { kind: azure, url: "https://res.openai.azure.com", api_version: "2024-10-21", api_key_env: K }
models:
  m: { upstream: o, id: gpt-4o, price: { input: 1, output: 1 } }
  d: { upstream: a, id: my-ft, base_model: gpt-4o-2024-08-06, price: { input: 1, output: 1 } }
routes: [{ name: r, split: [{ model: m }] }]
"#,
            &|_| Some("k".into()),
        )
        .unwrap();
        let model = |name: &str| c.models.iter().find(|m| m.name == name).unwrap();
        let (m, d) = (model("m"), model("d"));
        let (o, a) = (&c.upstreams[m.upstream], &c.upstreams[d.upstream]);
        let uri = |mm: &crate::config::Model, u, e| mm.addresses.uri(u, &mm.id, e).unwrap().clone();
        assert_eq!(
            uri(m, o, Endpoint::Chat),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(
            uri(m, o, Endpoint::Embeddings),
            "http://127.0.0.1:8080/v1/embeddings"
        );
        assert_eq!(m.addresses.host(o, &m.id).unwrap(), "127.0.0.1:8080");
        assert_eq!(
            uri(d, a, Endpoint::Responses),
            "https://res.openai.azure.com/openai/deployments/my-ft/responses?api-version=2024-10-21"
        );
        // https: left to the client, which adds it on HTTP/1 connections only
        assert_eq!(d.addresses.host(a, &d.id), None);
        for e in Endpoint::ALL {
            assert_eq!(uri(m, o, e).to_string(), upstream_url(o, &m.id, e, None));
        }
    }

    #[test]
    fn a_config_changed_after_load_never_uses_the_old_addresses() {
        let mut c = Config::from_yaml(
            r#"
upstreams: { o: { url: "https://api.openai.com/v1", api_key_env: K } }
models: { m: { upstream: o, id: gpt-4o, price: { input: 1, output: 1 } } }
routes: [{ name: r, split: [{ model: m }] }]
"#,
            &|_| Some("k".into()),
        )
        .unwrap();
        // what `tailor demo` does: the upstream now is its simulator
        c.upstreams[0].url = "http://127.0.0.1:9999/v1".into();
        let m = &c.models[0];
        assert!(m
            .addresses
            .uri(&c.upstreams[0], &m.id, Endpoint::Chat)
            .is_none());
        assert!(m.addresses.host(&c.upstreams[0], &m.id).is_none());
        let req = crate::forward::upstream::request(
            &c.upstreams[0],
            m,
            Endpoint::Chat,
            None,
            &http::HeaderMap::new(),
            None,
            bytes::Bytes::new(),
        )
        .unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9999/v1/chat/completions");
        c.refresh_addresses();
        let m = &c.models[0];
        assert_eq!(
            m.addresses
                .uri(&c.upstreams[0], &m.id, Endpoint::Chat)
                .unwrap(),
            "http://127.0.0.1:9999/v1/chat/completions"
        );
        assert_eq!(
            m.addresses.host(&c.upstreams[0], &m.id).unwrap(),
            "127.0.0.1:9999"
        );
    }
}
