//! The rest of the OpenAI API (`passthrough:`): which family a path belongs to, whether the path
//! is safe to forward, and the upstream request for it. The client chooses only the path and the
//! query; the scheme, host, base path and credentials come from the config.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use http::{HeaderMap, Method, Request};

use super::upstream::set_headers;
use crate::config::{Upstream, UpstreamKind};
use crate::error::ProxyError;

/// The endpoint family of a passthrough path: the `endpoint` label of `tailor_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Files,
    Batches,
    FineTuning,
    Moderations,
    Images,
    Audio,
    Other,
}

impl Family {
    /// The family of a path after `/v1` (`/files/file-abc/content` is `files`).
    pub fn of(suffix: &str) -> Family {
        let first = suffix.trim_start_matches('/').split('/').next();
        match first.unwrap_or_default() {
            "files" | "uploads" => Family::Files,
            "batches" => Family::Batches,
            "fine_tuning" => Family::FineTuning,
            "moderations" => Family::Moderations,
            "images" => Family::Images,
            "audio" => Family::Audio,
            _ => Family::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Files => "files",
            Family::Batches => "batches",
            Family::FineTuning => "fine_tuning",
            Family::Moderations => "moderations",
            Family::Images => "images",
            Family::Audio => "audio",
            Family::Other => "other",
        }
    }
}

/// Longest path forwarded (OpenAI's are far shorter).
const MAX_PATH: usize = 1024;

/// Whether a path after `/v1` may be forwarded: segments of letters, digits and `-_.~:` only
/// (every OpenAI path and id), none empty, `.` or `..`. No `%`: an encoded `/` or `.` must not
/// reach an upstream that decodes it into another path.
pub fn check_path(suffix: &str) -> Result<(), &'static str> {
    if suffix.len() > MAX_PATH {
        return Err("the path is too long");
    }
    let Some(rest) = suffix.strip_prefix('/') else {
        return Err("the path must start with /v1/");
    };
    for seg in rest.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("the path has an empty, `.` or `..` segment");
        }
        let plain = seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':'));
        if !plain {
            return Err("the path has characters other than letters, digits and -_.~:");
        }
    }
    Ok(())
}

/// The upstream URL for a passthrough path (after `/v1`) and the client's query. OpenAI-style
/// upstreams get `{url}{suffix}`; Azure gets `{url}/openai{suffix}?api-version=…` for the paths it
/// has outside deployments (files, batches, fine-tuning, and the like); images, audio and
/// moderations, which Azure serves per deployment or not at all, are refused.
pub fn target(upstream: &Upstream, suffix: &str, query: Option<&str>) -> Result<String, String> {
    match upstream.kind {
        UpstreamKind::Openai => Ok(match query {
            Some(q) => format!("{}{suffix}?{q}", upstream.url),
            None => format!("{}{suffix}", upstream.url),
        }),
        UpstreamKind::Azure => {
            let family = Family::of(suffix);
            if matches!(family, Family::Images | Family::Audio | Family::Moderations) {
                return Err(format!(
                    "/v1/{} is not available through the Azure upstream `{}`: Azure serves it per deployment or not at all",
                    family.as_str(),
                    upstream.name
                ));
            }
            // tailor's api-version wins over one in the client's query
            let mut q: Vec<&str> = query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("api-version="))
                .collect();
            let version = format!(
                "api-version={}",
                upstream.api_version.as_deref().unwrap_or_default()
            );
            q.push(&version);
            Ok(format!("{}/openai{suffix}?{}", upstream.url, q.join("&")))
        }
    }
}

/// The upstream request: the client's method, body and headers (its `content-length` kept, the
/// body is forwarded unchanged), the upstream's credentials.
pub fn request<B>(
    upstream: &Upstream,
    method: Method,
    uri: &str,
    client_headers: &HeaderMap,
    body: B,
) -> Result<Request<B>, ProxyError> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .map_err(|e| ProxyError::Internal(format!("upstream URL `{uri}`: {e}")))?;
    set_headers(upstream, client_headers, req.headers_mut(), true)?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http::header;

    fn upstream(extra: &str) -> Upstream {
        let y = format!(
            r#"
upstreams:
  u: {{ url: "https://example.test/v1", api_key_env: K {extra} }}
models:
  m: {{ upstream: u, id: gpt-4o, price: {{ input: 1, output: 1 }} }}
routes: [{{ name: r, split: [{{ model: m }}] }}]
"#
        );
        let c = Config::from_yaml(&y, &|_| Some("sk-up".into())).unwrap();
        c.upstreams[0].clone()
    }

    #[test]
    fn families() {
        for (path, f) in [
            ("/files", "files"),
            ("/files/file-1/content", "files"),
            ("/uploads/upload_1/parts", "files"),
            ("/batches/batch_1/cancel", "batches"),
            ("/fine_tuning/jobs", "fine_tuning"),
            ("/moderations", "moderations"),
            ("/images/generations", "images"),
            ("/audio/transcriptions", "audio"),
            ("/vector_stores", "other"),
            ("/responses/resp_1", "other"),
            ("/", "other"),
        ] {
            assert_eq!(Family::of(path).as_str(), f, "{path}");
        }
    }

    #[test]
    fn only_plain_paths_pass() {
        for ok in [
            "/files",
            "/files/file-abc123/content",
            "/fine_tuning/jobs/ftjob-1/checkpoints",
            "/organization/usage/completions",
            "/chat/completions/chatcmpl-1",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        let long = format!("/{}", "a".repeat(2000));
        for bad in [
            "",
            "files",
            "/",
            "/files/",
            "//evil.test/x",
            "/files/../admin",
            "/files/./x",
            "/files/%2e%2e/x",
            "/files/a%2Fb",
            "/files/a\\b",
            "/files/a@b",
            "/files/a b",
            "/files/é",
            long.as_str(),
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn openai_target_keeps_base_path_and_query() {
        let u = upstream("");
        assert_eq!(
            target(&u, "/files/file-1/content", None).unwrap(),
            "https://example.test/v1/files/file-1/content"
        );
        assert_eq!(
            target(&u, "/files", Some("purpose=batch&limit=2")).unwrap(),
            "https://example.test/v1/files?purpose=batch&limit=2"
        );
    }

    #[test]
    fn azure_target_has_its_api_version_and_refuses_deployment_paths() {
        let u = upstream(", kind: azure, api_version: \"2024-10-21\"");
        assert_eq!(
            target(&u, "/files", Some("api-version=evil&limit=2")).unwrap(),
            "https://example.test/v1/openai/files?limit=2&api-version=2024-10-21"
        );
        assert_eq!(
            target(&u, "/batches/batch_1", None).unwrap(),
            "https://example.test/v1/openai/batches/batch_1?api-version=2024-10-21"
        );
        for p in ["/images/generations", "/audio/speech", "/moderations"] {
            assert!(target(&u, p, None).unwrap_err().contains("Azure"), "{p}");
        }
    }

    #[test]
    fn request_keeps_length_and_sets_the_upstream_key() {
        let u = upstream("");
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer client".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=x".parse().unwrap(),
        );
        h.insert(header::HOST, "tailor".parse().unwrap());
        let r = request(&u, Method::POST, "https://example.test/v1/files", &h, ()).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer sk-up");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "12");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "multipart/form-data; boundary=x"
        );
        assert!(!r.headers().contains_key(header::HOST));
    }
}
