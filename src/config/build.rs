//! Raw config → validated [`Config`]: server, upstreams, models, clients (routes are built in
//! [`super::route`]). Every rejection names its key path.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::error::{check_name, invalid, ConfigError};
use super::limits::{build_limits, build_shared_state};
use super::raw::{self, Dur, RawAuth, RawConfig, RawRetries, RawTimeouts, UpstreamKind};
use super::route::build_route;
use super::secret::Secret;
use super::telemetry::build_telemetry;
use super::types::{
    Auth, Client, Config, EconomicsSource, HealthPolicy, Model, PriceSource, RetryPolicy, Route,
    ServerConfig, Timeouts, Upstream, DEFAULT_MAX_BODY_BYTES, MAX_HEADER_COUNT_LIMIT,
};
use crate::usage::price::{self, Price};

impl Config {
    /// Reads and validates a config file. `env` looks up environment variables (injected so tests
    /// and `check` control it).
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Config::from_yaml_in(&text, env, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates YAML text; files it names (arm prompts) are relative to the current
    /// directory.
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::from_yaml_in(text, env, Path::new("."))
    }

    /// Parses and validates YAML text; files it names are relative to `base`.
    pub fn from_yaml_in(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // name the offending key itself: `routes[2].split[0].wieght`
            if let Some(key) = inner
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                path = if path == "." {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
            }
            // serde_yaml_ng prefixes its own path; keep only the message
            let message = match inner.split_once(": ") {
                Some((p, m)) if !p.contains(' ') => m.to_owned(),
                _ => inner,
            };
            invalid(
                if path.is_empty() {
                    ".".to_owned()
                } else {
                    path
                },
                message,
            )
        })?;
        build(raw, env, base)
    }
}

fn parse_addr(path: &str, s: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.unwrap_or_else(|| default.to_owned());
    s.parse()
        .map_err(|_| invalid(path, format!("`{s}` is not an address like 127.0.0.1:8080")))
}

