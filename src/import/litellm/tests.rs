//! The LiteLLM importer, table by table: what converts (read back through tailor's own config
//! loader, so every assertion is about what tailor would run), and what is reported instead.

use std::time::Duration;

use super::{convert, litellm_keys};
use crate::config::{Auth, Config, UpstreamKind};
use crate::import::note::{ImportError, Imported, NoteKind};

fn no_env(_: &str) -> Option<String> {
    None
}

fn import(yaml: &str) -> Imported {
    convert(yaml, "test.yaml", &no_env).unwrap()
}

fn load(i: &Imported) -> Config {
    Config::from_yaml(&i.yaml, &no_env).unwrap_or_else(|e| panic!("{e}\n{}", i.yaml))
}

fn notes(i: &Imported) -> String {
    i.notes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn model<'c>(cfg: &'c Config, name: &str) -> &'c crate::config::Model {
    cfg.models
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no model {name}"))
}

/// (model name, weight) of a route's arms.
fn arms(cfg: &Config, route: &str) -> Vec<(String, u32)> {
    let r = cfg.routes.iter().find(|r| r.name == route).unwrap();
    r.arms
        .iter()
        .map(|a| (cfg.models[a.model].name.clone(), a.weight))
        .collect()
}

fn fallback(cfg: &Config, route: &str) -> Vec<String> {
    let r = cfg.routes.iter().find(|r| r.name == route).unwrap();
    r.fallback
        .iter()
        .map(|m| cfg.models[*m].name.clone())
        .collect()
}

const LOAD_BALANCED: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://eu-resource.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_EU
      api_version: "2024-10-21"
      rpm: 6
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-ca
      api_base: https://ca-resource.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_CA
      api_version: "2024-10-21"
      rpm: 1440
    model_info:
      base_model: azure/gpt-4o-2024-08-06
  - model_name: mini
    litellm_params:
      model: gpt-4o-mini
router_settings:
  model_group_alias: {"gpt-4": "gpt-4o", "old": {model: mini, hidden: true}}
  fallbacks: [{"gpt-4o": ["mini"]}]
"#;

