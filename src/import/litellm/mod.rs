//! A LiteLLM proxy config → routes.yaml.
//!
//! | LiteLLM | tailor |
//! |---|---|
//! | `model_list[]` entry (a deployment) | a model, on an upstream shared by entries with the same URL, key and api-version |
//! | entries sharing a `model_name` | one route matching that name, one arm per entry |
//! | `weight`, else `rpm`, else `tpm` of the first entry (simple-shuffle) | arm weights (a missing one is 0, as in LiteLLM) |
//! | `api_key: os.environ/NAME` | `api_key_env: NAME`; a key written in the file is never copied |
//! | `api_base`, Azure `api_version` | `url`, `kind: azure`, `api_version` |
//! | `input_cost_per_token`, `output_cost_per_token`, `cache_read_input_token_cost` | `price` per 1M tokens, exact |
//! | `fallbacks`, `default_fallbacks` | `fallback`, after the route's other arms (LiteLLM retries within the group first) |
//! | `model_group_alias` | more names in `match.model` |
//! | `num_retries`; `allowed_fails`, `cooldown_time` | `retries.max` on every upstream; `health` |
//!
//! Everything else is listed as a note with the reason.

mod entry;
mod providers;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use serde_yaml_ng::{Mapping, Value};

use self::entry::{str_of, Deployment, KeySource};
use self::settings::Lookup;
use crate::config::Config;
use crate::import::decimal::Decimal;
use crate::import::note::{ImportError, Imported, Notes};
use crate::import::out::{Auth, Kind, Model, Plan, Route, Upstream};

/// The top-level keys only a LiteLLM proxy config has.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "model_list",
    "litellm_settings",
    "router_settings",
    "general_settings",
];

/// The top-level keys of `text` that only a LiteLLM config has; none when it is not YAML or has
/// none (`tailor check` suggests the importer when there are some).
pub fn litellm_keys(text: &str) -> Vec<&'static str> {
    let Ok(v) = serde_yaml_ng::from_str::<Value>(text) else {
        return Vec::new();
    };
    TOP_LEVEL_KEYS
        .iter()
        .copied()
        .filter(|k| v.as_mapping().is_some_and(|m| m.contains_key(*k)))
        .collect()
}

