//! `telemetry:` → [`TelemetryConfig`]: where request spans are exported (OTLP/HTTP) and how
//! they are batched.

use std::time::Duration;

use super::error::{invalid, ConfigError};
use super::raw::{Dur, RawTelemetry};
use super::types::TelemetryConfig;

pub(super) fn build_telemetry(
    raw: Option<RawTelemetry>,
) -> Result<Option<TelemetryConfig>, ConfigError> {
    let Some(t) = raw else {
        return Ok(None);
    };
    let endpoint = t.otlp_endpoint.trim().trim_end_matches('/');
    let ok = endpoint.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.host().is_some()
            && u.query().is_none()
    });
    if !ok {
        return Err(invalid(
            "telemetry.otlp_endpoint",
            format!("`{endpoint}` is not an http:// or https:// URL with a host and no query"),
        ));
    }
    let service_name = t.service_name.unwrap_or_else(|| "tailor".to_owned());
    if service_name.trim().is_empty() || service_name.len() > 128 {
        return Err(invalid(
            "telemetry.service_name",
            "must be 1-128 characters",
        ));
    }
    let positive = |path: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(path, "must be > 0")),
        v => Ok(v.unwrap_or(default)),
    };
    let nonzero = |path: &str, d: Option<Dur>, default: Duration| match d {
        Some(d) if d.0.is_zero() => Err(invalid(path, "must be > 0")),
        d => Ok(d.map_or(default, |d| d.0)),
    };
    let queue_size = positive("telemetry.queue_size", t.queue_size, 2048)?;
    let max_batch = positive("telemetry.max_batch", t.max_batch, 512)?;
    if max_batch > queue_size {
        return Err(invalid(
            "telemetry.max_batch",
            format!("must be at most telemetry.queue_size ({queue_size})"),
        ));
    }
    Ok(Some(TelemetryConfig {
        traces_url: format!("{endpoint}/v1/traces"),
        service_name,
        queue_size,
        max_batch,
        flush_interval: nonzero(
            "telemetry.flush_interval",
            t.flush_interval,
            Duration::from_secs(1),
        )?,
        timeout: nonzero("telemetry.timeout", t.timeout, Duration::from_secs(10))?,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::time::Duration;

    const BASE: &str = r#"
upstreams: { u: { url: "http://127.0.0.1:1/v1", auth: none } }
models: { m: { upstream: u, id: gpt-4o } }
routes: [{ name: r, split: [{ model: m }] }]
"#;

    fn load(telemetry: &str) -> Result<Config, String> {
        Config::from_yaml(&format!("{BASE}{telemetry}"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_is_off_and_defaults_are_filled() {
        assert!(load("").unwrap().telemetry.is_none());
        let t = load("telemetry: { otlp_endpoint: \"http://127.0.0.1:4318/\" }")
            .unwrap()
            .telemetry
            .unwrap();
        assert_eq!(t.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.service_name, "tailor");
        assert_eq!((t.queue_size, t.max_batch), (2048, 512));
        assert_eq!(t.flush_interval, Duration::from_secs(1));
        let t = load("telemetry: { otlp_endpoint: \"https://otel.example/otlp\", service_name: gw, flush_interval: 200ms, max_batch: 8, queue_size: 8 }")
            .unwrap()
            .telemetry
            .unwrap();
        assert_eq!(t.traces_url, "https://otel.example/otlp/v1/traces");
        assert_eq!((t.service_name.as_str(), t.max_batch), ("gw", 8));
        assert_eq!(t.flush_interval, Duration::from_millis(200));
    }

    #[test]
    fn errors_name_their_key_path() {
        for (yaml, path) in [
            (
                "telemetry: { otlp_endpont: \"http://h:4318\" }",
                "telemetry.otlp_endpont:",
            ),
            ("telemetry: { service_name: x }", "telemetry:"),
            (
                "telemetry: { otlp_endpoint: \"h:4318\" }",
                "telemetry.otlp_endpoint:",
            ),
            (
                "telemetry: { otlp_endpoint: \"ftp://h\" }",
                "telemetry.otlp_endpoint:",
            ),
            (
                "telemetry: { otlp_endpoint: \"http://h\", queue_size: 0 }",
                "telemetry.queue_size:",
            ),
            (
                "telemetry: { otlp_endpoint: \"http://h\", queue_size: 4, max_batch: 5 }",
                "telemetry.max_batch:",
            ),
            (
                "telemetry: { otlp_endpoint: \"http://h\", flush_interval: 0s }",
                "telemetry.flush_interval:",
            ),
            (
                "telemetry: { otlp_endpoint: \"http://h\", service_name: \"\" }",
                "telemetry.service_name:",
            ),
        ] {
            let e = load(yaml).unwrap_err();
            assert!(e.starts_with(path), "{yaml}: {e}");
        }
    }
}
