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

/// A model's upstream URIs, one per endpoint, and the `host` header they imply.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    uris: Vec<Uri>,
    host: Option<HeaderValue>,
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
        Addresses { uris, host }
    }

    /// The URI of `endpoint`, if it was worked out.
    pub fn uri(&self, endpoint: Endpoint) -> Option<&Uri> {
        self.uris.get(endpoint.index())
    }

    /// The `host` header for these URIs.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }
}

/// `host` or `host:port` when the port is not the scheme's default (as an HTTP/1 client writes
/// it).
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(p) if p != default => format!("{host}:{p}"),
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
        assert_eq!(
            m.addresses.uri(Endpoint::Chat).unwrap(),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(
            m.addresses.uri(Endpoint::Embeddings).unwrap(),
            "http://127.0.0.1:8080/v1/embeddings"
        );
        assert_eq!(m.addresses.host().unwrap(), "127.0.0.1:8080");
        assert_eq!(
            d.addresses.uri(Endpoint::Responses).unwrap(),
            "https://res.openai.azure.com/openai/deployments/my-ft/responses?api-version=2024-10-21"
        );
        assert_eq!(d.addresses.host().unwrap(), "res.openai.azure.com");
        for e in Endpoint::ALL {
            let want = upstream_url(&c.upstreams[m.upstream], "gpt-4o", e, None);
            assert_eq!(m.addresses.uri(e).unwrap().to_string(), want);
        }
    }
}