/// Converts a LiteLLM proxy config. `source` names it in the header comment; `env` reads the
/// variables that `os.environ/` URLs and versions refer to (keys stay references).
pub fn convert(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, ImportError> {
    let mut root: Value =
        serde_yaml_ng::from_str(text).map_err(|e| ImportError::Yaml(e.to_string()))?;
    root.apply_merge()
        .map_err(|e| ImportError::Yaml(e.to_string()))?;
    let Some(top) = root.as_mapping() else {
        return Err(ImportError::NotThatFormat(
            "not a LiteLLM config: the top level is not a mapping".into(),
        ));
    };
    let Some(list) = top.get("model_list").and_then(Value::as_sequence) else {
        return Err(ImportError::NotThatFormat(
            "not a LiteLLM proxy config: no `model_list` list".into(),
        ));
    };
    let mut notes = Notes::default();
    let credentials = credentials(top);
    let deployments: Vec<Deployment> = list
        .iter()
        .enumerate()
        .filter_map(|(i, e)| entry::convert(i, e, &credentials, env, &mut notes))
        .collect();

    // group by model_name, in the order of first appearance
    let mut groups: Vec<(String, Vec<Deployment>)> = Vec::new();
    for d in deployments {
        match groups.iter_mut().find(|(g, _)| *g == d.group) {
            Some((_, v)) => v.push(d),
            None => groups.push((d.group.clone(), vec![d])),
        }
    }

    let mut plan = Plan {
        header: vec![
            format!("routes.yaml converted from the LiteLLM proxy config {source} by `tailor import litellm`."),
            "Check it with `tailor check --config routes.yaml`. What was not converted, or needs a look,".into(),
            "was listed on stderr; placeholders are marked TODO below.".into(),
        ],
        ..Plan::default()
    };

    let mut upstream_keys: Vec<entry::UpstreamKey> = Vec::new();
    // one variable per key written in the file, whichever upstreams share it
    let mut literal_vars: Vec<([u8; 32], String)> = Vec::new();
    let mut model_names = HashSet::new();
    let mut route_names = HashSet::new();
    // per group: the route being built and its models' names
    let mut group_models: Vec<Vec<String>> = Vec::new();
    for (group, ds) in &groups {
        let base = sanitize(group);
        let mut names = Vec::new();
        for (k, d) in ds.iter().enumerate() {
            let wanted = match &d.info_id {
                Some(id) if sanitize(id) == *id => id.clone(),
                _ if ds.len() == 1 => base.clone(),
                _ => format!("{base}-{}", k + 1),
            };
            let name = unique(&wanted, &mut model_names);
            let up = match upstream_keys.iter().position(|u| *u == d.upstream) {
                Some(i) => i,
                None => {
                    upstream_keys.push(d.upstream.clone());
                    plan.upstreams.push(new_upstream(
                        d,
                        &plan.upstreams,
                        &mut literal_vars,
                        &mut notes,
                    ));
                    upstream_keys.len() - 1
                }
            };
            let mut comments = vec![format!("{}: {}", d.path, d.source)];
            if d.unpriced {
                comments.push("TODO: price unknown, metered at $0: set the real price".into());
                notes.check(
                    &d.path,
                    format!("no price: `{}` is not in tailor's price table, and no input_cost_per_token / output_cost_per_token or known model_info.base_model is given: model `{name}` is written with price 0 (metered at $0); set models.{name}.price (USD per 1M tokens)", d.id),
                );
            }
            plan.models.push(Model {
                name: name.clone(),
                upstream: plan.upstreams[up].name.clone(),
                id: d.id.clone(),
                base_model: d.base_model.clone(),
                price: d.price.clone(),
                comments,
            });
            names.push(name);
        }
        let route_name = unique(&base, &mut route_names);
        let (split, how) = weights(group, ds, &names, &mut notes);
        let mut comments = vec![format!("model_name `{group}`: {how}")];
        if ds.len() > 1 {
            comments.push(
                "fallback: the other deployments first, as LiteLLM retries within the group".into(),
            );
        }
        plan.routes.push(Route {
            name: route_name,
            match_models: vec![group.clone()],
            split,
            fallback: if ds.len() > 1 {
                names.clone()
            } else {
                Vec::new()
            },
            comments,
        });
        group_models.push(names);
    }

    let lookup = Lookup {
        groups: groups.iter().map(|(g, _)| g.clone()).collect(),
        group_models,
        ids: groups
            .iter()
            .flat_map(|(_, ds)| ds.iter())
            .zip(plan.models.iter())
            .filter_map(|(d, m)| Some((d.info_id.clone()?, m.name.clone())))
            .collect(),
    };
    settings::apply(top, &lookup, &mut plan, &mut notes);

    let routes = plan.routes.len();
    let yaml = plan.render();
    if routes > 0 {
        // the promise of the command: what it writes, `tailor check` accepts
        Config::from_yaml(&yaml, &|_| None).map_err(|e| ImportError::Invalid(e.to_string()))?;
    }
    Ok(Imported {
        yaml,
        notes: notes.0,
        routes,
    })
}

/// `credential_list[].credential_values` by `credential_name`.
fn credentials(top: &Mapping) -> Mapping {
    let mut out = Mapping::new();
    for c in top
        .get("credential_list")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(values)) =
            (str_of(c.get("credential_name")), c.get("credential_values"))
        {
            out.insert(Value::String(name), values.clone());
        }
    }
    out
}

