//! One `model_list` entry (a LiteLLM "deployment") → the upstream it calls, the model id sent
//! there, its price and its load-balancing weights (the providers that convert: [`super::providers`]).

use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::providers::{is_openai_model, LITELLM_AZURE_DEFAULT_API_VERSION, NOT_A_KEY, PROVIDERS};
use crate::import::decimal::Decimal;
use crate::import::note::Notes;
use crate::import::out::{Kind, Price};
use crate::usage::price;

/// Who authenticates an upstream. A key written in the source is kept only as its hash, to tell
/// upstreams apart; it is never written out.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    Literal([u8; 32]),
    None,
}

/// What tells two upstreams apart.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamKey {
    pub kind: Kind,
    pub url: String,
    pub key: KeySource,
    pub api_version: Option<String>,
}

/// A converted `model_list` entry.
pub struct Deployment {
    pub path: String,
    /// `model_name`: what clients ask for.
    pub group: String,
    /// `model_info.id`, which fallbacks may name.
    pub info_id: Option<String>,
    /// `litellm_params.model`, for comments.
    pub source: String,
    pub provider: &'static str,
    pub upstream: UpstreamKey,
    pub placeholder_url: bool,
    pub id: String,
    pub base_model: Option<String>,
    pub price: Option<Price>,
    /// No price known: written as 0 and reported once the model has its name.
    pub unpriced: bool,
    /// `weight`, `rpm`, `tpm` as written.
    pub weights: [Option<Value>; 3],
}

/// Keys of `litellm_params` read here.
const HANDLED: &[&str] = &[
    "model",
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "custom_llm_provider",
    "litellm_credential_name",
    "weight",
    "rpm",
    "tpm",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "base_model",
];

/// `litellm_params` keys tailor has no place for, grouped by the reason.
const UNCONVERTED: &[(&[&str], &str)] = &[
    (
        &[
            "temperature", "max_tokens", "max_completion_tokens", "top_p", "seed", "stop",
            "frequency_penalty", "presence_penalty", "n", "response_format", "tools",
            "tool_choice", "user", "logprobs", "reasoning_effort", "drop_params",
            "additional_drop_params", "metadata", "extra_body", "stream",
        ],
        "request parameters LiteLLM adds or drops: tailor forwards the client's request body as sent",
    ),
    (
        &["timeout", "stream_timeout", "max_retries", "num_retries"],
        "per-deployment timeouts and retries: tailor sets them per upstream (`upstreams.<name>.timeouts`, `.retries`)",
    ),
    (
        &[
            "azure_ad_token", "azure_ad_token_provider", "tenant_id", "client_id",
            "client_secret", "azure_username", "azure_password", "azure_scope",
        ],
        "Microsoft Entra ID credentials: tailor authenticates to Azure with an `api-key`",
    ),
    (
        &["extra_headers", "headers", "organization"],
        "extra upstream headers: tailor adds none of its own (the client's headers pass through)",
    ),
    (
        &["input_cost_per_second", "output_cost_per_second"],
        "per-second pricing: tailor prices tokens",
    ),
];

/// `model_info` keys read here; the rest is LiteLLM's metadata and access control.
const INFO_HANDLED: &[&str] = &[
    "id",
    "base_model",
    "mode",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
];

pub fn str_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn valid_url(u: &str) -> bool {
    u.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some()
            && uri.query().is_none()
    })
}

/// A value that may be `os.environ/NAME`: LiteLLM reads the variable at start-up; tailor needs
/// URLs and versions in the file, so the variable is read now. `Err`: why there is no value.
fn resolve(
    v: &Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Notes,
) -> Result<String, String> {
    let s = str_of(Some(v)).ok_or("not a string")?;
    if let Some(var) = s.strip_prefix("os.environ/") {
        return match env(var).filter(|x| !x.is_empty()) {
            Some(x) => {
                notes.check(
                    path,
                    format!(
                        "read from ${var} while importing (routes.yaml holds the value itself)"
                    ),
                );
                Ok(x)
            }
            None => Err(format!(
                "${var} is not set while importing (routes.yaml holds the value itself)"
            )),
        };
    }
    if s.starts_with("os.") && s.contains('/') {
        return Err(format!(
            "`{s}` looks like a misspelt `os.environ/` reference"
        ));
    }
    Ok(s)
}

