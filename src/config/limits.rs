//! `shared_state:`, `limits:` and `passthrough:` → [`SharedState`], [`Limit`]s and
//! [`Passthrough`], checked against the clients, routes, models and upstreams they name.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::error::{check_name, invalid, ConfigError, Problems};
use super::raw::{RawLimit, RawPassthrough, RawSharedState};
use super::types::{
    Limit, OnError, Passthrough, Per, SharedState, Upstream, DEFAULT_PASSTHROUGH_MAX_BODY_BYTES,
};
use crate::usage::price::PICO_PER_USD;

pub(super) fn build_passthrough(
    raw: RawPassthrough,
    upstreams: &[Upstream],
) -> Result<Passthrough, ConfigError> {
    let Some(upstream) = upstreams.iter().position(|u| u.name == raw.upstream) else {
        let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        return Err(invalid(
            "passthrough.upstream",
            format!(
                "unknown upstream `{}` (known: {})",
                raw.upstream,
                known.join(", ")
            ),
        ));
    };
    let max_body_bytes = match raw.max_body_bytes {
        Some(0) => return Err(invalid("passthrough.max_body_bytes", "must be > 0")),
        n => n.unwrap_or(DEFAULT_PASSTHROUGH_MAX_BODY_BYTES),
    };
    Ok(Passthrough {
        upstream,
        max_body_bytes,
    })
}

pub(super) fn build_shared_state(raw: RawSharedState) -> Result<SharedState, ConfigError> {
    let redis = match raw.redis {
        None => None,
        Some(u)
            if (u.starts_with("redis://") || u.starts_with("rediss://"))
                && redis::Client::open(u.as_str()).is_ok() =>
        {
            Some(u)
        }
        Some(u) => {
            return Err(invalid(
                "shared_state.redis",
                format!(
                    "`{}`: expected redis://host:port/db",
                    u.split('@').next_back().unwrap_or("")
                ),
            ))
        }
    };
    Ok(SharedState {
        redis,
        timeout: match raw.timeout {
            Some(d) if d.0.is_zero() => return Err(invalid("shared_state.timeout", "must be > 0")),
            d => d.map_or(Duration::from_millis(5), |d| d.0),
        },
        on_error: match raw.on_error.as_deref() {
            None | Some("allow") => OnError::Allow,
            Some("deny") => OnError::Deny,
            Some(o) => {
                return Err(invalid(
                    "shared_state.on_error",
                    format!("`{o}`: expected allow or deny"),
                ))
            }
        },
    })
}

/// Every limit, each checked on its own; `clients` and `routes` are the names the config declares
/// (broken ones included: their own problem is noted where they are built).
pub(super) fn build_limits(
    raw: Vec<RawLimit>,
    clients: &[String],
    routes: &[String],
    model_index: &HashMap<String, usize>,
    p: &mut Problems,
) -> Vec<Limit> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let path = format!("limits[{i}]");
        if let Some(l) = p.take(build_limit(
            &path,
            l,
            &mut names,
            clients,
            routes,
            model_index,
        )) {
            out.push(l);
        }
    }
    out
}

fn build_limit(
    path: &str,
    l: RawLimit,
    names: &mut BTreeSet<String>,
    clients: &[String],
    routes: &[String],
    model_index: &HashMap<String, usize>,
) -> Result<Limit, ConfigError> {
    check_name(&format!("{path}.name"), &l.name)?;
    if !names.insert(l.name.clone()) {
        return Err(invalid(
            format!("{path}.name"),
            format!("limit `{}` is defined twice", l.name),
        ));
    }
    if let Some(c) = &l.client {
        let known = if clients.is_empty() {
            c == "anonymous"
        } else {
            clients.contains(c)
        };
        if !known {
            return Err(invalid(
                format!("{path}.client"),
                format!(
                    "no client named `{c}` under `clients:` (without clients, only `anonymous`)"
                ),
            ));
        }
    }
    let route =
        match &l.route {
            None => None,
            Some(r) => Some(routes.iter().position(|x| x == r).ok_or_else(|| {
                invalid(format!("{path}.route"), format!("no route named `{r}`"))
            })?),
        };
    let model = match &l.model {
        None => None,
        Some(m) => Some(*model_index.get(m).ok_or_else(|| {
            invalid(
                format!("{path}.model"),
                format!("no model named `{m}` under `models:`"),
            )
        })?),
    };
    let usd = match l.usd {
        None => None,
        Some(u) => {
            if !u.max.is_finite() || u.max <= 0.0 || u.max > 1e6 {
                return Err(invalid(
                    format!("{path}.usd.max"),
                    "must be > 0 and at most 1,000,000",
                ));
            }
            let per = match u.per.as_str() {
                "minute" => Per::Minute,
                "hour" => Per::Hour,
                "day" => Per::Day,
                "month" => Per::Month,
                p => {
                    return Err(invalid(
                        format!("{path}.usd.per"),
                        format!("`{p}`: expected minute, hour, day or month"),
                    ))
                }
            };
            Some(((u.max * PICO_PER_USD).round() as u64, per))
        }
    };
    for (k, v) in [
        ("tokens_per_minute", l.tokens_per_minute),
        ("requests_per_minute", l.requests_per_minute),
        ("default_max_tokens", l.default_max_tokens),
    ] {
        if v == Some(0) {
            return Err(invalid(format!("{path}.{k}"), "must be > 0"));
        }
    }
    if usd.is_none() && l.tokens_per_minute.is_none() && l.requests_per_minute.is_none() {
        return Err(invalid(
            path,
            "needs at least one of usd, tokens_per_minute, requests_per_minute",
        ));
    }
    Ok(Limit {
        name: l.name,
        client: l.client,
        route,
        model,
        usd,
        tokens_per_minute: l.tokens_per_minute,
        requests_per_minute: l.requests_per_minute,
        default_max_tokens: l.default_max_tokens.unwrap_or(4_096),
    })
}
