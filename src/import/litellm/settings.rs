//! `router_settings`, `litellm_settings`, `general_settings` and the other top-level keys: the few
//! with a tailor equivalent are applied to the plan (fallbacks, aliases, retries, cool-downs), each
//! of the rest becomes a note saying why it was left out.

use serde_yaml_ng::{Mapping, Value};

use super::entry::str_of;
use crate::import::decimal::Decimal;
use crate::import::note::Notes;
use crate::import::out::Plan;

/// Converted groups, by LiteLLM name, for the settings that refer to them.
pub struct Lookup {
    /// `model_name`s, in the order of the routes.
    pub groups: Vec<String>,
    /// The tailor model names of each group.
    pub group_models: Vec<Vec<String>>,
    /// `model_info.id` → tailor model name.
    pub ids: Vec<(String, String)>,
}

impl Lookup {
    /// The route index of a `model_name`.
    pub fn group(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g == name)
    }

    /// The models a fallback target names: a whole group, or one deployment by its id.
    pub fn target(&self, name: &str) -> Option<Vec<String>> {
        match self.group(name) {
            Some(i) => Some(self.group_models[i].clone()),
            None => self
                .ids
                .iter()
                .find(|(id, _)| id == name)
                .map(|(_, m)| vec![m.clone()]),
        }
    }
}

/// Settings keys tailor has no place for, by reason.
const REASONS: &[(&[&str], &str)] = &[
    (
        &["redis_host", "redis_port", "redis_password", "redis_url", "cache_params"],
        "LiteLLM's shared rpm/tpm counters and cache: tailor's shared counters are `shared_state.redis` (for `limits:`)",
    ),
    (
        &["timeout", "request_timeout", "stream_timeout"],
        "timeouts: set `upstreams.<name>.timeouts` (connect, headers, idle, total)",
    ),
    (
        &["success_callback", "failure_callback", "callbacks", "service_callback", "turn_off_message_logging"],
        "logging and observability callbacks: tailor writes access lines and Prometheus metrics",
    ),
    (&["cache"], "response caching: tailor does not cache answers"),
    (
        &["drop_params", "modify_params", "set_verbose", "json_logs"],
        "request rewriting and LiteLLM's own logging: tailor forwards the request body as sent",
    ),
    (
        &["retry_policy", "allowed_fails_policy"],
        "retries by error type: tailor retries connect errors, timeouts, 408/409/429 and 5xx, then falls back",
    ),
    (
        &["context_window_fallbacks", "content_policy_fallbacks", "enable_pre_call_checks"],
        "tailor falls back on connection errors, timeouts, 429, 5xx and deleted models before the first byte; it does not tell context-window or content-policy errors (400s) apart",
    ),
    (
        &["database_url", "store_model_in_db", "database_connection_pool_limit", "database_connection_timeout", "max_budget", "budget_duration"],
        "LiteLLM's database (virtual keys, teams, spend): tailor's keys are `clients:`, its budgets `limits:`",
    ),
    (
        &["alerting", "alerting_threshold", "alert_types"],
        "alerting: tailor exports Prometheus metrics (and ships alert rules)",
    ),
];

fn why(key: &str) -> &'static str {
    REASONS
        .iter()
        .find(|(keys, _)| keys.contains(&key))
        .map_or("no tailor equivalent", |(_, w)| w)
}