/// Converts entry `i`, or says why not.
pub fn convert(
    i: usize,
    entry: &Value,
    credentials: &Mapping,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Notes,
) -> Option<Deployment> {
    let path = format!("model_list[{i}]");
    let Some(m) = entry.as_mapping() else {
        notes.skip(path, "not a mapping");
        return None;
    };
    for (k, _) in m {
        let k = str_of(Some(k)).unwrap_or_default();
        if !matches!(k.as_str(), "model_name" | "litellm_params" | "model_info") {
            notes.skip(format!("{path}.{k}"), "no tailor equivalent");
        }
    }
    let Some(group) = str_of(m.get("model_name")) else {
        notes.skip(path, "no `model_name`");
        return None;
    };
    let Some(mut params) = m.get("litellm_params").and_then(Value::as_mapping).cloned() else {
        notes.skip(path, "no `litellm_params`");
        return None;
    };
    let pp = format!("{path}.litellm_params");
    if let Some(name) = str_of(params.get("litellm_credential_name")) {
        match credentials.get(name.as_str()).and_then(Value::as_mapping) {
            Some(values) => {
                for (k, v) in values {
                    if !params.contains_key(k) {
                        params.insert(k.clone(), v.clone());
                    }
                }
            }
            None => notes.skip(
                format!("{pp}.litellm_credential_name"),
                format!("no `credential_list` entry named `{name}`"),
            ),
        }
    }
    let empty = Mapping::new();
    let info = m
        .get("model_info")
        .and_then(Value::as_mapping)
        .unwrap_or(&empty);
    let Some(model) = str_of(params.get("model")) else {
        notes.skip(format!("{pp}.model"), "missing");
        return None;
    };
    let what = format!("{path} `{group}` ({model})");
    if group.contains('*') || model.contains('*') {
        notes.skip(what, "a wildcard sends the client's own model name upstream; tailor sends each name to a fixed model: list the models you use one by one");
        return None;
    }
    if let Some(mode) = str_of(info.get("mode")) {
        if !matches!(
            mode.as_str(),
            "chat" | "completion" | "embedding" | "responses"
        ) {
            notes.skip(
                what,
                format!("mode `{mode}`: tailor serves chat, completions, embeddings and responses"),
            );
            return None;
        }
    }
    let forced = str_of(params.get("custom_llm_provider"));
    let (provider, id) = match (&forced, model.split_once('/')) {
        (Some(f), _) => (
            f.clone(),
            model
                .strip_prefix(&format!("{f}/"))
                .unwrap_or(&model)
                .to_owned(),
        ),
        (None, Some((prefix, rest))) => (prefix.to_owned(), rest.to_owned()),
        (None, None) if is_openai_model(&model) => ("openai".to_owned(), model.clone()),
        (None, None) => {
            notes.skip(what, format!("LiteLLM finds this model's provider in its own lists; if an OpenAI-compatible server answers it, write `openai/{model}` with its `api_base`"));
            return None;
        }
    };
    let Some(prov) = PROVIDERS.iter().find(|p| p.name == provider) else {
        notes.skip(what, format!("`{provider}` is not an OpenAI-compatible API: tailor forwards the client's OpenAI request unchanged, to OpenAI, Azure OpenAI or an OpenAI-compatible server"));
        return None;
    };
    if id.is_empty() {
        notes.skip(format!("{pp}.model"), "no model id after the provider");
        return None;
    }

    // where: api_base, else LiteLLM's variable or default
    let base_path = format!("{pp}.api_base");
    let url = match params.get("api_base").or_else(|| params.get("base_url")) {
        Some(v) => resolve(v, &base_path, env, notes),
        None => match prov
            .base_env
            .and_then(|var| env(var).filter(|x| !x.is_empty()).map(|x| (var, x)))
        {
            Some((var, x)) => {
                notes.check(
                    &base_path,
                    format!("not given: LiteLLM reads ${var}, read while importing"),
                );
                Ok(x)
            }
            None => prov
                .base
                .map(str::to_owned)
                .ok_or_else(|| "not given".to_owned()),
        },
    };
    let url = url.map(|u| u.trim().trim_end_matches('/').to_owned());
    let (url, placeholder_url) = match url {
        Ok(u) if valid_url(&u) => (u, false),
        other => {
            let why = match other {
                Ok(u) => format!("`{u}` is not an http(s) URL"),
                Err(why) => why,
            };
            notes.check(
                &base_path,
                format!("{why}: written as a placeholder URL, put the server's there"),
            );
            (format!("https://replace-me-model-list-{i}.invalid"), true)
        }
    };

    // who: api_key, else LiteLLM's variable
    let key_path = format!("{pp}.api_key");
    let key = match params.get("api_key") {
        None => match prov.key_env {
            Some(var) => KeySource::Env(var.to_owned()),
            None => KeySource::None,
        },
        Some(v) => {
            let s = str_of(Some(v)).unwrap_or_default();
            match s.strip_prefix("os.environ/") {
                Some(var) if !var.is_empty() => KeySource::Env(var.to_owned()),
                _ if NOT_A_KEY.contains(&s.trim().to_ascii_lowercase().as_str()) => {
                    notes.check(
                        &key_path,
                        format!("`{s}` stands for no key: written as `auth: none`"),
                    );
                    KeySource::None
                }
                // reported with the variable's name once the upstream is named
                _ => KeySource::Literal(Sha256::digest(s.as_bytes()).into()),
            }
        }
    };

    let version_path = format!("{pp}.api_version");
    let api_version = match prov.kind {
        Kind::Azure => {
            let given = match params.get("api_version") {
                Some(v) => resolve(v, &version_path, env, notes),
                None => match env("AZURE_API_VERSION").filter(|x| !x.is_empty()) {
                    Some(x) => {
                        notes.check(
                            &version_path,
                            "not given: LiteLLM reads $AZURE_API_VERSION, read while importing",
                        );
                        Ok(x)
                    }
                    None => Err("not given".to_owned()),
                },
            };
            Some(given.unwrap_or_else(|why| {
                notes.check(
                    &version_path,
                    format!(
                        "{why}: written as LiteLLM's default, {LITELLM_AZURE_DEFAULT_API_VERSION}"
                    ),
                );
                LITELLM_AZURE_DEFAULT_API_VERSION.to_owned()
            }))
        }
        Kind::Openai => {
            if params.contains_key("api_version") {
                notes.skip(version_path, "only Azure takes an api-version");
            }
            None
        }
    };

    let (price, base_model, unpriced) = pricing(&id, &params, info, &pp, notes);

    // what else was set, one note per reason
    let mut left: Vec<(&str, Vec<String>)> = Vec::new();
    for (k, _) in &params {
        let k = str_of(Some(k)).unwrap_or_default();
        if HANDLED.contains(&k.as_str()) {
            continue;
        }
        let why = UNCONVERTED
            .iter()
            .find(|(keys, _)| keys.contains(&k.as_str()))
            .map_or("no tailor equivalent", |(_, why)| why);
        match left.iter_mut().find(|(w, _)| *w == why) {
            Some((_, keys)) => keys.push(k),
            None => left.push((why, vec![k])),
        }
    }
    for (why, keys) in left {
        notes.skip(format!("{pp}.{}", keys.join(", ")), why);
    }
    let info_left: Vec<String> = info
        .keys()
        .filter_map(|k| str_of(Some(k)))
        .filter(|k| !INFO_HANDLED.contains(&k.as_str()))
        .collect();
    if !info_left.is_empty() {
        notes.skip(
            format!("{path}.model_info.{}", info_left.join(", ")),
            "LiteLLM's deployment metadata and access control: no tailor equivalent",
        );
    }

    Some(Deployment {
        path,
        group,
        info_id: str_of(info.get("id")),
        source: model,
        provider: prov.name,
        upstream: UpstreamKey {
            kind: prov.kind,
            url,
            key,
            api_version,
        },
        placeholder_url,
        id,
        base_model,
        price,
        unpriced,
        weights: ["weight", "rpm", "tpm"].map(|k| params.get(k).cloned()),
    })
}

