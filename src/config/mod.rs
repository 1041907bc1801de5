//! Configuration: `routes.yaml` parsed strictly ([`raw`]), validated once, and turned into the
//! runtime [`Config`] that the request path reads. Runtime types hold resolved indices, compiled
//! regexes and integer prices; nothing "not resolved yet" survives validation.

pub mod raw;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use regex::Regex;

pub use raw::UpstreamKind;
use raw::{Dur, RawAuth, RawConfig, RawMatch, RawRetries, RawRoute, RawTimeouts};

use crate::request::Endpoint;
use crate::usage::price::{self, Price};

/// Default `server.max_body_bytes`: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Why a config was rejected; `path` is the key path, e.g. `routes[2].split[0].wieght`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// An API key. Its Debug and Display print `***`, so it cannot end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    /// The key itself, for the one place that puts it in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub upstreams: Vec<Upstream>,
    pub models: Vec<Model>,
    pub routes: Vec<Route>,
    /// What `GET /v1/models` lists: every name in a route's `match.model`, in route order.
    pub listed_models: Vec<String>,
    /// tailor's own API keys; empty = no client authentication.
    pub clients: Vec<Client>,
    pub health: HealthPolicy,
    /// Files the config reads besides itself (arm prompts): a change to one reloads it too.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    /// After SIGTERM: how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// Open API connections at most; more are closed at once.
    pub max_connections: usize,
    /// Threads serving the API, each with its own listener (SO_REUSEPORT), event loop and
    /// upstream connection pools, like nginx's worker processes. Default: one per CPU.
    pub workers: usize,
    /// Shadow requests in flight at most (all routes); more are dropped and counted.
    pub shadow_max_concurrency: usize,
    /// API requests in flight at most (all routes); more get 429 at once.
    pub max_concurrency: usize,
    /// A client must send its request headers within this time (slowloris).
    pub header_read_timeout: Duration,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub allow_unauthenticated: bool,
}

/// A client of tailor: a name (the `client` metric label) and the SHA-256 of its key.
#[derive(Clone)]
pub struct Client {
    pub name: String,
    pub key_sha256: [u8; 32],
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// When a model is taken out of rotation, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    pub failures: u32,
    pub cooldown: Duration,
}

/// Per-upstream time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub headers: Duration,
    pub idle: Duration,
    pub total: Duration,
}

/// Per-upstream retries of the same model, before moving to a fallback.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub retry_after_cap: Duration,
}

/// How tailor authenticates to an upstream.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A key read from an environment variable; `None` if the variable was not set.
    Key { env: String, key: Option<Secret> },
    /// The caller's own credentials are forwarded.
    Passthrough,
    /// No credentials.
    None,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub kind: UpstreamKind,
    /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub url: String,
    pub api_version: Option<String>,
    pub auth: Auth,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
}

/// Where a model's price came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceSource {
    Config,
    Table {
        key: &'static str,
        as_of: &'static str,
    },
}

impl Model {
    /// The fine-tune's one-off training cost, if declared.
    pub fn training_cost_usd(&self) -> Option<f64> {
        self.training_cost
    }

