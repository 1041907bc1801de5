//! Raw config → validated [`Config`]: upstreams, models, clients, and the order of the whole
//! (server in [`super::server`], routes in [`super::route`], limits in [`super::limits`]). Every
//! rejection names its key path, and a rejected config names every problem found.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::error::{check_name, invalid, ConfigError, Problems};
use super::limits::{build_limits, build_passthrough, build_shared_state};
use super::parse::parse;
use super::raw::{
    self, Dur, RawAuth, RawConfig, RawModel, RawRetries, RawTimeouts, RawUpstream, UpstreamKind,
};
use super::route::build_route;
use super::secret::Secret;
use super::server::{build_server, dur, retries, timeouts};
use super::telemetry::build_telemetry;
use super::types::{
    Auth, Client, Config, EconomicsSource, HealthPolicy, Model, OnError, PriceSource, Route,
    SharedState, Upstream,
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

    /// Parses and validates YAML text; files it names are relative to `base`. A rejected
    /// config names every problem found, each with its key path, not only the first.
    pub fn from_yaml_in(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        build(parse(text)?, env, base)
    }
}

/// Validates each part on its own: a broken upstream or model still gets a placeholder, so what
/// names it is checked without a second, derived error; the config is rejected with every
/// problem found.
fn build(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let server = build_server(raw.server, env, &mut p);

    let mut upstreams = Vec::new();
    let mut upstream_index = HashMap::new();
    for (name, u) in raw.upstreams {
        let path = format!("upstreams.{name}");
        let placeholder = Upstream {
            name: name.clone(),
            kind: u.kind,
            url: u.url.clone(),
            api_version: None,
            auth: Auth::None,
            timeouts: timeouts(RawTimeouts::default()),
            retry: retries(RawRetries::default()),
        };
        upstream_index.insert(name.clone(), upstreams.len());
        let built = build_upstream(&path, name, u, env);
        upstreams.push(p.or(built, placeholder));
    }

    let mut models = Vec::new();
    let mut model_index = HashMap::new();
    for (name, m) in raw.models {
        let path = format!("models.{name}");
        let placeholder = Model {
            name: name.clone(),
            upstream: 0,
            id: m.id.clone(),
            base_model: None,
            price: Price {
                input: 0,
                cached_input: 0,
                output: 0,
                training: None,
            },
            price_source: PriceSource::Config,
            training_cost: None,
            hosting_usd_per_hour: None,
            addresses: Default::default(),
        };
        model_index.insert(name.clone(), models.len());
        let built = build_model(&path, name, m, &upstream_index);
        models.push(p.or(built, placeholder));
    }
    let mut routes: Vec<Route> = Vec::new();
    let mut files = Vec::new();
    let mut listed = Vec::new();
    let mut seen_names = BTreeSet::new();
    // every route's name, broken ones included: what `limits:` may name
    let route_names: Vec<String> = raw.routes.iter().map(|r| r.name.clone()).collect();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some(prev) = routes.iter().find(|p| p.matcher.is_catch_all()) {
            p.push(invalid(
                path,
                format!(
                    "unreachable: route `{}` before it matches every request",
                    prev.name
                ),
            ));
            continue;
        }
        let Some(route) = p.take(build_route(&path, r, &model_index, base, &mut files)) else {
            continue;
        };
        if !seen_names.insert(route.name.clone()) {
            p.push(invalid(
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
    if route_names.is_empty() {
        p.push(invalid("routes", "at least one route is required"));
    }
    let client_names: Vec<String> = raw
        .clients
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    let clients = build_clients(raw.clients, env, &mut p);
    let health = HealthPolicy {
        failures: match raw.health.failures {
            Some(0) => {
                p.push(invalid("health.failures", "must be > 0"));
                5
            }
            f => f.unwrap_or(5),
        },
        cooldown: dur(raw.health.cooldown, 30),
    };
    if !client_names.is_empty() {
        if let Some(u) = upstreams
            .iter()
            .find(|u| matches!(u.auth, Auth::Passthrough))
        {
            p.push(invalid(
                format!("upstreams.{}.auth", u.name),
                "passthrough forwards the caller's Authorization, which with `clients:` is a tailor key: not both",
            ));
        }
    }
    let economics = raw
        .economics
        .and_then(|e| p.take(build_economics(e.prometheus_url, e.timeout)));
    let shared_state = p.or(
        build_shared_state(raw.shared_state),
        SharedState {
            redis: None,
            timeout: Duration::ZERO,
            on_error: OnError::Allow,
        },
    );
    let limits = build_limits(
        raw.limits,
        &client_names,
        &route_names,
        &model_index,
        &mut p,
    );
    let passthrough = raw
        .passthrough
        .and_then(|r| p.take(build_passthrough(r, &upstreams, &route_names)));
    let telemetry = raw
        .telemetry
        .and_then(|t| p.take(build_telemetry(Some(t))))
        .flatten();
    p.into_result()?;
    let mut cfg = Config {
        telemetry,
        passthrough,
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
    cfg.refresh_addresses();
    cfg.check_exposure()?;
    Ok(cfg)
}

fn build_upstream(
    path: &str,
    name: String,
    u: RawUpstream,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstream, ConfigError> {
    check_name(path, &name)?;
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
    Ok(Upstream {
        name,
        kind: u.kind,
        url,
        api_version: u.api_version,
        auth,
        timeouts: timeouts(u.timeouts),
        retry: retries(u.retries),
    })
}

fn build_model(
    path: &str,
    name: String,
    m: RawModel,
    upstream_index: &HashMap<String, usize>,
) -> Result<Model, ConfigError> {
    check_name(path, &name)?;
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
    let training_cost =
        match (m.training_cost_usd, m.training_tokens) {
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
    if m.hosting_usd_per_hour
        .is_some_and(|h| !h.is_finite() || h < 0.0)
    {
        return Err(invalid(
            format!("{path}.hosting_usd_per_hour"),
            "must be a number >= 0",
        ));
    }
    Ok(Model {
        name,
        upstream,
        id: m.id,
        base_model: m.base_model,
        price,
        price_source,
        training_cost,
        hosting_usd_per_hour: m.hosting_usd_per_hour,
        addresses: Default::default(),
    })
}

fn build_economics(url: String, timeout: Option<Dur>) -> Result<EconomicsSource, ConfigError> {
    let url = url.trim_end_matches('/');
    let ok = url
        .parse::<http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
    if !ok {
        return Err(invalid(
            "economics.prometheus_url",
            format!("`{url}` is not an http:// URL"),
        ));
    }
    Ok(EconomicsSource {
        prometheus_url: url.to_owned(),
        timeout: match timeout {
            Some(d) if d.0.is_zero() => return Err(invalid("economics.timeout", "must be > 0")),
            d => d.map_or(Duration::from_secs(5), |d| d.0),
        },
    })
}

fn build_clients(
    raw: Option<Vec<raw::RawClient>>,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Vec<Client> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    if raw.is_empty() {
        p.push(invalid(
            "clients",
            "list at least one client, or remove `clients:`",
        ));
    }
    let mut out: Vec<Client> = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        if let Some(c) = p.take(build_client(&format!("clients[{i}]"), c, &out, env)) {
            out.push(c);
        }
    }
    out
}

/// One client, checked against those before it.
fn build_client(
    path: &str,
    c: raw::RawClient,
    before: &[Client],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Client, ConfigError> {
    use sha2::{Digest, Sha256};
    check_name(&format!("{path}.name"), &c.name)?;
    if before.iter().any(|o| o.name == c.name) {
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
    if before.iter().any(|o| o.key_sha256 == key_sha256) {
        return Err(invalid(path, "two clients share one key"));
    }
    Ok(Client {
        name: c.name,
        key_sha256,
    })
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
