//! Per-arm system prompts, shadow traffic and the fine-tune economics, against the simulator
//! (tests/fixtures/economics.yaml).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{metric, parse_metrics, setup_named};
use http::Method;
use serde_json::Value;

const FT_ID: &str = "ft:gpt-4o-2024-08-06:acme:support:A1";
const BASE_ID: &str = "gpt-4o-2024-08-06";

fn prompt_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/prompts/support-long.md"
    ))
    .unwrap()
    .trim_end()
    .to_owned()
}

/// The body the simulator received for the request whose body contained `marker`.
fn received_with(env: &common::Env, marker: &str) -> Vec<u8> {
    env.mock
        .received()
        .into_iter()
        .rev()
        .find(|r| String::from_utf8_lossy(&r.body).contains(marker))
        .unwrap_or_else(|| panic!("no upstream request with {marker}"))
        .body
        .to_vec()
}

#[tokio::test]
async fn the_arm_prompt_reaches_the_base_arm_only_and_the_rest_stays_byte_for_byte() {
    let env = setup_named("economics.yaml").await;
    let system = format!(
        r#"{{"role":"system","content":{}}},"#,
        serde_json::to_string(&prompt_text()).unwrap()
    );
    let (mut saw_ft, mut saw_base) = (false, false);
    for i in 0..40 {
        // odd spacing and an unknown field: kept exactly as sent
        let body = format!(
            r#"{{"model":"support", "user":"cust-{i}","temperature":0.25,"x_unknown":[1, 2],"messages":[{{"role":"user","content":"Where is order {i}?"}}]}}"#
        );
        let r = env.chat(&body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let got = received_with(&env, &format!("Where is order {i}?"));
        match r.header("x-tailor-model") {
            "ft" => {
                saw_ft = true;
                let want = body.replace(r#""model":"support""#, &format!(r#""model":"{FT_ID}""#));
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    want,
                    "fine-tune arm: only model changes"
                );
            }
            "base" => {
                saw_base = true;
                let want = body
                    .replace(r#""model":"support""#, &format!(r#""model":"{BASE_ID}""#))
                    .replace(r#""messages":["#, &format!(r#""messages":[{system}"#));
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    want,
                    "base arm: the prompt first, the rest unchanged"
                );
            }
            other => panic!("unexpected model {other}"),
        }
    }
    assert!(saw_ft && saw_base, "both arms must have been drawn");

    // replace: the client's system and developer messages give way to the arm's prompt
    let body = r#"{"model":"replace","messages":[{"role":"system","content":"old rules"},{"role":"developer","content":"dev rules"},{"role":"user","content":"replace-me"},{"role":"assistant","content":"a"}],"n":1}"#;
    assert_eq!(env.chat(body, &[]).await.status, 200);
    let got: Value = serde_json::from_slice(&received_with(&env, "replace-me")).unwrap();
    let roles: Vec<&str> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(got["messages"][0]["content"], prompt_text());
    assert_eq!(got["n"], 1);

    // Responses API: the prompt goes before the client's instructions
    let r = env
        .call(
            Method::POST,
            "/v1/responses",
            &[],
            r#"{"model":"x","instructions":"be brief","input":"responses-marker"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got: Value = serde_json::from_slice(&received_with(&env, "responses-marker")).unwrap();
    assert_eq!(
        got["instructions"],
        format!("{}\n\nbe brief", prompt_text())
    );
}

#[tokio::test]
async fn shadow_copies_never_slow_or_fail_the_primary_are_metered_apart_and_shed_when_full() {
    let env = setup_named("economics.yaml").await;
    // the shadow model answers after 1.5 s; two copies may be in flight (shadow_max_concurrency)
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        let r = env
            .chat(
                &format!(
                    r#"{{"model":"shadowed","messages":[{{"role":"user","content":"s{i}"}}]}}"#
                ),
                &[],
            )
            .await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-tailor-model"), "base");
    }
    assert!(
        slowest < tailor::mock::SLOW_MODEL_DELAY / 2,
        "a primary waited for its shadow: {slowest:?}"
    );
    tokio::time::sleep(tailor::mock::SLOW_MODEL_DELAY + Duration::from_millis(800)).await;
    // (the slow copies have ended and freed their slots)
    // a shadow that fails is invisible to the client
    let r = env
        .chat(
            r#"{"model":"shadow-broken","messages":[{"role":"user","content":"b"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["choices"][0]["message"]["content"].is_string());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = parse_metrics(&env.metrics().await);
    let sent = metric(
        &m,
        r#"tailor_shadow_requests_total{model="ft-slow",outcome="ok",route="shadowed"}"#,
    );
    let dropped = metric(&m, r#"tailor_shadow_dropped_total{route="shadowed"}"#);
    assert_eq!(sent, 2.0, "two slots: the first two copies run");
    assert_eq!(
        dropped, 3.0,
        "the other three find no slot and are dropped, counted"
    );
    assert_eq!(
        metric(
            &m,
            r#"tailor_shadow_comparisons_total{model="ft-slow",result="differ",route="shadowed"}"#
        ),
        2.0,
        "the simulator names the model in its reply: the answers differ"
    );
    assert_eq!(
        metric(
            &m,
            r#"tailor_shadow_comparisons_total{model="ft-broken",result="shadow_error",route="shadow-broken"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tailor_shadow_requests_total{model="ft-broken",outcome="upstream_error",route="shadow-broken"}"#
        ),
        1.0
    );
    // metered apart: shadow tokens only in the shadow series; primary series count primaries
    assert_eq!(
        metric(
            &m,
            r#"tailor_shadow_tokens_total{model="ft-slow",route="shadowed",type="output"}"#
        ),
        24.0
    );
    assert!(
        !m.keys()
            .any(|k| k.starts_with("tailor_tokens_total") && k.contains("ft-slow")),
        "shadow tokens leaked into tailor_tokens_total"
    );
    assert!(!m
        .keys()
        .any(|k| k.starts_with("tailor_requests_total") && k.contains("ft-")));
    assert_eq!(
        metric(
            &m,
            r#"tailor_requests_total{client="anonymous",code="200",endpoint="chat",model="base",outcome="ok",route="shadowed"}"#
        ),
        5.0
    );
    assert!(
        metric(
            &m,
            r#"tailor_arm_cost_usd_total{model="ft-slow",route="shadowed",traffic="shadow"}"#
        ) > 0.0
    );
    // the latency delta per pair is about the shadow's delay
    let dl = metric(
        &m,
        r#"tailor_shadow_delta_sum{measure="latency_seconds",model="ft-slow",route="shadowed"}"#,
    );
    assert!(dl > 2.0 * 1.3, "latency delta sum {dl}");
}

/// Cost of one usage in picodollars at USD-per-1M prices (= picodollars per token ×1e-6 ×1e12).
fn pico(input: u64, cached: u64, output: u64, p: (u64, u64, u64)) -> u128 {
    u128::from(input - cached) * u128::from(p.0)
        + u128::from(cached) * u128::from(p.1)
        + u128::from(output) * u128::from(p.2)
}

#[tokio::test]
async fn economics_equal_a_hand_computation() {
    let env = setup_named("economics.yaml").await;
    // prices in picodollars per token: gpt-4o-2024-08-06 and ft:gpt-4o-2024-08-06 (built-in table)
    let base_p = (2_500_000, 1_250_000, 10_000_000);
    let ft_p = (3_750_000, 1_875_000, 15_000_000);
    // (n, Σinput, Σcached, Σoutput, Σcost) per arm, from the usage each client received
    let mut ft = (0u64, 0u64, 0u64, 0u64, 0u128);
    let mut base = ft;
    for i in 0..30 {
        let words = 20 + (i * 37) % 90;
        let body = format!(
            r#"{{"model":"support","user":"u{i}","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "question ".repeat(1 + i as usize % 5)
        );
        let r = env
            .chat(&body, &[("x-mock-words", &words.to_string())])
            .await;
        assert_eq!(r.status, 200);
        let u = &r.json()["usage"];
        let (inp, cached, out) = (
            u["prompt_tokens"].as_u64().unwrap(),
            u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
            u["completion_tokens"].as_u64().unwrap(),
        );
        let (acc, p) = match r.header("x-tailor-model") {
            "ft" => (&mut ft, ft_p),
            _ => (&mut base, base_p),
        };
        acc.0 += 1;
        acc.1 += inp;
        acc.2 += cached;
        acc.3 += out;
        acc.4 += pico(inp, cached, out, p);
    }
    assert!(ft.0 > 0 && base.0 > 0, "both arms drawn: {ft:?} {base:?}");
    assert!(
        base.2 > 0,
        "the base arm's long prompt must produce cached tokens"
    );
    let (_, econ) = env.admin("/economics").await;
    let e: Value = serde_json::from_str(&econ).unwrap();
    let route = e["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "support")
        .unwrap();
    let arm = |name: &str| {
        route["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["model"] == name)
            .unwrap()
            .clone()
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12_f64.max(b.abs() * 1e-9);
    for (name, acc) in [("ft", ft), ("base", base)] {
        let a = arm(name);
        let n = acc.0 as f64;
        assert_eq!(a["requests"], acc.0);
        assert!(
            close(a["mean_input_tokens"].as_f64().unwrap(), acc.1 as f64 / n),
            "{name} {a}"
        );
        assert!(
            close(a["mean_cached_tokens"].as_f64().unwrap(), acc.2 as f64 / n),
            "{name} {a}"
        );
        assert!(
            close(a["mean_output_tokens"].as_f64().unwrap(), acc.3 as f64 / n),
            "{name} {a}"
        );
        assert!(
            close(
                a["cost_per_request_usd"].as_f64().unwrap(),
                acc.4 as f64 / n / 1e12
            ),
            "{name} {a}"
        );
        assert!(
            close(a["spend_usd"].as_f64().unwrap(), acc.4 as f64 / 1e12),
            "{name} {a}"
        );
        assert!(close(a["observed_share"].as_f64().unwrap(), n / 30.0));
        assert_eq!(a["configured_share"], 0.5);
        assert_eq!(a["error_rate"], 0.0);
    }
    let cpr_ft = ft.4 as f64 / ft.0 as f64 / 1e12;
    let cpr_base = base.4 as f64 / base.0 as f64 / 1e12;
    let saving = cpr_base - cpr_ft;
    let v = &route["finetune"];
    assert_eq!(v["fine_tune"], "ft");
    assert_eq!(v["base"], "base");
    assert!(
        close(
            v["savings_per_1k_requests_usd"].as_f64().unwrap(),
            saving * 1000.0
        ),
        "{v}"
    );
    assert!(
        close(
            v["savings_to_date_usd"].as_f64().unwrap(),
            saving * ft.0 as f64
        ),
        "{v}"
    );
    assert!(
        close(v["net_usd"].as_f64().unwrap(), saving * ft.0 as f64 - 10.0),
        "{v}"
    );
    if saving > 0.0 {
        let breakeven = (10.0 / saving).ceil() as u64;
        assert_eq!(v["breakeven_requests"], breakeven, "{v}");
        assert_eq!(v["remaining_requests"], breakeven - ft.0, "{v}");
        assert!(
            v["summary"].as_str().unwrap().starts_with("ft saves $"),
            "{v}"
        );
    } else {
        assert!(v["breakeven_requests"].is_null());
        assert!(v["summary"]
            .as_str()
            .unwrap()
            .contains("does not pay for itself"));
    }
    // the same verdict on /metrics and on the status page
    let m = parse_metrics(&env.metrics().await);
    assert!(close(
        metric(
            &m,
            r#"tailor_finetune_savings_usd_per_1k_requests{model="ft",route="support"}"#
        ),
        saving * 1000.0
    ));
    assert_eq!(
        metric(&m, r#"tailor_model_training_cost_usd{model="ft"}"#),
        10.0
    );
    let (status, page) = env.admin("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(v["summary"].as_str().unwrap()),
        "verdict missing from the page"
    );
    for r in [
        "support",
        "replace",
        "responses",
        "shadowed",
        "shadow-broken",
    ] {
        assert!(
            page.contains(&format!(r#"id="route-{r}""#)),
            "route {r} missing from the page"
        );
    }
}

#[tokio::test]
async fn an_edited_prompt_file_is_reloaded_by_itself() {
    let mock = tailor::mock::start("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tailor-prompt-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("prompts")).unwrap();
    std::fs::write(dir.join("prompts/p.md"), "first rules\n").unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
server: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
upstreams:
  mock: {{ url: "http://{}/v1", api_key_env: TAILOR_TEST_KEY }}
models:
  gpt-4o: {{ upstream: mock, id: gpt-4o-2024-08-06 }}
routes: [{{ name: main, split: [{{ model: gpt-4o, system_prompt: prompts/p.md }}] }}]
"#,
            mock.addr
        ),
    )
    .unwrap();
    // a reload reads keys from the process environment
    std::env::set_var("TAILOR_TEST_KEY", "sk-test");
    let env = |k: &str| std::env::var(k).ok();
    let cfg = tailor::config::Config::load(&path, &env).unwrap();
    let running = tailor::server::start(cfg, tailor::metrics::Metrics::new().unwrap())
        .await
        .unwrap();
    let watcher = tokio::spawn(tailor::reload::watch(
        path.clone(),
        running.shared.clone(),
        std::sync::Arc::new(|_: &mut tailor::config::Config| {}),
    ));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let ask = |marker: &'static str| {
        let req = http::Request::post(format!("http://{}/v1/chat/completions", running.api_addr))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"{marker}"}}]}}"#
            ))))
            .unwrap();
        let c = client.clone();
        async move {
            let resp = c.request(req).await.unwrap();
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            status
        }
    };
    let system_of = |marker: &str| {
        let r = mock
            .received()
            .into_iter()
            .rev()
            .find(|r| String::from_utf8_lossy(&r.body).contains(marker))
            .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["messages"][0]["content"].as_str().unwrap().to_owned()
    };
    assert_eq!(ask("one").await, 200);
    assert_eq!(system_of("one"), "first rules");
    // only the prompt file changes, not routes.yaml
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(dir.join("prompts/p.md"), "second rules\n").unwrap();
    let t = Instant::now();
    loop {
        assert_eq!(ask("two").await, 200);
        if system_of("two") == "second rules" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the new prompt was never used"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watcher.abort();
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn feedback_lands_on_the_arm_that_answered_whichever_replica_gets_it() {
    // two replicas of one config (a shared request-id key) in front of one simulator
    let with_key = |t: String| {
        t.replace(
            "admin_listen: 127.0.0.1:0",
            "admin_listen: 127.0.0.1:0\n  request_id_key_env: TAILOR_TEST_ID_KEY",
        )
    };
    let a = common::setup_edited("proxy.yaml", false, &with_key).await;
    let url = format!("http://{}", a.mock.addr);
    let b = tailor::server::start(
        common::load_fixture_edited("proxy.yaml", &url, &with_key),
        tailor::metrics::Metrics::new().unwrap(),
    )
    .await
    .unwrap();
    let post = |addr: std::net::SocketAddr, body: String| {
        let req = http::Request::post(format!("http://{addr}/v1/feedback"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let client = a.client.clone();
        async move {
            let r = client.request(req).await.unwrap();
            let status = r.status();
            let body = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    // answers from replica A on the A/B route (90% the fine-tune), and one after a fallback
    let mut by_model: std::collections::HashMap<String, (u32, f64)> = Default::default();
    for i in 0..20 {
        let r = a
            .chat(
                &format!(r#"{{"model":"ab","user":"u{i}","messages":[]}}"#),
                &[],
            )
            .await;
        let (id, model) = (r.header("x-tailor-request-id"), r.header("x-tailor-model"));
        let score = if i % 3 == 0 {
            "true".to_owned()
        } else {
            format!("0.{i}")
        };
        let (status, v) = post(
            b.api_addr,
            format!(r#"{{"request_id":"{id}","score":{score}}}"#),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (v["route"].as_str(), v["model"].as_str()),
            (Some("ab"), Some(model))
        );
        let e = by_model.entry(model.to_owned()).or_default();
        e.0 += 1;
        e.1 += if score == "true" {
            1.0
        } else {
            score.parse::<f64>().unwrap()
        };
    }
    let fb = a.chat(r#"{"model":"fallback","messages":[]}"#, &[]).await;
    assert_eq!(fb.header("x-tailor-model"), "mini");
    let (status, v) = post(
        b.api_addr,
        format!(
            r#"{{"request_id":"{}","score":1}}"#,
            fb.header("x-tailor-request-id")
        ),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["model"].as_str()),
        (200, Some("mini")),
        "the model that answered"
    );
    // counted on replica B, for the arm that answered on A
    let text = metrics_of(b.admin_addr, &a).await;
    let m = common::parse_metrics(&text);
    for (model, (n, sum)) in &by_model {
        let l = format!("{{model=\"{model}\",route=\"ab\"}}");
        assert_eq!(
            common::metric(&m, &format!("tailor_feedback_total{l}")),
            f64::from(*n)
        );
        let got = common::metric(&m, &format!("tailor_feedback_score_total{l}"));
        assert!((got - sum).abs() < 1e-9, "{model}: {got} vs {sum}");
    }
    assert_eq!(
        common::metric(
            &m,
            "tailor_feedback_total{model=\"mini\",route=\"fallback\"}"
        ),
        1.0
    );
    // forged, altered or unknown ids and bad scores: 400, OpenAI-shaped, nothing counted
    let id = fb.header("x-tailor-request-id").to_owned();
    let altered = format!(
        "{}{}",
        &id[..id.len() - 1],
        if id.ends_with('0') { '1' } else { '0' }
    );
    for body in [
        format!(r#"{{"request_id":"{altered}","score":1}}"#),
        r#"{"request_id":"tlr-0123456789abcdef","score":1}"#.to_owned(),
        r#"{"score":1}"#.to_owned(),
        format!(r#"{{"request_id":"{id}","score":1.5}}"#),
        format!(r#"{{"request_id":"{id}","score":"good"}}"#),
        format!(r#"{{"request_id":"{id}"}}"#),
        "{".to_owned(),
    ] {
        let (status, v) = post(b.api_addr, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        for k in ["message", "type", "param", "code"] {
            assert!(v["error"].get(k).is_some(), "{body}: {v}");
        }
    }
    let after = common::parse_metrics(&metrics_of(b.admin_addr, &a).await);
    assert_eq!(
        common::metric(
            &after,
            "tailor_feedback_total{model=\"mini\",route=\"fallback\"}"
        ),
        1.0
    );
    b.shutdown().await;
}

/// `/metrics` of a replica by its admin address.
async fn metrics_of(admin: std::net::SocketAddr, env: &common::Env) -> String {
    let req = http::Request::get(format!("http://{admin}/metrics"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = env.client.request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}