#[test]
fn a_model_name_with_several_deployments_becomes_one_weighted_route() {
    let i = import(LOAD_BALANCED);
    let cfg = load(&i);
    assert_eq!(
        arms(&cfg, "gpt-4o"),
        [("gpt-4o-1".to_owned(), 6), ("gpt-4o-2".to_owned(), 1440)]
    );
    // the other deployment first (LiteLLM retries within the group), then the fallback group
    assert_eq!(fallback(&cfg, "gpt-4o"), ["gpt-4o-1", "gpt-4o-2", "mini"]);
    let r = &cfg.routes[0];
    assert_eq!(r.matcher.models.as_deref().unwrap(), ["gpt-4o", "gpt-4"]);
    assert_eq!(
        cfg.routes[1].matcher.models.as_deref().unwrap(),
        ["mini", "old"]
    );
    let eu = &cfg.upstreams[cfg.models[0].upstream];
    assert_eq!(eu.kind, UpstreamKind::Azure);
    assert_eq!(eu.url, "https://eu-resource.openai.azure.com");
    assert_eq!(eu.api_version.as_deref(), Some("2024-10-21"));
    assert!(matches!(&eu.auth, Auth::Key { env, .. } if env == "AZURE_API_KEY_EU"));
    // no price given: the id, else base_model (without LiteLLM's `azure/`), else 0 and a note
    assert_eq!(
        model(&cfg, "gpt-4o-2").base_model.as_deref(),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(model(&cfg, "gpt-4o-1").price.input, 0);
    assert_eq!(model(&cfg, "mini").price.input, 150_000);
    let n = notes(&i);
    assert!(
        n.contains("check: model_list[0]: no price: `gpt-4o-eu`"),
        "{n}"
    );
    assert!(n.contains("old: hidden"), "{n}");
    // the OpenAI default: its URL and LiteLLM's key variable
    let openai = &cfg.upstreams[model(&cfg, "mini").upstream];
    assert_eq!(openai.url, "https://api.openai.com/v1");
    assert!(matches!(&openai.auth, Auth::Key { env, .. } if env == "OPENAI_API_KEY"));
}

#[test]
fn weights_follow_simple_shuffle() {
    let cfg_for = |a: &str, b: &str| {
        let y = format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{ model: openai/gpt-4o, {a} }}\n  - model_name: m\n    litellm_params: {{ model: openai/gpt-4o-mini, {b} }}\n"
        );
        let i = import(&y);
        (arms(&load(&i), "m"), notes(&i))
    };
    let w = |x: &(Vec<(String, u32)>, String)| x.0.iter().map(|a| a.1).collect::<Vec<_>>();
    // `weight` before `rpm` before `tpm`, as the first deployment sets them
    assert_eq!(
        w(&cfg_for("weight: 9, rpm: 1", "weight: 1, rpm: 100")),
        [9, 1]
    );
    assert_eq!(w(&cfg_for("rpm: 6", "rpm: 1440, weight: 5")), [6, 1440]);
    assert_eq!(w(&cfg_for("tpm: 1000", "tpm: 3000")), [1000, 3000]);
    // decimals scaled exactly, then reduced
    assert_eq!(w(&cfg_for("weight: 0.9", "weight: 0.1")), [9, 1]);
    assert_eq!(w(&cfg_for("weight: 0.25", "weight: 0.5")), [1, 2]);
    // a deployment without the first one's key weighs 0, as in LiteLLM, and is reported
    let missing = cfg_for("rpm: 6", "api_key: os.environ/K");
    assert_eq!(w(&missing), [6, 0]);
    assert!(
        missing.1.contains("model_list[1]: no `rpm`"),
        "{}",
        missing.1
    );
    // none: equal shares
    assert_eq!(
        w(&cfg_for("api_key: os.environ/A", "api_key: os.environ/B")),
        [1, 1]
    );
    // all zero or not numbers: equal shares, reported
    let zero = cfg_for("weight: 0", "weight: 0");
    assert_eq!(w(&zero), [1, 1]);
    assert!(zero.1.contains("equal shares written"), "{}", zero.1);
}

#[test]
fn per_token_costs_become_exact_per_million_prices() {
    let i = import(
        r#"
model_list:
  - model_name: a
    litellm_params:
      model: azure/my-deployment
      api_base: https://r.openai.azure.com
      api_version: "2024-10-21"
      input_cost_per_token: 0.000421
      output_cost_per_token: 0.000520
  - model_name: b
    litellm_params:
      model: openai/ft:gpt-4o-mini-2024-07-18:acme:x:1
      input_cost_per_token: 3e-07
      output_cost_per_token: 1.2e-06
      cache_read_input_token_cost: 1.5e-07
  - model_name: c
    litellm_params: { model: openai/local, api_base: "http://127.0.0.1:8000/v1", input_cost_per_token: "2.5e-6" }
  - model_name: d
    litellm_params: { model: openai/tiny, api_base: "http://127.0.0.1:8000/v1", input_cost_per_token: 1.0e-13, output_cost_per_token: 0.0000025 }
    model_info: { input_cost_per_token: 5 }
"#,
    );
    let cfg = load(&i);
    let p = |n: &str| {
        let p = model(&cfg, n).price;
        (p.input, p.cached_input, p.output)
    };
    // micro-USD per 1M tokens
    assert_eq!(p("a"), (421_000_000, 421_000_000, 520_000_000));
    assert_eq!(p("b"), (300_000, 150_000, 1_200_000));
    assert_eq!(p("c"), (2_500_000, 2_500_000, 0));
    assert_eq!(p("d"), (0, 0, 2_500_000));
    assert!(i
        .yaml
        .contains("price: { input: 0.3, cached_input: 0.15, output: 1.2 }"));
    let n = notes(&i);
    assert!(
        n.contains("model_list[2].litellm_params: only one of"),
        "{n}"
    );
    assert!(
        n.contains("input_cost_per_token: tailor keeps prices to a millionth"),
        "{n}"
    );
}

