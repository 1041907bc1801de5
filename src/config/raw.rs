//! The YAML shape users write, deserialized strictly: every struct rejects unknown keys, so a typo
//! fails with its key path. Nothing here is used at run time; see [`super::Config`].

use std::collections::BTreeMap;

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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_body_bytes: Option<u64>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub upstream: String,
    pub id: String,
    /// For Azure deployments (whose `id` is a deployment name): the OpenAI model id to price by.
    pub base_model: Option<String>,
    pub price: Option<RawPrice>,
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
