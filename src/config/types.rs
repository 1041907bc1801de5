//! The validated runtime types the request path reads: resolved indices, compiled regexes,
//! integer prices. Nothing "not resolved yet" survives validation (build.rs, route.rs).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use regex::Regex;

use super::error::{invalid, ConfigError};
pub use super::raw::UpstreamKind;
use super::secret::Secret;
use crate::request::Endpoint;
use crate::usage::price::Price;

/// Default `server.max_body_bytes`: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// hyper refuses requests with more headers than this before tailor sees them.
pub const MAX_HEADER_COUNT_LIMIT: usize = 512;

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
    /// Read the economics from Prometheus (`economics:`); without it, from this process.
    pub economics: Option<EconomicsSource>,
    /// Where budgets and rate limits are counted.
    pub shared_state: SharedState,
    pub limits: Vec<Limit>,
    /// Other `/v1/...` paths forwarded as they are (`passthrough:`); None: they answer 404.
    pub passthrough: Option<Passthrough>,
    /// Request spans exported over OTLP/HTTP (`telemetry:`); `None`: no tracing work at all.
    pub telemetry: Option<TelemetryConfig>,
    /// Files the config reads besides itself (arm prompts): a change to one reloads it too.
    pub files: Vec<PathBuf>,
}

/// `passthrough:`: where the rest of the OpenAI API goes.
#[derive(Debug, Clone)]
pub struct Passthrough {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Largest request body forwarded; bodies stream, this is not a buffer size.
    pub max_body_bytes: u64,
}

/// Default `passthrough.max_body_bytes`: 512 MiB, the largest file OpenAI's Files API takes.
pub const DEFAULT_PASSTHROUGH_MAX_BODY_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Largest SSE event read from an upstream; a larger one ends the stream with an error event.
    pub max_sse_event_bytes: usize,
    /// The key request ids are signed with (`request_id_key_env`), shared by replicas; without
    /// it each process signs with a random key of its own.
    pub request_id_key: Option<Secret>,
    /// After SIGTERM: how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// Open API connections at most; more are closed at once.
    pub max_connections: usize,
    /// Threads serving the API, each with its own event loop and upstream connection pools, like
    /// nginx's worker processes; each accepts its connections on a listening socket of its own.
    /// Default: one per CPU.
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

/// Where and how request spans are exported (`telemetry:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `{otlp_endpoint}/v1/traces`.
    pub traces_url: String,
    pub service_name: String,
    pub queue_size: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
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
    /// The tokenizer of the OpenAI model this is (Azure: its `base_model`), o200k_base if unknown.
    pub fn encoding(&self) -> crate::tokens::Encoding {
        crate::tokens::Encoding::for_model(self.tokenizer_name()).0
    }

    /// Whether [`Model::encoding`] knows the model (else it assumes o200k_base).
    pub fn encoding_known(&self) -> bool {
        crate::tokens::Encoding::for_model(self.tokenizer_name()).1
    }

    fn tokenizer_name(&self) -> &str {
        self.base_model.as_deref().unwrap_or(&self.id)
    }

    /// The fine-tune's one-off training cost, if declared.
    pub fn training_cost_usd(&self) -> Option<f64> {
        self.training_cost
    }

    /// Which side of a base vs fine-tune comparison this model is on. The one rule behind both
    /// `tailor_model_info{kind}` (dashboards, alerts) and the economics (status page, `tailor
    /// report`), so the two can never disagree: a fine-tune is an `ft:` id (OpenAI), an `ft:`
    /// `base_model` (an Azure deployment of one), or a model declared with a training cost or an
    /// hourly hosting fee, because only a fine-tune has those and its id may say nothing (an Azure
    /// deployment name, a model on your own server).
    pub fn kind(&self) -> ModelKind {
        let ft_id = |id: &str| id.starts_with("ft:");
        if ft_id(&self.id)
            || self.base_model.as_deref().is_some_and(ft_id)
            || self.training_cost.is_some()
            || self.hosting_usd_per_hour.is_some()
        {
            ModelKind::FineTune
        } else {
            ModelKind::Base
        }
    }
}

/// See [`Model::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Base,
    FineTune,
}

impl ModelKind {
    /// The `kind` label of `tailor_model_info`.
    pub fn label(self) -> &'static str {
        match self {
            ModelKind::Base => "base",
            ModelKind::FineTune => "fine_tune",
        }
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
    /// Billed per hour while deployed, whatever the traffic (Azure fine-tuned deployments).
    pub hosting_usd_per_hour: Option<f64>,
    /// Its upstream URIs and `host` header, worked out when the config is built.
    pub addresses: super::Addresses,
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
    /// Its tokens as the system message it is sent as, counted once (on the first sampled
    /// capture after the encoder is loaded): tokenizing costs ~25 ns a byte.
    pub tokens: std::sync::OnceLock<u64>,
}

