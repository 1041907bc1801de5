//! Integration tests: the real router on 127.0.0.1:0 in front of the simulated OpenAI, driven over
//! HTTP; assertions on what the upstream received, what the client got, and `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::collections::HashMap;

use common::{metric, parse_metrics, setup_named, sse_data, Env};
use http::{Method, StatusCode};
use serde_json::Value;
use tailor::config::Config;

async fn setup() -> Env {
    setup_named("proxy.yaml").await
}

#[tokio::test]
async fn upstream_gets_the_body_byte_for_byte_but_model() {
    let env = setup().await;
    let body = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"caf\\u00e9 \\\"model\\\": x  \"} ],\n  \"model\"  :  \"gpt-4o\" ,\n\t\"x_future_field\": {\"keep\": [1, 2.50, null, 1e3]}, \"temperature\":0.70 }";
    let r = env
        .chat(
            body,
            &[
                ("authorization", "Bearer client-secret"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = env.mock.received().pop().unwrap();
    let expected = body.replacen("\"gpt-4o\"", "\"gpt-4o-2024-08-06\"", 1);
    assert_eq!(std::str::from_utf8(&got.body).unwrap(), expected);
    assert_eq!(got.path_and_query, "/v1/chat/completions");
    // the caller's key never reaches the upstream; the upstream key is used instead
    assert_eq!(got.headers["authorization"], "Bearer sk-upstream-secret");
    assert_eq!(got.headers["x-custom"], "kept");

    // streaming: the only other change is include_usage
    let body =
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"n":1}"#;
    env.chat(body, &[]).await;
    let got = env.mock.received().pop().unwrap();
    assert_eq!(
        std::str::from_utf8(&got.body).unwrap(),
        r#"{"model":"gpt-4o-2024-08-06","stream":true,"messages":[{"role":"user","content":"hi"}],"n":1,"stream_options":{"include_usage":true}}"#
    );
}

#[tokio::test]
async fn usage_chunk_is_hidden_unless_asked_for_and_always_metered() {
    let env = setup().await;
    let plain = env.chat(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello there"}]}"#, &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain
        .header("content-type")
        .starts_with("text/event-stream"));
    let events = sse_data(&plain.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(
            !v["choices"].as_array().unwrap().is_empty(),
            "client saw a usage chunk it did not ask for: {e}"
        );
        assert!(
            v.get("usage").is_none(),
            "client saw `usage` it did not ask for: {e}"
        );
    }

    let asked = env.chat(r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}"#, &[]).await;
    let events = sse_data(&asked.text());
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    let u = &usage_chunk["usage"];

    // both requests were metered with the same usage (same prompt)
    let m = parse_metrics(&env.metrics().await);
    let key = |t: &str| {
        format!("tailor_tokens_total{{client=\"anonymous\",model=\"gpt-4o\",route=\"default\",type=\"{t}\"}}")
    };
    assert_eq!(
        metric(&m, &key("input")),
        2.0 * u["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        metric(&m, &key("output")),
        2.0 * u["completion_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        metric(
            &m,
            "tailor_requests_total{client=\"anonymous\",code=\"200\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"ok\",route=\"default\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "tailor_time_to_first_token_seconds_count{model=\"gpt-4o\",route=\"default\"}"
        ),
        2.0
    );
}

/// Picodollars for one usage object at a model's configured price.
fn cost_pico(cfg: &Config, model: &str, u: &Value) -> u128 {
    let p = cfg.models[cfg.model_index(model).unwrap()].price;
    let (input, output) = match u.get("prompt_tokens") {
        Some(pt) => (
            pt.as_u64().unwrap(),
            u["completion_tokens"].as_u64().unwrap_or(0),
        ),
        None => (
            u["input_tokens"].as_u64().unwrap(),
            u["output_tokens"].as_u64().unwrap(),
        ),
    };
    let cached = u
        .pointer("/prompt_tokens_details/cached_tokens")
        .or(u.pointer("/input_tokens_details/cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    (input - cached) as u128 * p.input as u128
        + cached as u128 * p.cached_input as u128
        + output as u128 * p.output as u128
}

/// (route, model, endpoint path, body, headers)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    String,
    Vec<(&'static str, &'static str)>,
);

#[tokio::test]
async fn token_and_cost_counters_equal_the_upstream_usage_exactly() {
    let env = setup().await;
    let long = "lorem ipsum ".repeat(600); // > 1024 prompt tokens: the simulator reports cached tokens
                                           // (route, model, endpoint path, body, headers)
    let cases: Vec<Case> = vec![
        ("default", "gpt-4o", "/v1/chat/completions", r#"{"model":"gpt-4o","messages":[{"role":"user","content":"a"}]}"#.into(), vec![]),
        ("default", "gpt-4o", "/v1/chat/completions", format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{long}"}}]}}"#), vec![("x-mock-words", "40")]),
        ("default", "gpt-4o", "/v1/chat/completions", format!(r#"{{"model":"gpt-4o","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"{long}"}}]}}"#), vec![]),
        ("reasoning", "o4", "/v1/chat/completions", r#"{"model":"o4-mini","messages":[{"role":"user","content":"think"}]}"#.into(), vec![]),
        ("reasoning", "o4", "/v1/responses", r#"{"model":"o4-mini","input":"think hard"}"#.into(), vec![]),
        ("reasoning", "o4", "/v1/responses", r#"{"model":"o4-mini","input":"think harder","stream":true}"#.into(), vec![("x-mock-words", "7")]),
        ("default", "gpt-4o", "/v1/completions", r#"{"model":"gpt-4o","prompt":"say this"}"#.into(), vec![]),
        ("default", "gpt-4o", "/v1/completions", r#"{"model":"gpt-4o","prompt":"say this","stream":true,"stream_options":{"include_usage":true}}"#.into(), vec![]),
        ("embeddings", "embed", "/v1/embeddings", r#"{"model":"text-embedding-3-small","input":["one","two"]}"#.into(), vec![]),
        ("azure", "azure-4o", "/v1/chat/completions", r#"{"model":"azure","messages":[{"role":"user","content":"hi"}]}"#.into(), vec![]),
    ];
    let mut expect: HashMap<(String, String), [u128; 5]> = HashMap::new(); // input, cached, output, reasoning, pico
    for round in 0..3 {
        for (route, model, path, body, headers) in &cases {
            let r = env.call(Method::POST, path, headers, body.clone()).await;
            assert_eq!(r.status, StatusCode::OK, "{path} {body}: {}", r.text());
            let usage = if r.header("content-type").starts_with("text/event-stream") {
                let last_usage = sse_data(&r.text())
                    .iter()
                    .rev()
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|v| {
                        v.get("usage")
                            .filter(|u| u.is_object())
                            .or(v.pointer("/response/usage").filter(|u| u.is_object()))
                            .cloned()
                    })
                    .next();
                last_usage.unwrap_or_else(|| panic!("no usage in stream {path} round {round}"))
            } else {
                r.json()["usage"].clone()
            };
            let e = expect
                .entry((route.to_string(), model.to_string()))
                .or_default();
            let input = usage
                .get("prompt_tokens")
                .or(usage.get("input_tokens"))
                .unwrap()
                .as_u64()
                .unwrap() as u128;
            let cached = usage
                .pointer("/prompt_tokens_details/cached_tokens")
                .or(usage.pointer("/input_tokens_details/cached_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as u128;
            let output = usage
                .get("completion_tokens")
                .or(usage.get("output_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as u128;
            let reasoning = usage
                .pointer("/completion_tokens_details/reasoning_tokens")
                .or(usage.pointer("/output_tokens_details/reasoning_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as u128;
            e[0] += input - cached;
            e[1] += cached;
            e[2] += output;
            e[3] += reasoning;
            e[4] += cost_pico(&env.config, model, &usage);
        }
    }
    let m = parse_metrics(&env.metrics().await);
    let mut saw_cached = false;
    let mut saw_reasoning = false;
    for ((route, model), e) in &expect {
        let tok = |t: &str| {
            metric(
                &m,
                &format!("tailor_tokens_total{{client=\"anonymous\",model=\"{model}\",route=\"{route}\",type=\"{t}\"}}"),
            ) as u128
        };
        assert_eq!(tok("input"), e[0], "{route}/{model} input");
        assert_eq!(tok("cached_input"), e[1], "{route}/{model} cached");
        assert_eq!(tok("output"), e[2], "{route}/{model} output");
        let reasoning = metric(
            &m,
            &format!("tailor_reasoning_tokens_total{{model=\"{model}\",route=\"{route}\"}}"),
        ) as u128;
        assert_eq!(reasoning, e[3], "{route}/{model} reasoning");
        let usd = metric(
            &m,
            &format!(
                "tailor_cost_usd_total{{client=\"anonymous\",model=\"{model}\",route=\"{route}\"}}"
            ),
        );
        assert_eq!(
            (usd * 1e12).round() as u128,
            e[4],
            "{route}/{model} cost {usd}"
        );
        saw_cached |= e[1] > 0;
        saw_reasoning |= e[3] > 0;
    }
    assert!(
        saw_cached && saw_reasoning,
        "the mix must exercise cached and reasoning tokens"
    );
}

#[tokio::test]
async fn ab_split_share_holds_over_2000_requests() {
    let env = setup().await;
    let mut ft = 0;
    for _ in 0..2000 {
        let r = env
            .chat(
                r#"{"model":"ab","messages":[{"role":"user","content":"x"}]}"#,
                &[("x-mock-words", "1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-tailor-route"), "ab");
        if r.header("x-tailor-model") == "support-ft" {
            ft += 1;
        }
    }
    let share = ft as f64 / 2000.0;
    assert!((share - 0.90).abs() <= 0.03, "support-ft share {share}");
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_requests_total{client=\"anonymous\",code=\"200\",endpoint=\"chat\",model=\"support-ft\",outcome=\"ok\",route=\"ab\"}"
        ),
        ft as f64
    );
    assert_eq!(
        metric(
            &m,
            "tailor_requests_total{client=\"anonymous\",code=\"200\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"ok\",route=\"ab\"}"
        ),
        (2000 - ft) as f64
    );
}

#[tokio::test]
async fn sticky_users_never_change_arm() {
    let env = setup().await;
    let mut arms = HashMap::new();
    for round in 0..3 {
        for u in 0..150 {
            let body = format!(
                r#"{{"model":"sticky","user":"user-{u}","messages":[{{"role":"user","content":"x"}}]}}"#
            );
            let r = env.chat(&body, &[("x-mock-words", "1")]).await;
            let arm = r.header("x-tailor-model").to_owned();
            let first = arms.entry(u).or_insert_with(|| arm.clone());
            assert_eq!(*first, arm, "user-{u} moved in round {round}");
        }
    }
    let ft = arms.values().filter(|a| *a == "support-ft").count();
    assert!(
        (45..=105).contains(&ft),
        "a 50/50 sticky split put {ft} of 150 users on support-ft"
    );
}

#[tokio::test]
async fn bad_input_gets_openai_errors_and_the_proxy_keeps_serving() {
    let env = setup().await;
    let big = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(Method, &str, String, u16, &str)> = vec![
        (
            Method::POST,
            "/v1/chat/completions",
            "this is not json".into(),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            r#"{"messages":[]}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"gpt-4o"}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#.into(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            big,
            413,
            "body_too_large",
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            r#"{"model":"gpt-9","messages":[]}"#.into(),
            404,
            "unrouted",
        ),
        (
            Method::GET,
            "/v1/chat/completions",
            String::new(),
            405,
            "method_not_allowed",
        ),
        (Method::POST, "/v1/nope", "{}".into(), 404, "not_found"),
        (Method::DELETE, "/admin", String::new(), 404, "not_found"),
    ];
    for (method, path, body, status, _) in &cases {
        let r = env.call(method.clone(), path, &[], body.clone()).await;
        assert_eq!(r.status.as_u16(), *status, "{method} {path}: {}", r.text());
        let v = r.json();
        let e = v["error"]
            .as_object()
            .unwrap_or_else(|| panic!("no error object: {v}"));
        for k in ["message", "type", "param", "code"] {
            assert!(e.contains_key(k), "{k} missing: {v}");
        }
        assert_eq!(r.header("content-type"), "application/json");
    }
    let unknown = env
        .chat(r#"{"model":"gpt-9","messages":[]}"#, &[])
        .await
        .json();
    assert_eq!(unknown["error"]["code"], "model_not_found");
    // a key tailor acts on, sent twice: the upstream might read the other one
    let twice = env
        .chat(
            r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}"#,
            &[],
        )
        .await
        .json();
    assert_eq!(twice["error"]["code"], "duplicate_parameter");
    assert_eq!(twice["error"]["param"], "stream_options.include_usage");
    // still serving
    let ok = env
        .chat(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(metric(&m, "tailor_unrouted_requests_total"), 2.0);
    assert_eq!(
        metric(
            &m,
            "tailor_rejected_requests_total{reason=\"invalid_field\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &m,
            "tailor_rejected_requests_total{reason=\"body_too_large\"}"
        ),
        1.0
    );
    assert!(
        env.mock.received().len() == 1,
        "bad requests must not reach the upstream"
    );
}

#[tokio::test]
async fn upstream_errors_reach_the_client_with_status_body_and_headers() {
    let env = setup().await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#;
    for status in [400u16, 401, 403, 429, 500, 503] {
        let s = status.to_string();
        let r = env.chat(body, &[("x-mock-status", &s)]).await;
        assert_eq!(r.status.as_u16(), status);
        assert!(r.json()["error"]["message"].is_string());
        assert!(r.header("x-request-id").starts_with("req_"));
        if status == 429 {
            assert_eq!(r.header("retry-after"), "1");
            assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
        }
    }
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_requests_total{client=\"anonymous\",code=\"429\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"upstream_error\",route=\"default\"}"
        ),
        1.0
    );
    // tailor tried three times (retry-after 1 s, twice) before passing the 429 on
    assert_eq!(metric(&m, "tailor_upstream_errors_total{kind=\"rate_limited\",model=\"gpt-4o\",route=\"default\"}"), 3.0);
}

#[tokio::test]
async fn success_headers_come_back_with_tailor_tags() {
    let env = setup().await;
    let r = env
        .chat(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    for h in [
        "x-request-id",
        "openai-processing-ms",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(!r.header(h).is_empty(), "{h} missing");
    }
    assert_eq!(r.header("x-tailor-route"), "default");
    assert_eq!(r.header("x-tailor-model"), "gpt-4o");
    assert!(r.header("x-tailor-request-id").starts_with("tlr-"));
}

#[tokio::test]
async fn fallback_before_the_first_byte() {
    let env = setup().await;
    // broken (500) -> deleted-ft (404 model_not_found) -> mini (ok)
    let r = env
        .chat(
            r#"{"model":"fallback","messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-tailor-model"), "mini");
    let models: Vec<String> = env
        .mock
        .received()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["model"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        models,
        [
            "gpt-4o-broken",
            "gpt-4o-broken", // a 500 is retried (retries.max = 2), then the fallback
            "gpt-4o-broken",
            "ft:gpt-4o-2024-08-06:acme:deleted:X",
            "gpt-4o-mini-2024-07-18"
        ]
    );
    // a deleted fine-tune falls back to the base model, streaming too
    let r = env
        .chat(
            r#"{"model":"deleted","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-tailor-model"), "gpt-4o");
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_fallbacks_total{from=\"broken\",reason=\"server_error\",route=\"fallback\",to=\"deleted-ft\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "tailor_fallbacks_total{from=\"deleted-ft\",reason=\"model_not_found\",route=\"fallback\",to=\"mini\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "tailor_fallbacks_total{from=\"deleted-ft\",reason=\"model_not_found\",route=\"deleted\",to=\"gpt-4o\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "tailor_requests_total{client=\"anonymous\",code=\"200\",endpoint=\"chat\",model=\"mini\",outcome=\"ok\",route=\"fallback\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &m,
            "tailor_tokens_total{client=\"anonymous\",model=\"mini\",route=\"fallback\",type=\"output\"}"
        ) > 0.0
    );
    // a client error is not retried elsewhere
    env.mock.clear();
    let r = env
        .chat(
            r#"{"model":"fallback","messages":[{"role":"user","content":"x"}]}"#,
            &[("x-mock-status", "400")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(env.mock.received().len(), 1);
}

#[tokio::test]
async fn broken_streams_end_with_an_error_event_never_a_fake_done() {
    let env = setup().await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"x"}]}"#;
    for header in ["x-mock-fail-after", "x-mock-truncate-after"] {
        let r = env.chat(body, &[(header, "3")]).await;
        assert_eq!(r.status, StatusCode::OK);
        let events = sse_data(&r.text());
        assert!(
            !events.iter().any(|e| e == "[DONE]"),
            "{header}: fake [DONE]"
        );
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert!(
            last["error"]["message"].is_string(),
            "{header}: last event {last}"
        );
        assert!(
            events.len() >= 4,
            "{header}: the chunks before the break are delivered"
        );
    }
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_upstream_errors_total{kind=\"stream\",model=\"gpt-4o\",route=\"default\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&m, "tailor_in_flight_requests{route=\"default\"}"),
        0.0
    );
}

#[tokio::test]
async fn azure_and_passthrough_upstreams() {
    let env = setup().await;
    let r = env
        .chat(
            r#"{"model":"azure","messages":[{"role":"user","content":"x"}]}"#,
            &[("authorization", "Bearer client")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = env.mock.received().pop().unwrap();
    assert_eq!(
        got.path_and_query,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(got.headers["api-key"], "sk-upstream-secret");
    assert!(!got.headers.contains_key("authorization"));

    let r = env
        .chat(
            r#"{"model":"own","messages":[{"role":"user","content":"x"}]}"#,
            &[("authorization", "Bearer caller-own-key")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        env.mock.received().pop().unwrap().headers["authorization"],
        "Bearer caller-own-key"
    );
    // without the caller's key the upstream answers 401, and so does tailor
    let r = env
        .chat(
            r#"{"model":"own","messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn models_list_and_health() {
    let env = setup().await;
    let r = env.call(Method::GET, "/v1/models", &[], "").await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "ab",
            "sticky",
            "fallback",
            "deleted",
            "azure",
            "own",
            "o4-mini",
            "gpt-4o",
            "gpt-4o-mini"
        ]
    );
    assert_eq!(
        env.call(Method::GET, "/v1/models/sticky", &[], "")
            .await
            .json()["id"],
        "sticky"
    );
    assert_eq!(
        env.call(Method::GET, "/v1/models/nope", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // metrics are not on the API port
    assert_eq!(
        env.call(Method::GET, "/metrics", &[], "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(env.admin("/healthz").await.0, StatusCode::OK);
    assert!(env.metrics().await.contains("tailor_build_info{version="));
}