fn build(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
) -> Result<Config, ConfigError> {
    let server = ServerConfig {
        listen: parse_addr("server.listen", raw.server.listen, "127.0.0.1:8080")?,
        admin_listen: parse_addr(
            "server.admin_listen",
            raw.server.admin_listen,
            "127.0.0.1:9090",
        )?,
        max_body_bytes: match raw.server.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(0) => return Err(invalid("server.max_body_bytes", "must be > 0")),
            Some(n) => {
                usize::try_from(n).map_err(|_| invalid("server.max_body_bytes", "too large"))?
            }
        },
        max_sse_event_bytes: positive(
            "server.max_sse_event_bytes",
            raw.server.max_sse_event_bytes,
            crate::usage::sse::DEFAULT_MAX_EVENT_BYTES,
        )?,
        request_id_key: match raw.server.request_id_key_env {
            None => None,
            Some(var) => {
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
                Some(Secret::new(key))
            }
        },
        drain_timeout: dur(raw.server.drain_timeout, 30),
        max_connections: positive("server.max_connections", raw.server.max_connections, 10_000)?,
        workers: positive(
            "server.workers",
            raw.server.workers,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )?,
        shadow_max_concurrency: positive(
            "server.shadow_max_concurrency",
            raw.server.shadow_max_concurrency,
            16,
        )?,
        max_concurrency: positive("server.max_concurrency", raw.server.max_concurrency, 2_048)?,
        header_read_timeout: dur(raw.server.header_read_timeout, 10),
        max_header_count: positive("server.max_header_count", raw.server.max_header_count, 100)?,
        max_header_bytes: positive(
            "server.max_header_bytes",
            raw.server.max_header_bytes,
            32 * 1024,
        )?,
        allow_unauthenticated: raw.server.allow_unauthenticated.unwrap_or(false),
    };
    if server.max_header_count > MAX_HEADER_COUNT_LIMIT {
        return Err(invalid(
            "server.max_header_count",
            format!("at most {MAX_HEADER_COUNT_LIMIT}"),
        ));
    }
    if server.listen == server.admin_listen && server.listen.port() != 0 {
        return Err(invalid(
            "server.admin_listen",
            "must differ from server.listen: metrics never share the API port",
        ));
    }

    let mut upstreams = Vec::new();
    let mut upstream_index = HashMap::new();
    for (name, u) in raw.upstreams {
        let path = format!("upstreams.{name}");
        check_name(&path, &name)?;
        let url = u.url.trim_end_matches('/').to_owned();
        let uri: http::Uri = url
            .parse()
            .map_err(|_| invalid(format!("{path}.url"), format!("`{}` is not a URL", u.url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || uri.host().is_none()
            || uri.query().is_some()
        {
            return Err(invalid(
                format!("{path}.url"),
                "must be an http:// or https:// URL with a host and no query",
            ));
        }
        if u.kind == UpstreamKind::Azure && u.api_version.is_none() {
            return Err(invalid(
                format!("{path}.api_version"),
                "required for kind: azure",
            ));
        }
        if u.kind == UpstreamKind::Openai && u.api_version.is_some() {
            return Err(invalid(
                format!("{path}.api_version"),
                "only for kind: azure",
            ));
        }
        let auth = match (u.auth, u.api_key_env) {
            (None | Some(RawAuth::Key), Some(var)) => Auth::Key {
                key: env(&var).filter(|k| !k.is_empty()).map(Secret::new),
                env: var,
            },
            (Some(RawAuth::Key), None) => {
                return Err(invalid(
                    format!("{path}.api_key_env"),
                    "required with auth: key",
                ))
            }
            (Some(RawAuth::Passthrough), None) => Auth::Passthrough,
            (Some(RawAuth::None), None) | (None, None) => Auth::None,
            (Some(RawAuth::Passthrough | RawAuth::None), Some(_)) => {
                return Err(invalid(
                    format!("{path}.api_key_env"),
                    "cannot be combined with auth: passthrough or auth: none",
                ))
            }
        };
        upstream_index.insert(name.clone(), upstreams.len());
        upstreams.push(Upstream {
            name,
            kind: u.kind,
            url,
            api_version: u.api_version,
            auth,
            timeouts: timeouts(u.timeouts),
            retry: retries(u.retries),
        });
    }

    let mut models = Vec::new();
    let mut model_index = HashMap::new();
    for (name, m) in raw.models {
        let path = format!("models.{name}");
        check_name(&path, &name)?;
        let upstream = *upstream_index.get(&m.upstream).ok_or_else(|| {
            invalid(
                format!("{path}.upstream"),
                format!("no upstream named `{}`", m.upstream),
            )
        })?;
        if m.id.trim().is_empty() {
            return Err(invalid(format!("{path}.id"), "must not be empty"));
        }
        let (price, price_source) = match m.price {
            Some(p) => (
                Price::from_usd(p.input, p.cached_input, p.output)
                    .map_err(|e| invalid(format!("{path}.price"), e))?,
                PriceSource::Config,
            ),
            None => {
                let key = m.base_model.as_deref().unwrap_or(&m.id);
                let (k, entry) = price::lookup(key).ok_or_else(|| {
                    invalid(
                        format!("{path}.price"),
                        format!("required: `{key}` is not in the built-in price table (give `price:` or a priced `base_model:`)"),
                    )
                })?;
                (
                    entry.price,
                    PriceSource::Table {
                        key: k,
                        as_of: &entry.as_of,
                    },
                )
            }
        };
        let training_cost = match (m.training_cost_usd, m.training_tokens) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{path}.training_tokens"),
                    "give `training_cost_usd` or `training_tokens`, not both",
                ))
            }
            (Some(c), None) if c.is_finite() && c >= 0.0 => Some(c),
            (Some(_), None) => {
                return Err(invalid(
                    format!("{path}.training_cost_usd"),
                    "must be a number >= 0",
                ))
            }
            (None, Some(t)) => match price.training {
                // the table holds picodollars per token
                Some(per_token) => Some(t as f64 * per_token as f64 / price::PICO_PER_USD),
                None => return Err(invalid(
                    format!("{path}.training_tokens"),
                    "the price table has no training rate for this model: give `training_cost_usd`",
                )),
            },
            (None, None) => None,
        };
        let hosting_usd_per_hour = match m.hosting_usd_per_hour {
            Some(h) if !h.is_finite() || h < 0.0 => {
                return Err(invalid(
                    format!("{path}.hosting_usd_per_hour"),
                    "must be a number >= 0",
                ))
            }
            h => h,
        };
        model_index.insert(name.clone(), models.len());
        models.push(Model {
            name,
            upstream,
            id: m.id,
            base_model: m.base_model,
            price,
            price_source,
            training_cost,
            hosting_usd_per_hour,
        });
    }

    let mut routes: Vec<Route> = Vec::new();
    let mut files = Vec::new();
    let mut listed = Vec::new();
    let mut seen_names = BTreeSet::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some(prev) = routes.iter().find(|p| p.matcher.is_catch_all()) {
            return Err(invalid(
                path,
                format!(
                    "unreachable: route `{}` before it matches every request",
                    prev.name
                ),
            ));
        }
        let route = build_route(&path, r, &model_index, base, &mut files)?;
        if !seen_names.insert(route.name.clone()) {
            return Err(invalid(
                format!("{path}.name"),
                format!("route `{}` is defined twice", route.name),
            ));
        }
        for m in route.matcher.models.iter().flatten() {
            if !listed.contains(m) {
                listed.push(m.clone());
            }
        }
        routes.push(route);
    }
    if routes.is_empty() {
        return Err(invalid("routes", "at least one route is required"));
    }
    let clients = build_clients(raw.clients, env)?;
    let health = HealthPolicy {
        failures: match raw.health.failures {
            Some(0) => return Err(invalid("health.failures", "must be > 0")),
            f => f.unwrap_or(5),
        },
        cooldown: dur(raw.health.cooldown, 30),
    };
    if !clients.is_empty() {
        if let Some(u) = upstreams
            .iter()
            .find(|u| matches!(u.auth, Auth::Passthrough))
        {
            return Err(invalid(
                format!("upstreams.{}.auth", u.name),
                "passthrough forwards the caller's Authorization, which with `clients:` is a tailor key: not both",
            ));
        }
    }
    let economics = match raw.economics {
        None => None,
        Some(e) => {
            let url = e.prometheus_url.trim_end_matches('/');
            let ok = url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                return Err(invalid(
                    "economics.prometheus_url",
                    format!("`{url}` is not an http:// URL"),
                ));
            }
            Some(EconomicsSource {
                prometheus_url: url.to_owned(),
                timeout: match e.timeout {
                    Some(d) if d.0.is_zero() => {
                        return Err(invalid("economics.timeout", "must be > 0"))
                    }
                    d => d.map_or(Duration::from_secs(5), |d| d.0),
                },
            })
        }
    };
    let shared_state = build_shared_state(raw.shared_state)?;
    let limits = build_limits(raw.limits, &clients, &routes, &model_index)?;
    let telemetry = build_telemetry(raw.telemetry)?;
    let cfg = Config {
        telemetry,
        shared_state,
        limits,
        server,
        upstreams,
        models,
        routes,
        listed_models: listed,
        clients,
        health,
        economics,
        files,
    };
    cfg.check_exposure()?;
    Ok(cfg)
}