    /// Whether this is a fine-tuned model (`ft:` id, or an Azure deployment of an `ft:` base).
    pub fn is_fine_tune(&self) -> bool {
        self.id.starts_with("ft:")
            || self
                .base_model
                .as_deref()
                .is_some_and(|b| b.starts_with("ft:"))
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    /// The config name: what routes and metrics use.
    pub name: String,
    pub upstream: usize,
    /// What is sent upstream (for Azure: the deployment name).
    pub id: String,
    /// Azure: the OpenAI model the deployment runs.
    pub base_model: Option<String>,
    pub price: Price,
    pub price_source: PriceSource,
    /// One-off training cost, USD, declared or from `training_tokens` at the table's rate.
    pub training_cost: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    None,
    User,
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub struct Arm {
    pub model: usize,
    pub weight: u32,
}

/// A system prompt an arm adds for its model (read from a file with the config).
#[derive(Debug)]
pub struct ArmPrompt {
    pub model: usize,
    pub text: Arc<str>,
    /// Instead of the client's system and developer messages (else before them).
    pub replace: bool,
}

/// A sampled copy of a route's requests to another model, answered to no one.
#[derive(Debug)]
pub struct Shadow {
    pub model: usize,
    /// Percent of the route's requests, 0 < p <= 100.
    pub percent: f64,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: Matcher,
    /// Non-empty; weights sum to a positive total.
    pub arms: Vec<Arm>,
    pub total_weight: u64,
    pub sticky: Sticky,
    pub fallback: Vec<usize>,
    /// Requests of this route in flight at most; more get 429 at once.
    pub max_concurrency: Option<usize>,
    /// Spend alert threshold, USD per hour.
    pub budget_usd_per_hour: Option<f64>,
    /// Per-arm system prompts.
    pub prompts: Vec<ArmPrompt>,
    pub shadow: Option<Shadow>,
    pub capture: Option<crate::capture::CaptureConfig>,
}

impl Route {
    /// The system prompt the route adds when it sends a request to `model`.
    pub fn prompt_for(&self, model: usize) -> Option<&ArmPrompt> {
        self.prompts.iter().find(|p| p.model == model)
    }
}

/// The conditions of a route; every one given must hold. `None`/empty = not checked.
#[derive(Debug, Default)]
pub struct Matcher {
    pub models: Option<Vec<String>>,
    pub headers: Vec<(HeaderName, String)>,
    pub user: Option<Regex>,
    pub metadata: Vec<(String, String)>,
    pub system: Option<Regex>,
    pub content: Option<Regex>,
    /// Inclusive bounds on the estimated prompt tokens.
    pub prompt_tokens: Option<(u64, u64)>,
    pub tools: Option<bool>,
    pub endpoints: Option<Vec<Endpoint>>,
}

impl Matcher {
    /// True when the route has no condition at all (a catch-all).
    pub fn is_catch_all(&self) -> bool {
        self.models.is_none()
            && self.headers.is_empty()
            && self.user.is_none()
            && self.metadata.is_empty()
            && self.system.is_none()
            && self.content.is_none()
            && self.prompt_tokens.is_none()
            && self.tools.is_none()
            && self.endpoints.is_none()
    }

    /// The conditions in words, as `tailor check` and the status page print them.
    pub fn describe(&self) -> String {
        let m = self;
        let mut parts = Vec::new();
        if let Some(e) = &m.endpoints {
            parts.push(format!(
                "endpoint in {:?}",
                e.iter().map(|e| e.as_str()).collect::<Vec<_>>()
            ));
        }
        if let Some(ms) = &m.models {
            parts.push(format!("model in {ms:?}"));
        }
        for (k, v) in &m.headers {
            parts.push(format!("header {k} = {v:?}"));
        }
        if let Some(t) = m.tools {
            parts.push(format!("tools = {t}"));
        }
        for (k, v) in &m.metadata {
            parts.push(format!("metadata.{k} = {v:?}"));
        }
        if let Some(r) = &m.user {
            parts.push(format!("user =~ /{r}/"));
        }
        if let Some((lo, hi)) = m.prompt_tokens {
            parts.push(if hi == u64::MAX {
                format!("prompt_tokens >= {lo}")
            } else {
                format!("prompt_tokens in {lo}..={hi}")
            });
        }
        if let Some(r) = &m.system {
            parts.push(format!("system =~ /{r}/"));
        }
        if let Some(r) = &m.content {
            parts.push(format!("content =~ /{r}/"));
        }
        if parts.is_empty() {
            "everything".into()
        } else {
            parts.join(" and ")
        }
    }
}

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

    /// tailor refuses to hold upstream keys on a non-loopback address with no client keys, unless
    /// `server.allow_unauthenticated: true` says so. Checked at load and after CLI overrides.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let holds_keys = self
            .upstreams
            .iter()
            .any(|u| matches!(u.auth, Auth::Key { .. }));
        if holds_keys
            && self.clients.is_empty()
            && !self.server.listen.ip().is_loopback()
            && !self.server.allow_unauthenticated
        {
            return Err(invalid(
                "clients",
                format!(
                    "required: server.listen {} is not a loopback address and upstreams carry API keys, so anyone who \
                     reaches it could spend them. Add `clients:` keys, or set server.allow_unauthenticated: true",
                    self.server.listen
                ),
            ));
        }
        Ok(())
    }

    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }
}

fn parse_addr(path: &str, s: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.unwrap_or_else(|| default.to_owned());
    s.parse()
        .map_err(|_| invalid(path, format!("`{s}` is not an address like 127.0.0.1:8080")))
}