/// Applies what converts; notes the rest.
pub(crate) fn apply(top: &Mapping, lookup: &Lookup, plan: &mut Plan, notes: &mut Notes) {
    let empty = Mapping::new();
    let section = |k: &str| top.get(k).and_then(Value::as_mapping).unwrap_or(&empty);
    let router = section("router_settings");
    let litellm = section("litellm_settings");
    let general = section("general_settings");

    // router_settings wins where both set a key, as in the LiteLLM Router
    let pick = |k: &str| -> Option<(&Value, String)> {
        router
            .get(k)
            .map(|v| (v, format!("router_settings.{k}")))
            .or_else(|| litellm.get(k).map(|v| (v, format!("litellm_settings.{k}"))))
    };

    let mut has_fallback = vec![false; plan.routes.len()];
    for (name, s) in [("router_settings", router), ("litellm_settings", litellm)] {
        if let Some(v) = s.get("fallbacks") {
            fallbacks(
                v,
                &format!("{name}.fallbacks"),
                lookup,
                plan,
                &mut has_fallback,
                notes,
            );
        }
    }
    if let Some((v, path)) = pick("default_fallbacks") {
        let targets = names(v);
        for (r, done) in has_fallback.iter().enumerate() {
            if !done {
                add_targets(&targets, &path, r, lookup, plan, notes);
            }
        }
    }
    if let Some((v, path)) = pick("model_group_alias") {
        aliases(v, &path, lookup, plan, notes);
    }
    if let Some((v, path)) = pick("num_retries") {
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => plan.upstreams.iter_mut().for_each(|u| {
                u.retries_max = Some(n);
                u.comments.push(format!("retries.max from {path}"));
            }),
            None => notes.skip(path, "not a whole number >= 0"),
        }
    }
    if let Some((v, path)) = pick("allowed_fails") {
        // LiteLLM cools a deployment down after more than `allowed_fails` failures in a minute;
        // tailor after `failures` consecutive ones
        match v.as_u64().and_then(|n| u32::try_from(n + 1).ok()) {
            Some(n) => plan.health_failures = Some(n),
            None => notes.skip(path, "not a whole number >= 0"),
        }
    }
    if let Some((v, path)) = pick("cooldown_time") {
        match Decimal::from_yaml(v) {
            Some(d) => plan.health_cooldown = Some(format!("{}s", d.to_text(3).0)),
            None => notes.skip(path, "not a number of seconds"),
        }
    }
    if plan.health_failures.is_some() {
        plan.header.push(
            "health.failures = allowed_fails + 1, counted as consecutive failures (LiteLLM counts them per minute)."
                .into(),
        );
    }

    const APPLIED: &[&str] = &[
        "fallbacks",
        "default_fallbacks",
        "model_group_alias",
        "num_retries",
        "allowed_fails",
        "cooldown_time",
    ];
    for (name, s) in [("router_settings", router), ("litellm_settings", litellm)] {
        for (k, v) in s {
            let k = str_of(Some(k)).unwrap_or_default();
            if APPLIED.contains(&k.as_str()) {
                continue;
            }
            if k == "routing_strategy" {
                let strategy = str_of(Some(v)).unwrap_or_default();
                if strategy != "simple-shuffle" {
                    notes.skip(
                        format!("{name}.routing_strategy"),
                        format!(
                            "`{strategy}`: tailor splits by fixed weights, like simple-shuffle"
                        ),
                    );
                }
                continue;
            }
            notes.skip(format!("{name}.{k}"), why(&k));
        }
    }
    for (k, v) in general {
        let k = str_of(Some(k)).unwrap_or_default();
        let path = format!("general_settings.{k}");
        if k == "master_key" {
            // not written: `clients:` with key_env fails `tailor check` until the variable is set
            let hint = match str_of(Some(v)).as_deref().and_then(|s| s.strip_prefix("os.environ/")) {
                Some(var) => format!("add `clients: [{{ name: litellm-master, key_env: {var} }}]`"),
                None => "a key written in the file (not copied): put it in a variable and add `clients: [{ name: litellm-master, key_env: VAR }]`, or its SHA-256 as `key_sha256`".to_owned(),
            };
            notes.skip(
                path,
                format!("tailor's own API keys are `clients:`; {hint}"),
            );
        } else {
            notes.skip(path, why(&k));
        }
    }
    for (k, v) in top {
        let k = str_of(Some(k)).unwrap_or_default();
        match k.as_str() {
            "model_list" | "router_settings" | "litellm_settings" | "general_settings"
            | "credential_list" => {}
            "environment_variables" => {
                let names: Vec<String> = v
                    .as_mapping()
                    .map(|m| m.keys().filter_map(|k| str_of(Some(k))).collect())
                    .unwrap_or_default();
                notes.skip(
                    format!("environment_variables ({})", names.join(", ")),
                    "set them in tailor's environment (values are not copied)",
                );
            }
            "include" => notes.skip(
                k,
                "the importer reads one file: paste the included files' model_list into it first",
            ),
            _ => notes.skip(k, "no tailor equivalent"),
        }
    }
}

