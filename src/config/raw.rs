//! The YAML shape users write, deserialized strictly: every struct rejects unknown keys, so a typo
//! fails with its key path. Nothing here is used at run time; see [`super::Config`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::request::Endpoint;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub models: BTreeMap<String, RawModel>,
    pub routes: Vec<RawRoute>,
    /// API keys of tailor's own clients; when present every API request needs one.
    pub clients: Option<Vec<RawClient>>,
    #[serde(default)]
    pub health: RawHealth,
    /// Where `/economics`, the status page and `tailor report` read the fleet's counters.
    pub economics: Option<RawEconomics>,
    /// The store budgets and rate limits are counted in (default: this process).
    #[serde(default)]
    pub shared_state: RawSharedState,
    #[serde(default)]
    pub limits: Vec<RawLimit>,
    /// Every other `/v1/...` path (files, batches, fine-tuning, moderations, images, audio) is
    /// forwarded to one upstream as it is.
    pub passthrough: Option<RawPassthrough>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassthrough {
    pub upstream: String,
    /// Largest body forwarded (default 512 MiB, OpenAI's file size limit).
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSharedState {
    /// `redis://host:port/db` (or a Valkey server).
    pub redis: Option<String>,
    /// The longest the request path waits on the store.
    pub timeout: Option<Dur>,
    /// allow | deny, when the store is down or slow.
    pub on_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub name: String,
    pub client: Option<String>,
    pub route: Option<String>,
    pub model: Option<String>,
    pub usd: Option<RawUsd>,
    pub tokens_per_minute: Option<u64>,
    pub requests_per_minute: Option<u64>,
    /// Output tokens reserved for a request that sets no max_tokens (default 4,096).
    pub default_max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsd {
    pub max: f64,
    /// minute | hour | day | month (calendar, UTC)
    pub per: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEconomics {
    pub prometheus_url: String,
    /// How long a page waits for Prometheus.
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub name: String,
    /// Hex SHA-256 of the key (the key itself is never stored in the file).
    pub key_sha256: Option<String>,
    /// Or: the environment variable holding the key.
    pub key_env: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Consecutive failures that take a model out of rotation.
    pub failures: Option<u32>,
    /// How long it stays out.
    pub cooldown: Option<Dur>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub max_sse_event_bytes: Option<usize>,
    pub request_id_key_env: Option<String>,
    pub drain_timeout: Option<Dur>,
    pub max_connections: Option<usize>,
    pub workers: Option<usize>,
    pub shadow_max_concurrency: Option<usize>,
    pub max_concurrency: Option<usize>,
    pub header_read_timeout: Option<Dur>,
    pub max_header_count: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub allow_unauthenticated: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    #[default]
    Openai,
    Azure,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawAuth {
    /// Send the key from `api_key_env` (the default when `api_key_env` is set).
    Key,
    /// Forward the caller's own `Authorization` (and `api-key`) header.
    Passthrough,
    /// Send no credentials (a local OpenAI-compatible server).
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default)]
    pub kind: UpstreamKind,
    pub url: String,
    pub api_key_env: Option<String>,
    pub auth: Option<RawAuth>,
    pub api_version: Option<String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub retries: RawRetries,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Dur>,
    /// From sending the request to the response headers.
    pub headers: Option<Dur>,
    /// Longest gap between two body reads (per read, not total).
    pub idle: Option<Dur>,
    /// Whole non-streaming request, every try included.
    pub total: Option<Dur>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries of the same model (after the first try).
    pub max: Option<u32>,
    pub backoff: Option<Dur>,
    pub max_backoff: Option<Dur>,
    /// Longest `retry-after` tailor waits for.
    pub retry_after_cap: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub upstream: String,
    pub id: String,
    /// For Azure deployments (whose `id` is a deployment name): the OpenAI model id to price by.
    pub base_model: Option<String>,
    pub price: Option<RawPrice>,
    /// One-off cost of the fine-tune, USD (for the break-even).
    pub training_cost_usd: Option<f64>,
    /// Or: training tokens, priced at the built-in fine-tuning training rate.
    pub training_tokens: Option<u64>,
    /// A fee billed per hour while the model is deployed (Azure fine-tuned deployments), USD.
    pub hosting_usd_per_hour: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub output: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: Option<RawMatch>,
    pub split: Vec<RawArm>,
    pub sticky: Option<String>,
    #[serde(default)]
    pub fallback: Vec<String>,
    pub max_concurrency: Option<usize>,
    /// Spend alert threshold for this route, USD per hour (exported for the shipped alert rule).
    pub budget_usd_per_hour: Option<f64>,
    /// A sampled copy of the route's requests to another model.
    pub shadow: Option<RawShadow>,
    /// Successful answers written as a fine-tuning dataset.
    pub capture: Option<RawCapture>,
    /// The window and the quality margin of the route's A/B answer.
    pub experiment: Option<RawExperiment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    /// RFC 3339 time the comparison starts (default: the start of the data).
    pub since: Option<String>,
    /// How much lower the fine-tune's mean feedback may be and still count as "not worse".
    pub quality_margin: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub path: String,
    pub sample: Option<f64>,
    pub only_model: Option<String>,
    #[serde(default)]
    pub redact: Vec<String>,
    pub max_file_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub model: String,
    pub percent: f64,
    /// A model asked to compare the primary and shadow answers.
    pub judge: Option<RawJudge>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJudge {
    pub model: String,
    /// A file with the judge's instructions (default: tailor's own).
    pub prompt: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default, deserialize_with = "one_or_many")]
    pub model: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub user: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub system: Option<String>,
    pub content: Option<String>,
    pub prompt_tokens: Option<RawRange>,
    pub tools: Option<bool>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub endpoint: Option<Vec<Endpoint>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRange {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArm {
    pub model: String,
    pub weight: Option<u32>,
    /// A file whose text becomes this arm's system message.
    pub system_prompt: Option<String>,
    /// `prepend` (default): before the client's messages; `replace`: instead of the client's
    /// system and developer messages.
    pub system_prompt_mode: Option<String>,
}

/// Accepts `x` or `[x, y]`.
fn one_or_many<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(x) => vec![x],
        OneOrMany::Many(v) => v,
    }))
}

/// A duration: `250ms`, `30s`, `5m`, `1h`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        let err = |s: &str| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration like 250ms, 30s, 5m or a number of seconds"
            ))
        };
        let secs = match Raw::deserialize(d)? {
            Raw::Secs(x) => x,
            Raw::Text(t) => {
                let t = t.trim();
                let split = t
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: f64 = num.parse().map_err(|_| err(t))?;
                match unit.trim() {
                    "ms" => n / 1000.0,
                    "s" | "" => n,
                    "m" => n * 60.0,
                    "h" => n * 3600.0,
                    _ => return Err(err(t)),
                }
            }
        };
        if !secs.is_finite() || !(0.0..=31_536_000.0).contains(&secs) {
            return Err(serde::de::Error::custom("duration out of range"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}