/// Custom per-token costs → tailor's per-1M price; else the built-in table by id or by
/// `model_info.base_model`; else nothing known (`unpriced`).
fn pricing(
    id: &str,
    params: &Mapping,
    info: &Mapping,
    pp: &str,
    notes: &mut Notes,
) -> (Option<Price>, Option<String>, bool) {
    let mut cost = |key: &str| -> Option<String> {
        let (v, path) = match params.get(key) {
            Some(v) => (v, format!("{pp}.{key}")),
            None => (
                info.get(key)?,
                format!(
                    "{}.model_info.{key}",
                    pp.trim_end_matches(".litellm_params")
                ),
            ),
        };
        let Some(d) = Decimal::from_yaml(v) else {
            notes.skip(path, "not a number >= 0");
            return None;
        };
        let (text, rounded) = d.shift(6).to_text(6);
        if rounded {
            notes.check(path, format!("tailor keeps prices to a millionth of a dollar per 1M tokens: rounded to {text}"));
        }
        Some(text)
    };
    let input = cost("input_cost_per_token");
    let output = cost("output_cost_per_token");
    let cached = cost("cache_read_input_token_cost");
    if input.is_some() || output.is_some() || cached.is_some() {
        if input.is_none() || output.is_none() {
            notes.check(pp, "only one of input_cost_per_token and output_cost_per_token: the other is priced at 0");
        }
        let price = Price {
            input: input.unwrap_or_else(|| "0".to_owned()),
            cached_input: cached,
            output: output.unwrap_or_else(|| "0".to_owned()),
        };
        return (Some(price), None, false);
    }
    if price::lookup(id).is_some() {
        return (None, None, false);
    }
    let base = str_of(info.get("base_model")).or_else(|| str_of(params.get("base_model")));
    if let Some(b) = base {
        // LiteLLM writes `azure/gpt-4o`; tailor's table is keyed by OpenAI's ids
        let b = b.rsplit('/').next().unwrap_or(&b).to_owned();
        if price::lookup(&b).is_some() {
            return (None, Some(b), false);
        }
    }
    (
        Some(Price {
            input: "0".to_owned(),
            cached_input: None,
            output: "0".to_owned(),
        }),
        None,
        true,
    )
}