#[test]
fn keys_are_read_from_the_environment_and_literal_keys_are_never_copied() {
    let i = import(
        r#"
model_list:
  - model_name: a
    litellm_params: { model: openai/gpt-4o, api_key: sk-live-SECRET-1234 }
  - model_name: b
    litellm_params: { model: openai/gpt-4o-mini, api_key: sk-live-SECRET-1234 }
  - model_name: c
    litellm_params: { model: openai/gpt-4o, api_key: other-SECRET }
  - model_name: d
    litellm_params: { model: openai/opt-125m, api_base: "http://0.0.0.0:4000/v1", api_key: none }
  - model_name: e
    litellm_params: { model: hosted_vllm/llama, api_base: "http://vllm:8000/v1" }
  - model_name: f
    litellm_params: { model: groq/llama3-8b-8192 }
  - model_name: g
    litellm_params: { model: openai/llama, api_base: "http://10.0.0.7:8000/v1", api_key: other-SECRET }
general_settings:
  master_key: sk-master-SECRET
"#,
    );
    assert!(!i.yaml.contains("SECRET"), "{}", i.yaml);
    assert!(!notes(&i).contains("SECRET"), "{}", notes(&i));
    let cfg = load(&i);
    let env_of = |m: &str| match &cfg.upstreams[model(&cfg, m).upstream].auth {
        Auth::Key { env, .. } => Some(env.clone()),
        _ => None,
    };
    // one literal key, one upstream; another key, another upstream
    assert_eq!(model(&cfg, "a").upstream, model(&cfg, "b").upstream);
    assert_ne!(model(&cfg, "a").upstream, model(&cfg, "c").upstream);
    assert_eq!(env_of("a").as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(env_of("c").as_deref(), Some("OPENAI_2_API_KEY"));
    assert_eq!(env_of("d"), None);
    assert_eq!(env_of("e"), None);
    assert_eq!(env_of("f").as_deref(), Some("GROQ_API_KEY"));
    // the same key written twice, on another server: its own upstream, the same variable
    assert_ne!(model(&cfg, "g").upstream, model(&cfg, "c").upstream);
    assert_eq!(env_of("g").as_deref(), Some("OPENAI_2_API_KEY"));
    assert_eq!(
        cfg.upstreams[model(&cfg, "g").upstream].name,
        "openai-10.0.0.7"
    );
    assert_eq!(
        cfg.upstreams[model(&cfg, "f").upstream].url,
        "https://api.groq.com/openai/v1"
    );
    let n = notes(&i);
    assert!(n.contains("check: model_list[2].litellm_params.api_key: a key written in the file is not copied (routes.yaml only names variables): set $OPENAI_2_API_KEY"), "{n}");
    assert!(n.contains("`none` stands for no key"), "{n}");
    assert!(
        n.contains(
            "not converted: general_settings.master_key: tailor's own API keys are `clients:`"
        ),
        "{n}"
    );
}

#[test]
fn urls_and_versions_from_the_environment_are_read_at_import() {
    let yaml = r#"
model_list:
  - model_name: a
    litellm_params:
      model: azure/dep
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY
      api_version: os.environ/AZURE_API_VERSION
  - model_name: b
    litellm_params:
      model: azure/dep2
      api_base: os.environ/MISSING_BASE
      api_version: os.envrion/AZURE_API_VERSION
"#;
    let env = |k: &str| match k {
        "AZURE_API_BASE" => Some("https://from-env.openai.azure.com/".to_owned()),
        "AZURE_API_VERSION" => Some("2024-06-01".to_owned()),
        _ => None,
    };
    let i = convert(yaml, "t", &env).unwrap();
    let cfg = load(&i);
    let a = &cfg.upstreams[model(&cfg, "a").upstream];
    assert_eq!(a.url, "https://from-env.openai.azure.com");
    assert_eq!(a.api_version.as_deref(), Some("2024-06-01"));
    let b = &cfg.upstreams[model(&cfg, "b").upstream];
    assert_eq!(b.url, "https://replace-me-model-list-1.invalid");
    // the doc's own typo is not sent as an api-version
    assert_eq!(
        b.api_version.as_deref(),
        Some(super::providers::LITELLM_AZURE_DEFAULT_API_VERSION)
    );
    assert!(i.yaml.contains("TODO: the URL of model_list[1]"));
    let n = notes(&i);
    assert!(
        n.contains("model_list[0].litellm_params.api_base: read from $AZURE_API_BASE"),
        "{n}"
    );
    assert!(
        n.contains("model_list[1].litellm_params.api_base: $MISSING_BASE is not set"),
        "{n}"
    );
    assert!(
        n.contains("looks like a misspelt `os.environ/` reference: written as LiteLLM's default"),
        "{n}"
    );
}

#[test]
fn what_does_not_convert_is_reported_and_left_out() {
    let i = import(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: { model: gpt-4o, temperature: 0.2, max_tokens: 20, timeout: 30, organization: org-1 }
    model_info: { version: 2, access_groups: [a] }
  - model_name: claude
    litellm_params: { model: bedrock/anthropic.claude-instant-v1, aws_region_name: us-east-1 }
  - model_name: "*"
    litellm_params: { model: "*" }
  - model_name: mystery
    litellm_params: { model: claude-3-opus }
  - model_name: images
    litellm_params: { model: openai/dall-e-3 }
    model_info: { mode: image_generation }
router_settings:
  routing_strategy: latency-based-routing
  fallbacks: [{"claude": ["gpt-4o"]}, {"gpt-4o": ["claude", "nope"]}]
  redis_host: localhost
litellm_settings:
  success_callback: ["langfuse"]
  context_window_fallbacks: [{"gpt-4o": ["claude"]}]
  cache: true
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: os.environ/DATABASE_URL
environment_variables:
  REDIS_HOST: x
guardrails: []
"#,
    );
    assert_eq!(i.routes, 1);
    let cfg = load(&i);
    assert_eq!(cfg.models.len(), 1);
    assert!(fallback(&cfg, "gpt-4o").is_empty());
    let n = notes(&i);
    for want in [
        "not converted: model_list[0].litellm_params.temperature, max_tokens: request parameters",
        "not converted: model_list[0].litellm_params.timeout: per-deployment timeouts",
        "not converted: model_list[0].litellm_params.organization: extra upstream headers",
        "not converted: model_list[0].model_info.version, access_groups",
        "not converted: model_list[1] `claude` (bedrock/anthropic.claude-instant-v1): `bedrock` is not an OpenAI-compatible API",
        "not converted: model_list[2] `*` (*): a wildcard",
        "not converted: model_list[3] `mystery` (claude-3-opus): LiteLLM finds this model's provider",
        "not converted: model_list[4] `images` (openai/dall-e-3): mode `image_generation`",
        "router_settings.routing_strategy: `latency-based-routing`",
        "router_settings.fallbacks[0].claude: `claude` is not a converted model_name",
        "router_settings.fallbacks[1].gpt-4o: fallback `nope` is not a converted",
        "router_settings.redis_host: LiteLLM's shared rpm/tpm counters",
        "litellm_settings.success_callback: logging",
        "litellm_settings.context_window_fallbacks: tailor falls back on",
        "litellm_settings.cache: response caching",
        "general_settings.master_key: tailor's own API keys are `clients:`; add `clients: [{ name: litellm-master, key_env: LITELLM_MASTER_KEY }]`",
        "general_settings.database_url: LiteLLM's database",
        "environment_variables (REDIS_HOST): set them in tailor's environment",
        "not converted: guardrails: no tailor equivalent",
    ] {
        assert!(n.contains(want), "missing {want:?} in\n{n}");
    }
    assert!(!n.contains("REDIS_HOST: x") && !n.contains(": x\n"));
}

#[test]
fn retries_cooldowns_credentials_and_default_fallbacks() {
    let i = import(
        r#"
model_list:
  - model_name: a
    litellm_params: { model: azure/a, litellm_credential_name: eu }
  - model_name: b
    litellm_params: { model: gpt-4o }
  - model_name: c
    litellm_params: { model: gpt-4o-mini }
credential_list:
  - credential_name: eu
    credential_values:
      api_key: os.environ/AZURE_EU_KEY
      api_base: https://eu.openai.azure.com
      api_version: "2024-10-21"
    credential_info: { description: "EU" }
router_settings:
  num_retries: 4
  fallbacks: [{"a": ["b"]}]
  default_fallbacks: ["c"]
litellm_settings:
  num_retries: 9
  fallbacks: [{"a": ["c"]}, {"b": ["a"]}]
  allowed_fails: 3
  cooldown_time: 30
"#,
    );
    let cfg = load(&i);
    assert!(cfg.upstreams.iter().all(|u| u.retry.max == 4));
    assert_eq!(cfg.health.failures, 4);
    assert_eq!(cfg.health.cooldown, Duration::from_secs(30));
    let a = &cfg.upstreams[model(&cfg, "a").upstream];
    assert_eq!(a.url, "https://eu.openai.azure.com");
    assert!(matches!(&a.auth, Auth::Key { env, .. } if env == "AZURE_EU_KEY"));
    // router_settings wins for `a`; litellm_settings adds `b`; `c` gets the default
    assert_eq!(fallback(&cfg, "a"), ["b"]);
    assert_eq!(fallback(&cfg, "b"), ["a"]);
    assert_eq!(fallback(&cfg, "c"), ["c"]);
    assert!(notes(&i)
        .contains("litellm_settings.fallbacks[0].a: router_settings.fallbacks already set"));
}

#[test]
fn names_are_made_valid_and_unique() {
    let i = import(
        r#"
model_list:
  - model_name: "my model/v1"
    litellm_params: { model: gpt-4o }
  - model_name: "my model+v1"
    litellm_params: { model: gpt-4o }
  - model_name: "x"
    litellm_params: { model: gpt-4o }
    model_info: { id: "has space" }
"#,
    );
    let cfg = load(&i);
    let names: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["my-model-v1", "my-model-v1-2", "x"]);
    // clients keep asking for the LiteLLM name as it was
    assert_eq!(
        cfg.routes[0].matcher.models.as_deref().unwrap(),
        ["my model/v1"]
    );
}