fn new_upstream(
    d: &Deployment,
    existing: &[Upstream],
    literal_vars: &mut Vec<([u8; 32], String)>,
    notes: &mut Notes,
) -> Upstream {
    let u = &d.upstream;
    let host = u
        .url
        .parse::<http::Uri>()
        .ok()
        .and_then(|x| x.host().map(str::to_owned))
        .unwrap_or_default();
    let label = host.split('.').next().unwrap_or("").to_owned();
    let default_url = providers::PROVIDERS
        .iter()
        .any(|p| p.name == d.provider && p.base == Some(u.url.as_str()));
    // the provider's own API is called by the provider's name ("openai"); a resource by its
    // first host label; a bare address by provider and host ("openai-0.0.0.0")
    let hint = if d.placeholder_url {
        format!("{}-replace-me", d.provider)
    } else if default_url {
        d.provider.to_owned()
    } else if u.kind == Kind::Azure
        || (label.starts_with(|c: char| c.is_ascii_alphabetic())
            && label != "localhost"
            && label != "api")
    {
        label
    } else {
        format!("{}-{host}", d.provider)
    };
    let mut used: HashSet<String> = existing.iter().map(|x| x.name.clone()).collect();
    let name = unique(&sanitize(&hint), &mut used);
    let mut comments = Vec::new();
    if d.placeholder_url {
        comments.push(format!("TODO: the URL of {} (placeholder)", d.path));
    }
    let auth = match &u.key {
        KeySource::Env(var) => Auth::Env(var.clone()),
        KeySource::None => Auth::None,
        KeySource::Literal(hash) => {
            let var = match literal_vars.iter().find(|(h, _)| h == hash) {
                Some((_, var)) => var.clone(),
                None => {
                    let var = format!(
                        "{}_API_KEY",
                        name.to_ascii_uppercase()
                            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    );
                    literal_vars.push((*hash, var.clone()));
                    var
                }
            };
            notes.check(
                format!("{}.litellm_params.api_key", d.path),
                format!("a key written in the file is not copied (routes.yaml only names variables): set ${var} to it"),
            );
            comments.push(format!(
                "TODO: the key was written in the LiteLLM config: export {var}"
            ));
            Auth::Env(var)
        }
    };
    Upstream {
        name,
        kind: u.kind,
        url: u.url.clone(),
        auth,
        api_version: u.api_version.clone(),
        retries_max: None,
        comments,
    }
}

/// Arms of a group: LiteLLM's simple-shuffle weighs by `weight`, else `rpm`, else `tpm`, whichever
/// the first deployment sets; a deployment without it weighs 0.
fn weights(
    group: &str,
    ds: &[Deployment],
    names: &[String],
    notes: &mut Notes,
) -> (Vec<(String, Option<u32>)>, String) {
    let equal = |how: String| (names.iter().map(|n| (n.clone(), None)).collect(), how);
    if ds.len() == 1 {
        return equal("one deployment".into());
    }
    let n = ds.len();
    let Some(by) = (0..3).find(|&k| ds[0].weights[k].is_some()) else {
        return equal(format!(
            "{n} deployments, equal shares (LiteLLM's random pick)"
        ));
    };
    let key = ["weight", "rpm", "tpm"][by];
    let values: Option<Vec<Decimal>> = ds
        .iter()
        .map(|d| match &d.weights[by] {
            None => Decimal::parse("0"),
            Some(v) => Decimal::from_yaml(v),
        })
        .collect();
    let ints = values.and_then(|vs| {
        let min_exp = vs.iter().filter(|d| !d.is_zero()).map(Decimal::exp).min()?;
        let shift = (-min_exp).max(0);
        let ints: Option<Vec<u64>> = vs.iter().map(|d| d.shift(shift).to_u64()).collect();
        let mut ints = ints?;
        // 0.9 / 0.1 → 9 / 1; and very large rpm values brought under u32
        if shift > 0 || ints.iter().any(|&x| x > u64::from(u32::MAX)) {
            let g = ints.iter().fold(0, |a, &b| gcd(a, b));
            if g > 1 {
                ints.iter_mut().for_each(|x| *x /= g);
            }
        }
        ints.into_iter()
            .map(|x| u32::try_from(x).ok())
            .collect::<Option<Vec<u32>>>()
    });
    if ints.is_some() {
        for d in ds.iter().filter(|d| d.weights[by].is_none()) {
            notes.check(&d.path, format!("no `{key}` while the first deployment of `{group}` has one: weight 0, as in LiteLLM (it only serves as a fallback)"));
        }
    }
    match ints {
        Some(ws) => (
            names
                .iter()
                .cloned()
                .zip(ws.into_iter().map(Some))
                .collect(),
            format!("{n} deployments, shares by `{key}` (LiteLLM's simple-shuffle)"),
        ),
        None => {
            notes.skip(
                format!("model_list `{group}` {key}"),
                format!("the `{key}` values are not numbers >= 0 with one above 0: equal shares written"),
            );
            equal(format!("{n} deployments, equal shares"))
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A tailor name (1-64 of letters, digits, `-_.:`) for a LiteLLM one.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    if out.is_empty() {
        out.push_str("model");
    }
    out
}

/// `name`, or `name-2`, `name-3`… the first one not used yet; marks it used.
fn unique(name: &str, used: &mut HashSet<String>) -> String {
    let mut candidate = name.to_owned();
    let mut k = 2;
    while used.contains(&candidate) {
        candidate = format!("{name}-{k}");
        k += 1;
    }
    used.insert(candidate.clone());
    candidate
}