fn dur(d: Option<Dur>, default_secs: u64) -> Duration {
    d.map_or(Duration::from_secs(default_secs), |d| d.0)
}

fn positive(path: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(invalid(path, "must be > 0")),
        v => Ok(v.unwrap_or(default)),
    }
}

fn timeouts(t: RawTimeouts) -> Timeouts {
    Timeouts {
        connect: dur(t.connect, 10),
        headers: dur(t.headers, 600),
        idle: dur(t.idle, 300),
        total: dur(t.total, 900),
    }
}

fn retries(r: RawRetries) -> RetryPolicy {
    RetryPolicy {
        max: r.max.unwrap_or(2),
        backoff: r.backoff.map_or(Duration::from_millis(250), |d| d.0),
        max_backoff: dur(r.max_backoff, 4),
        retry_after_cap: dur(r.retry_after_cap, 10),
    }
}

fn build_clients(
    raw: Option<Vec<raw::RawClient>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Client>, ConfigError> {
    use sha2::{Digest, Sha256};
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.is_empty() {
        return Err(invalid(
            "clients",
            "list at least one client, or remove `clients:`",
        ));
    }
    let mut out: Vec<Client> = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let path = format!("clients[{i}]");
        check_name(&format!("{path}.name"), &c.name)?;
        if out.iter().any(|o| o.name == c.name) {
            return Err(invalid(
                format!("{path}.name"),
                format!("client `{}` is defined twice", c.name),
            ));
        }
        let key_sha256 = match (c.key_sha256, c.key_env) {
            (Some(hex), None) => parse_sha256(&hex)
                .ok_or_else(|| invalid(format!("{path}.key_sha256"), "must be 64 hex digits"))?,
            (None, Some(var)) => {
                let key = env(&var).filter(|k| !k.is_empty()).ok_or_else(|| {
                    invalid(
                        format!("{path}.key_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?;
                Sha256::digest(key.as_bytes()).into()
            }
            _ => return Err(invalid(path, "give exactly one of key_sha256 and key_env")),
        };
        if out.iter().any(|o| o.key_sha256 == key_sha256) {
            return Err(invalid(path, "two clients share one key"));
        }
        out.push(Client {
            name: c.name,
            key_sha256,
        });
    }
    Ok(out)
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