impl ArmPrompt {
    /// The prompt's tokens as a system message for `model`'s encoding; bytes / 4 (not kept)
    /// while the encoder is not loaded yet. For the request path.
    pub fn tokens_if_loaded(&self, model: &Model) -> u64 {
        let enc = model.encoding();
        match self.tokens.get() {
            Some(n) => *n,
            None if enc.loaded().is_some() => *self
                .tokens
                .get_or_init(|| crate::tokens::chat::system_prompt_tokens(enc, &self.text)),
            None => self.text.len().div_ceil(4) as u64,
        }
    }
}

/// The store of `limits:` counters (`shared_state:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    /// None: an in-process store (one replica).
    pub redis: Option<String>,
    pub timeout: Duration,
    pub on_error: OnError,
}

/// What a request gets when the shared store is down or slower than its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Allow,
    Deny,
}

/// A calendar window of a dollar budget (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Minute,
    Hour,
    Day,
    Month,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Minute => "minute",
            Per::Hour => "hour",
            Per::Day => "day",
            Per::Month => "month",
        }
    }
}

/// One entry of `limits:`: the scopes it applies to (all given must match) and its caps.
#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub client: Option<String>,
    pub route: Option<usize>,
    pub model: Option<usize>,
    /// A dollar budget in picodollars per calendar window.
    pub usd: Option<(u64, Per)>,
    pub tokens_per_minute: Option<u64>,
    pub requests_per_minute: Option<u64>,
    pub default_max_tokens: u64,
}

impl Limit {
    /// "$25.00 per day, 200000 tokens/min, 600 requests/min"
    pub fn describe_caps(&self) -> String {
        let mut caps = Vec::new();
        if let Some((max, per)) = self.usd {
            caps.push(format!("${:.2} per {}", max as f64 / 1e12, per.as_str()));
        }
        if let Some(t) = self.tokens_per_minute {
            caps.push(format!("{t} tokens/min"));
        }
        if let Some(r) = self.requests_per_minute {
            caps.push(format!("{r} requests/min"));
        }
        caps.join(", ")
    }
}

/// Where the fleet's counters are read (`economics:`).
#[derive(Debug, Clone)]
pub struct EconomicsSource {
    /// Base URL of the Prometheus HTTP API, without a trailing slash.
    pub prometheus_url: String,
    pub timeout: Duration,
}

/// A sampled copy of a route's requests to another model, answered to no one.
#[derive(Debug)]
pub struct Shadow {
    pub model: usize,
    /// Percent of the route's requests, 0 < p <= 100.
    pub percent: f64,
    pub judge: Option<Judge>,
}

/// A model that compares each primary answer with its shadow's.
#[derive(Debug)]
pub struct Judge {
    pub model: usize,
    /// Its instructions (a file, or tailor's default).
    pub prompt: Arc<str>,
}

/// The window and margin of a route's A/B answer (`routes[].experiment`).
#[derive(Debug, Clone, Copy)]
pub struct Experiment {
    /// Counting starts here (None: at the start of the data).
    pub since: Option<std::time::SystemTime>,
    /// The fine-tune's mean feedback may be this much lower and still count as not worse.
    pub quality_margin: f64,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            since: None,
            quality_margin: 0.02,
        }
    }
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
    pub capture: Option<CaptureConfig>,
    pub experiment: Experiment,
}

/// How a route captures its answers as a dataset (from `routes[].capture`).
#[derive(Debug)]
pub struct CaptureConfig {
    pub path: PathBuf,
    /// Fraction of successful requests captured, 0 < s <= 1.
    pub sample: f64,
    /// Capture answers of this model only.
    pub only_model: Option<usize>,
    /// Replaced by `[REDACTED]` in every message string.
    pub redact: Arc<Vec<Regex>>,
    /// Rotate when the file would grow past this.
    pub max_file_bytes: u64,
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

    /// Works out every model's [`super::Addresses`] from its upstream as the config now stands:
    /// at load, and again whenever something changed upstream URLs after it (the demo points
    /// them at its simulator) before the config is served.
    pub fn refresh_addresses(&mut self) {
        for m in &mut self.models {
            m.addresses = match self.upstreams.get(m.upstream) {
                Some(u) => super::Addresses::new(u, &m.id),
                None => Default::default(),
            };
        }
    }
}