#[test]
fn inputs_that_are_not_litellm_configs() {
    for (yaml, want) in [
        ("a: [", "not YAML"),
        ("- 1\n- 2\n", "top level is not a mapping"),
        ("upstreams: {}\n", "no `model_list` list"),
    ] {
        let e = convert(yaml, "t", &no_env).unwrap_err();
        assert!(e.to_string().contains(want), "{yaml}: {e}");
        assert!(!matches!(e, ImportError::Invalid(_)));
    }
    let none = import("model_list:\n  - model_name: x\n    litellm_params: { model: bedrock/y }\n");
    assert_eq!(none.routes, 0);
    assert_eq!(none.notes[0].kind, NoteKind::NotConverted);
}

#[test]
fn litellm_configs_are_recognised() {
    assert_eq!(
        litellm_keys("model_list: []\ngeneral_settings: {}\n"),
        ["model_list", "general_settings"]
    );
    assert!(litellm_keys("upstreams: {}\nmodels: {}\nroutes: []\n").is_empty());
    assert!(litellm_keys("not: [yaml").is_empty());
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(256))]

    /// Whatever the file holds, the importer answers (a routes.yaml that loads, or an error) and
    /// never panics.
    #[test]
    fn never_panics(
        name in "[ -~]{0,12}",
        model in "[a-z_/*.:-]{0,20}",
        base in "[ -~]{0,30}",
        weight in proptest::prelude::any::<f64>(),
        cost in "[0-9.eE+-]{0,10}",
        junk in "[ -~\n]{0,60}",
    ) {
        let y = format!(
            "model_list:\n  - model_name: {name:?}\n    litellm_params: {{ model: {model:?}, api_base: {base:?}, weight: {weight}, input_cost_per_token: {cost:?} }}\n  - model_name: {name:?}\n    litellm_params: {{ model: gpt-4o, rpm: 3 }}\nrouter_settings: {{ fallbacks: [{{ {name:?}: [{model:?}] }}] }}\n"
        );
        if let Err(e) = convert(&y, "t", &no_env) {
            proptest::prop_assert!(!matches!(e, ImportError::Invalid(_)), "{e}\n{y}");
        }
        let _ = convert(&junk, "t", &no_env);
    }
}