/// Route and model names appear as metric label values and in headers: keep them plain.
fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("`{name}` must be 1-64 characters of letters, digits, `-`, `_`, `.`, `:`"),
        ))
    }
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
        model_index.insert(name.clone(), models.len());
        models.push(Model {
            name,
            upstream,
            id: m.id,
            base_model: m.base_model,
            price,
            price_source,
            training_cost,
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
    let cfg = Config {
        server,
        upstreams,
        models,
        routes,
        listed_models: listed,
        clients,
        health,
        files,
    };
    cfg.check_exposure()?;
    Ok(cfg)
}

/// hyper refuses requests with more headers than this before tailor sees them.
pub const MAX_HEADER_COUNT_LIMIT: usize = 512;

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

fn build_route(
    path: &str,
    r: RawRoute,
    model_index: &HashMap<String, usize>,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Route, ConfigError> {
    check_name(&format!("{path}.name"), &r.name)?;
    let find = |p: String, name: &str| {
        model_index
            .get(name)
            .copied()
            .ok_or_else(|| invalid(p, format!("no model named `{name}` under `models:`")))
    };
    if r.split.is_empty() {
        return Err(invalid(format!("{path}.split"), "needs at least one arm"));
    }
    let weighted = r.split.iter().filter(|a| a.weight.is_some()).count();
    if weighted != 0 && weighted != r.split.len() {
        return Err(invalid(
            format!("{path}.split"),
            "give `weight` on every arm or on none (equal shares)",
        ));
    }
    let mut arms: Vec<Arm> = Vec::new();
    let mut prompts = Vec::new();
    for (j, a) in r.split.iter().enumerate() {
        let model = find(format!("{path}.split[{j}].model"), &a.model)?;
        if arms.iter().any(|x| x.model == model) {
            return Err(invalid(
                format!("{path}.split[{j}].model"),
                format!("`{}` is already an arm of this route", a.model),
            ));
        }
        arms.push(Arm {
            model,
            weight: a.weight.unwrap_or(1),
        });
        let replace = match a.system_prompt_mode.as_deref() {
            None | Some("prepend") => false,
            Some("replace") => true,
            Some(m) => {
                return Err(invalid(
                    format!("{path}.split[{j}].system_prompt_mode"),
                    format!("`{m}`: expected prepend or replace"),
                ))
            }
        };
        match &a.system_prompt {
            Some(file) => {
                let p = base.join(file);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    invalid(
                        format!("{path}.split[{j}].system_prompt"),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                if text.trim().is_empty() {
                    return Err(invalid(
                        format!("{path}.split[{j}].system_prompt"),
                        format!("{} is empty", p.display()),
                    ));
                }
                prompts.push(ArmPrompt {
                    model,
                    text: text.trim_end().into(),
                    replace,
                });
                files.push(p);
            }
            None if a.system_prompt_mode.is_some() => {
                return Err(invalid(
                    format!("{path}.split[{j}].system_prompt_mode"),
                    "needs `system_prompt`",
                ))
            }
            None => {}
        }
    }
    let total_weight: u64 = arms.iter().map(|a| u64::from(a.weight)).sum();
    if total_weight == 0 {
        return Err(invalid(
            format!("{path}.split"),
            "weights must not all be 0",
        ));
    }
    let sticky = match r.sticky.as_deref() {
        None | Some("none") => Sticky::None,
        Some("user") => Sticky::User,
        Some(s) => match s.strip_prefix("header:") {
            Some(h) => Sticky::Header(
                HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()).map_err(|_| {
                    invalid(
                        format!("{path}.sticky"),
                        format!("`{h}` is not a header name"),
                    )
                })?,
            ),
            None => {
                return Err(invalid(
                    format!("{path}.sticky"),
                    format!("`{s}`: expected user, header:<name> or none"),
                ))
            }
        },
    };
    let fallback = r
        .fallback
        .iter()
        .enumerate()
        .map(|(j, name)| find(format!("{path}.fallback[{j}]"), name))
        .collect::<Result<Vec<_>, _>>()?;
    let matcher = build_matcher(&format!("{path}.match"), r.matcher.unwrap_or_default())?;
    let shadow = match r.shadow {
        None => None,
        Some(s) => {
            let model = find(format!("{path}.shadow.model"), &s.model)?;
            if !(s.percent > 0.0 && s.percent <= 100.0) {
                return Err(invalid(
                    format!("{path}.shadow.percent"),
                    "must be > 0 and <= 100",
                ));
            }
            Some(Shadow {
                model,
                percent: s.percent,
            })
        }
    };
    let capture = match r.capture {
        None => None,
        Some(c) => {
            let p = format!("{path}.capture");
            if c.path.trim().is_empty() {
                return Err(invalid(format!("{p}.path"), "must not be empty"));
            }
            let sample = c.sample.unwrap_or(1.0);
            if !(sample > 0.0 && sample <= 1.0) {
                return Err(invalid(format!("{p}.sample"), "must be > 0 and <= 1"));
            }
            let only_model = match &c.only_model {
                Some(m) => {
                    let i = find(format!("{p}.only_model"), m)?;
                    if !arms.iter().any(|a| a.model == i) && !fallback.contains(&i) {
                        return Err(invalid(
                            format!("{p}.only_model"),
                            format!("`{m}` never answers this route"),
                        ));
                    }
                    Some(i)
                }
                None => None,
            };
            let redact = c
                .redact
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    Regex::new(r).map_err(|e| invalid(format!("{p}.redact[{j}]"), e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(crate::capture::CaptureConfig {
                path: base.join(&c.path),
                sample,
                only_model,
                redact: Arc::new(redact),
                max_file_bytes: match c.max_file_bytes {
                    Some(0) => return Err(invalid(format!("{p}.max_file_bytes"), "must be > 0")),
                    m => m.unwrap_or(100 << 20),
                },
            })
        }
    };
    Ok(Route {
        name: r.name,
        matcher,
        arms,
        total_weight,
        sticky,
        fallback,
        max_concurrency: match r.max_concurrency {
            Some(0) => return Err(invalid(format!("{path}.max_concurrency"), "must be > 0")),
            m => m,
        },
        budget_usd_per_hour: match r.budget_usd_per_hour {
            Some(b) if !b.is_finite() || b <= 0.0 => {
                return Err(invalid(
                    format!("{path}.budget_usd_per_hour"),
                    "must be a number > 0",
                ))
            }
            b => b,
        },
        prompts,
        shadow,
        capture,
    })
}

fn build_matcher(path: &str, m: RawMatch) -> Result<Matcher, ConfigError> {
    let regex = |key: &str, s: Option<String>| {
        s.map(|s| {
            Regex::new(&s)
                .map_err(|e| invalid(format!("{path}.{key}"), format!("invalid regex: {e}")))
        })
        .transpose()
    };
    if m.model.as_ref().is_some_and(|v| v.is_empty()) {
        return Err(invalid(
            format!("{path}.model"),
            "must list at least one model name",
        ));
    }
    if m.endpoint.as_ref().is_some_and(|v| v.is_empty()) {
        return Err(invalid(
            format!("{path}.endpoint"),
            "must list at least one endpoint",
        ));
    }
    let mut headers = Vec::new();
    for (k, v) in m.headers.unwrap_or_default() {
        let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| invalid(format!("{path}.headers.{k}"), "not a valid header name"))?;
        headers.push((name, v));
    }
    let prompt_tokens = match m.prompt_tokens {
        None => None,
        Some(r) => {
            let (lo, hi) = (r.min.unwrap_or(0), r.max.unwrap_or(u64::MAX));
            if r.min.is_none() && r.max.is_none() {
                return Err(invalid(
                    format!("{path}.prompt_tokens"),
                    "give min, max or both",
                ));
            }
            if lo > hi {
                return Err(invalid(
                    format!("{path}.prompt_tokens"),
                    "min is larger than max",
                ));
            }
            Some((lo, hi))
        }
    };
    Ok(Matcher {
        models: m.model,
        headers,
        user: regex("user", m.user)?,
        metadata: m.metadata.unwrap_or_default().into_iter().collect(),
        system: regex("system", m.system)?,
        content: regex("content", m.content)?,
        prompt_tokens,
        tools: m.tools,
        endpoints: m.endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const BASE: &str = r#"
upstreams:
  openai: { url: "http://127.0.0.1:1/v1/", api_key_env: K }
models:
  gpt-4o: { upstream: openai, id: gpt-4o-2024-08-06 }
  ft: { upstream: openai, id: "ft:gpt-4o-2024-08-06:acme:support:A1" }
routes:
  - name: support
    match: { model: [gpt-4o, support], headers: { X-Team: support } }
    split:
      - { model: ft, weight: 90 }
      - { model: gpt-4o, weight: 10 }
    sticky: user
    fallback: [gpt-4o]
  - name: default
    split: [{ model: gpt-4o }]
"#;

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml, &no_env).unwrap_err().to_string()
    }

    #[test]
    fn valid_config_resolves_everything() {
        let c = Config::from_yaml(BASE, &|k| (k == "K").then(|| "sk-x".to_owned())).unwrap();
        assert_eq!(c.upstreams[0].url, "http://127.0.0.1:1/v1");
        assert!(
            matches!(&c.upstreams[0].auth, Auth::Key { key: Some(k), .. } if k.expose() == "sk-x")
        );
        assert_eq!(c.routes[0].total_weight, 100);
        assert_eq!(c.routes[0].matcher.headers[0].0.as_str(), "x-team");
        assert_eq!(c.listed_models, vec!["gpt-4o", "support"]);
        let ft = &c.models[c.model_index("ft").unwrap()];
        assert_eq!(
            ft.price_source,
            PriceSource::Table {
                key: "ft:gpt-4o-2024-08-06",
                as_of: "2025-09-05"
            }
        );
        assert_eq!(c.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(c.routes[1].matcher.is_catch_all());
        assert_eq!(ft.training_cost_usd(), None);
    }

    #[test]
    fn training_cost_declared_or_priced_from_training_tokens() {
        let env = |k: &str| (k == "K").then(|| "sk-x".to_owned());
        let with = |model_extra: &str| {
            BASE.replace(
                r#"id: "ft:gpt-4o-2024-08-06:acme:support:A1" }"#,
                &format!(r#"id: "ft:gpt-4o-2024-08-06:acme:support:A1", {model_extra} }}"#),
            )
        };
        let c = Config::from_yaml(&with("training_cost_usd: 412.5"), &env).unwrap();
        assert_eq!(
            c.models[c.model_index("ft").unwrap()].training_cost_usd(),
            Some(412.5)
        );
        // 2M training tokens at the table's $25 per 1M
        let c = Config::from_yaml(&with("training_tokens: 2000000"), &env).unwrap();
        assert_eq!(
            c.models[c.model_index("ft").unwrap()].training_cost_usd(),
            Some(50.0)
        );
        for (extra, path) in [
            ("training_cost_usd: -1", "models.ft.training_cost_usd"),
            (
                "training_cost_usd: 1, training_tokens: 5",
                "models.ft.training_tokens",
            ),
        ] {
            let e = err(&with(extra));
            assert!(e.starts_with(&format!("{path}:")), "{extra}: {e}");
        }
        // gpt-4o has no training rate in the table
        let e = err(&BASE.replace(
            "id: gpt-4o-2024-08-06 }",
            "id: gpt-4o-2024-08-06, training_tokens: 5 }",
        ));
        assert!(e.starts_with("models.gpt-4o.training_tokens:"), "{e}");
        let e = err(&BASE.replace(
            "sticky: user",
            "sticky: user\n    shadow: { model: ft, percent: 0 }",
        ));
        assert!(e.starts_with("routes[0].shadow.percent:"), "{e}");
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = err(&BASE.replace("{ model: ft, weight: 90 }", "{ model: ft, wieght: 90 }"));
        assert!(e.starts_with("routes[0].split[0].wieght:"), "{e}");
        let e = err(&format!(
            "{BASE}\nserver: {{ listen: 127.0.0.1:1, admin: x }}"
        ));
        assert!(e.starts_with("server.admin:"), "{e}");
        let e = err(&BASE.replace("headers: {", "header: {"));
        assert!(e.starts_with("routes[0].match.header:"), "{e}");
        let e = err(&BASE.replace("api_key_env: K", "api_key_env: K, kindd: azure"));
        assert!(e.starts_with("upstreams.openai.kindd:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_their_path() {
        let cases = [
            (
                BASE.replace(
                    "- { model: gpt-4o, weight: 10 }",
                    "- { model: gpt-5, weight: 10 }",
                ),
                "routes[0].split[1].model",
            ),
            (
                BASE.replace("fallback: [gpt-4o]", "fallback: [nope]"),
                "routes[0].fallback[0]",
            ),
            (
                BASE.replace("id: gpt-4o-2024-08-06", "id: my-llama"),
                "models.gpt-4o.price",
            ),
            (
                BASE.replace("sticky: user", "sticky: cookie"),
                "routes[0].sticky",
            ),
            (
                BASE.replace("{ model: ft, weight: 90 }", "{ model: ft }"),
                "routes[0].split",
            ),
            (
                BASE.replace(
                    "upstream: openai, id: gpt-4o",
                    "upstream: azure, id: gpt-4o",
                ),
                "models.gpt-4o.upstream",
            ),
            (
                BASE.replace("http://127.0.0.1:1/v1/", "ftp://x"),
                "upstreams.openai.url",
            ),
            (
                BASE.replace("name: default", "name: support"),
                "routes[1].name",
            ),
            (
                format!("{BASE}  - name: late\n    split: [{{ model: ft }}]\n"),
                "routes[2]",
            ),
            (
                BASE.replace("headers: { X-Team: support }", "user: \"(\""),
                "routes[0].match.user",
            ),
            (
                BASE.replace("weight: 90", "weight: 0")
                    .replace("weight: 10", "weight: 0"),
                "routes[0].split",
            ),
            (
                BASE.replace("api_key_env: K", "api_key_env: K, auth: passthrough"),
                "upstreams.openai.api_key_env",
            ),
            (
                BASE.replace("api_key_env: K", "api_key_env: K, kind: azure"),
                "upstreams.openai.api_version",
            ),
            (
                format!("server: {{ workers: 0 }}\n{BASE}"),
                "server.workers",
            ),
        ];
        for (yaml, path) in cases {
            let e = err(&yaml);
            assert!(
                e.starts_with(&format!("{path}:")),
                "expected {path}, got: {e}"
            );
        }
    }

    #[test]
    fn exposure_clients_and_durations() {
        let with_key = |k: &str| (k == "K" || k == "CK").then(|| "v".to_owned());
        let open = format!("{BASE}\nserver: {{ listen: \"0.0.0.0:8080\" }}\n");
        let e = Config::from_yaml(&open, &with_key).unwrap_err().to_string();
        assert!(e.starts_with("clients: required"), "{e}");
        let allowed = open.replace(
            "listen: \"0.0.0.0:8080\"",
            "listen: \"0.0.0.0:8080\", allow_unauthenticated: true",
        );
        assert!(Config::from_yaml(&allowed, &with_key).is_ok());
        let with_clients = format!(
            "{open}clients: [{{ name: a, key_env: CK }}, {{ name: b, key_sha256: {} }}]\n",
            "ab".repeat(32)
        );
        let c = Config::from_yaml(&with_clients, &with_key).unwrap();
        assert_eq!(c.clients.len(), 2);
        assert!(
            !format!("{:?}", c.clients).contains("ab"),
            "hashes stay out of Debug output"
        );
        let cases = [
            (
                format!("{BASE}clients: [{{ name: a, key_env: UNSET }}]\n"),
                "clients[0].key_env",
            ),
            (
                format!("{BASE}clients: [{{ name: a, key_sha256: xyz }}]\n"),
                "clients[0].key_sha256",
            ),
            (format!("{BASE}clients: [{{ name: a }}]\n"), "clients[0]"),
            (
                format!("{BASE}clients: [{{ name: a, key_env: CK }}, {{ name: a, key_env: K }}]\n"),
                "clients[1].name",
            ),
            (
                format!("{BASE}clients: [{{ name: a, key_env: CK }}]\n")
                    .replace("api_key_env: K", "auth: passthrough"),
                "upstreams.openai.auth",
            ),
            (
                BASE.replace("api_key_env: K", "api_key_env: K, timeouts: { idle: soon }"),
                "upstreams.openai.timeouts.idle",
            ),
            (
                BASE.replace("api_key_env: K", "api_key_env: K, retries: { maxx: 1 }"),
                "upstreams.openai.retries.maxx",
            ),
            (
                format!("{BASE}health: {{ failures: 0 }}\n"),
                "health.failures",
            ),
        ];
        for (yaml, path) in cases {
            let e = Config::from_yaml(&yaml, &with_key).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{path}:")),
                "expected {path}, got: {e}"
            );
        }
        let t = Config::from_yaml(
            &BASE.replace(
                "api_key_env: K",
                "api_key_env: K, timeouts: { idle: 250ms, total: 2m, headers: 1.5 }",
            ),
            &with_key,
        )
        .unwrap();
        let t = t.upstreams[0].timeouts;
        assert_eq!(
            (
                t.idle.as_millis(),
                t.total.as_secs(),
                t.headers.as_millis(),
                t.connect.as_secs()
            ),
            (250, 120, 1500, 10)
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sk-live-123".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let c = Config::from_yaml(BASE, &|_| Some("sk-live-123".to_owned())).unwrap();
        assert!(!format!("{c:?}").contains("sk-live"));
    }
}
