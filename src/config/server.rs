//! `server:` → [`ServerConfig`], each key checked on its own (every problem noted, a default in
//! its place so the other checks go on), and the defaults of durations, timeouts and retries.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::{invalid, ConfigError, Problems};
use super::raw::{Dur, RawRetries, RawServer, RawTimeouts};
use super::secret::Secret;
use super::types::{
    RetryPolicy, ServerConfig, Timeouts, DEFAULT_MAX_BODY_BYTES, MAX_HEADER_COUNT_LIMIT,
};

const LISTEN: &str = "127.0.0.1:8080";
const ADMIN_LISTEN: &str = "127.0.0.1:9090";

pub(super) fn build_server(
    raw: RawServer,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> ServerConfig {
    let fallback_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = ServerConfig {
        listen: p.or(
            parse_addr("server.listen", raw.listen, LISTEN),
            fallback_addr,
        ),
        admin_listen: p.or(
            parse_addr("server.admin_listen", raw.admin_listen, ADMIN_LISTEN),
            fallback_addr,
        ),
        max_body_bytes: p.or(
            match raw.max_body_bytes {
                None => Ok(DEFAULT_MAX_BODY_BYTES),
                Some(0) => Err(invalid("server.max_body_bytes", "must be > 0")),
                Some(n) => {
                    usize::try_from(n).map_err(|_| invalid("server.max_body_bytes", "too large"))
                }
            },
            DEFAULT_MAX_BODY_BYTES,
        ),
        max_sse_event_bytes: positive(
            p,
            "server.max_sse_event_bytes",
            raw.max_sse_event_bytes,
            crate::usage::sse::DEFAULT_MAX_EVENT_BYTES,
        ),
        request_id_key: p.or(request_id_key(raw.request_id_key_env, env), None),
        drain_timeout: dur(raw.drain_timeout, 30),
        max_connections: positive(p, "server.max_connections", raw.max_connections, 10_000),
        workers: positive(
            p,
            "server.workers",
            raw.workers,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ),
        shadow_max_concurrency: positive(
            p,
            "server.shadow_max_concurrency",
            raw.shadow_max_concurrency,
            16,
        ),
        max_concurrency: positive(p, "server.max_concurrency", raw.max_concurrency, 2_048),
        header_read_timeout: dur(raw.header_read_timeout, 10),
        max_header_count: positive(p, "server.max_header_count", raw.max_header_count, 100),
        max_header_bytes: positive(
            p,
            "server.max_header_bytes",
            raw.max_header_bytes,
            32 * 1024,
        ),
        allow_unauthenticated: raw.allow_unauthenticated.unwrap_or(false),
    };
    if server.max_header_count > MAX_HEADER_COUNT_LIMIT {
        p.push(invalid(
            "server.max_header_count",
            format!("at most {MAX_HEADER_COUNT_LIMIT}"),
        ));
    }
    if server.listen == server.admin_listen && server.listen.port() != 0 {
        p.push(invalid(
            "server.admin_listen",
            "must differ from server.listen: metrics never share the API port",
        ));
    }
    server
}

fn request_id_key(
    var: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let Some(var) = var else { return Ok(None) };
    let key = env(&var).filter(|k| !k.is_empty()).ok_or_else(|| {
        invalid(
            "server.request_id_key_env",
            format!("environment variable {var} is not set"),
        )
    })?;
    if key.len() < 16 {
        return Err(invalid(
            "server.request_id_key_env",
            format!(
                "{var} holds {} bytes: a signing key needs at least 16",
                key.len()
            ),
        ));
    }
    Ok(Some(Secret::new(key)))
}

fn parse_addr(path: &str, s: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.unwrap_or_else(|| default.to_owned());
    s.parse()
        .map_err(|_| invalid(path, format!("`{s}` is not an address like 127.0.0.1:8080")))
}

pub(super) fn dur(d: Option<Dur>, default_secs: u64) -> Duration {
    d.map_or(Duration::from_secs(default_secs), |d| d.0)
}

/// `v` or its default; 0 is noted as a problem.
fn positive(p: &mut Problems, path: &str, v: Option<usize>, default: usize) -> usize {
    match v {
        Some(0) => {
            p.push(invalid(path, "must be > 0"));
            default
        }
        v => v.unwrap_or(default),
    }
}

pub(super) fn timeouts(t: RawTimeouts) -> Timeouts {
    Timeouts {
        connect: dur(t.connect, 10),
        headers: dur(t.headers, 600),
        idle: dur(t.idle, 300),
        total: dur(t.total, 900),
    }
}

pub(super) fn retries(r: RawRetries) -> RetryPolicy {
    RetryPolicy {
        max: r.max.unwrap_or(2),
        backoff: r.backoff.map_or(Duration::from_millis(250), |d| d.0),
        max_backoff: dur(r.max_backoff, 4),
        retry_after_cap: dur(r.retry_after_cap, 10),
    }
}
