//! Config validation: every key path named, every default resolved.

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
    assert!(matches!(&c.upstreams[0].auth, Auth::Key { key: Some(k), .. } if k.expose() == "sk-x"));
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
            "hosting_usd_per_hour: -0.5",
            "models.ft.hosting_usd_per_hour",
        ),
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
        (
            format!("{BASE}limits: [{{ name: a, route: nope, requests_per_minute: 5 }}]\n"),
            "limits[0].route",
        ),
        (
            format!("{BASE}limits: [{{ name: a, usd: {{ max: 5, per: week }} }}]\n"),
            "limits[0].usd.per",
        ),
        (
            format!("{BASE}limits: [{{ name: a, client: team }}]\n"),
            "limits[0].client",
        ),
        (format!("{BASE}limits: [{{ name: a }}]\n"), "limits[0]"),
        (
            format!("{BASE}shared_state: {{ redis: \"http://x\" }}\n"),
            "shared_state.redis",
        ),
        (
            format!("{BASE}shared_state: {{ on_error: maybe }}\n"),
            "shared_state.on_error",
        ),
        (
            BASE.replace(
                "sticky: user",
                "sticky: user\n    experiment: { since: yesterday }",
            ),
            "routes[0].experiment.since",
        ),
        (
            format!("{BASE}economics: {{ prometheus_url: \"prom:9090\" }}\n"),
            "economics.prometheus_url",
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

#[test]
fn fine_tunes_are_known_by_id_base_model_training_cost_or_hosting_fee() {
    let c = Config::from_yaml(
        r#"
upstreams:
  openai: { url: "http://127.0.0.1:1/v1" }
  azure: { kind: azure, url: "http://127.0.0.1:1", api_version: "2024-10-21" }
models:
  gpt-4o: { upstream: openai, id: gpt-4o-2024-08-06 }
  ft: { upstream: openai, id: "ft:gpt-4o-2024-08-06:acme:support:A1" }
  az-base: { upstream: azure, id: gpt4o-prod, base_model: gpt-4o-2024-08-06 }
  az-ft-trained: { upstream: azure, id: support-prod, base_model: gpt-4o-2024-08-06, training_cost_usd: 412.5 }
  az-ft-hosted: { upstream: azure, id: support-3, base_model: gpt-4o-2024-08-06, hosting_usd_per_hour: 1.7 }
  az-ft-base: { upstream: azure, id: support-4, base_model: "ft:gpt-4o-2024-08-06:acme::x" }
routes: [{ name: r, split: [{ model: gpt-4o }] }]
"#,
        &no_env,
    )
    .unwrap();
    for (name, kind) in [
        ("gpt-4o", ModelKind::Base),
        ("ft", ModelKind::FineTune),
        ("az-base", ModelKind::Base),
        ("az-ft-trained", ModelKind::FineTune),
        ("az-ft-hosted", ModelKind::FineTune),
        ("az-ft-base", ModelKind::FineTune),
    ] {
        assert_eq!(
            c.models[c.model_index(name).unwrap()].kind(),
            kind,
            "{name}"
        );
    }
    assert_eq!(ModelKind::FineTune.label(), "fine_tune");
    assert_eq!(ModelKind::Base.label(), "base");
}

#[test]
fn every_problem_is_listed_with_its_path() {
    // independent mistakes, two in one route: each is named, none hides the others, none causes
    // another
    let yaml = BASE
        .replace("openai: {", "openai: { kind: azure,")
        .replace("fallback: [gpt-4o]", "fallback: [nope]")
        .replace("sticky: user", "sticky: cookie")
        .replace("- name: default", "- name: default\n    max_concurrency: 0")
        + "limits: [{ name: l, route: support, usd: { max: 5, per: fortnight } }]\n";
    let e = Config::from_yaml(&yaml, &|_| Some("k".into())).unwrap_err();
    let ConfigError::Problems(p) = &e else {
        panic!("expected several problems: {e}")
    };
    let text = e.to_string();
    assert!(text.starts_with("5 problems:\n"), "{text}");
    let paths: Vec<String> = p
        .iter()
        .map(|p| p.to_string().split(": ").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "upstreams.openai.api_version",
            "routes[0].sticky",
            "routes[0].fallback[0]",
            "routes[1].max_concurrency",
            "limits[0].usd.per",
        ],
        "{text}"
    );
    // one mistake reads as before: `path: message`
    let one = err(&BASE.replace("fallback: [gpt-4o]", "fallback: [nope]"));
    assert!(
        one.starts_with("routes[0].fallback[0]: no model named"),
        "{one}"
    );
}