/// `[{"a": ["b", "c"]}, ...]`: route `a` falls back to groups (or deployment ids) b, then c.
fn fallbacks(
    v: &Value,
    path: &str,
    lookup: &Lookup,
    plan: &mut Plan,
    has_fallback: &mut [bool],
    notes: &mut Notes,
) {
    let Some(list) = v.as_sequence() else {
        notes.skip(path, "not a list of {model_name: [fallbacks]}");
        return;
    };
    for (i, item) in list.iter().enumerate() {
        let Some(m) = item.as_mapping() else {
            notes.skip(
                format!("{path}[{i}]"),
                "not a {model_name: [fallbacks]} mapping",
            );
            continue;
        };
        for (from, to) in m {
            let from = str_of(Some(from)).unwrap_or_default();
            let p = format!("{path}[{i}].{from}");
            let Some(r) = lookup.group(&from) else {
                notes.skip(p, format!("`{from}` is not a converted model_name"));
                continue;
            };
            if has_fallback[r] && path.starts_with("litellm_settings") {
                notes.skip(
                    p,
                    "router_settings.fallbacks already set this group's fallbacks",
                );
                continue;
            }
            has_fallback[r] = true;
            add_targets(&names(to), &p, r, lookup, plan, notes);
        }
    }
}

fn add_targets(
    targets: &[String],
    path: &str,
    r: usize,
    lookup: &Lookup,
    plan: &mut Plan,
    notes: &mut Notes,
) {
    for t in targets {
        match lookup.target(t) {
            Some(models) => {
                let route = &mut plan.routes[r];
                for m in models {
                    if !route.fallback.contains(&m) {
                        route.fallback.push(m);
                    }
                }
            }
            None => notes.skip(
                path,
                format!("fallback `{t}` is not a converted model_name or model_info.id"),
            ),
        }
    }
}

/// `{"gpt-4": "gpt-4o"}` or `{"gpt-4": {model: "gpt-4o", hidden: true}}`.
fn aliases(v: &Value, path: &str, lookup: &Lookup, plan: &mut Plan, notes: &mut Notes) {
    let Some(m) = v.as_mapping() else {
        notes.skip(path, "not a mapping of alias to model_name");
        return;
    };
    for (alias, target) in m {
        let alias = str_of(Some(alias)).unwrap_or_default();
        let p = format!("{path}.{alias}");
        let (group, hidden) = match target {
            Value::Mapping(t) => (
                str_of(t.get("model")).unwrap_or_default(),
                t.get("hidden").and_then(Value::as_bool).unwrap_or(false),
            ),
            other => (str_of(Some(other)).unwrap_or_default(), false),
        };
        match lookup.group(&group) {
            Some(r) => {
                let route = &mut plan.routes[r];
                if !route.match_models.contains(&alias) {
                    route.match_models.push(alias);
                }
                if hidden {
                    notes.check(
                        p,
                        "hidden: tailor lists every name a route matches on /v1/models",
                    );
                }
            }
            None => notes.skip(p, format!("`{group}` is not a converted model_name")),
        }
    }
}

/// A list of names, or one name.
fn names(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().filter_map(|x| str_of(Some(x))).collect(),
        other => str_of(Some(other)).into_iter().collect(),
    }
}
