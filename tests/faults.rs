//! Fault injection: a misbehaving upstream (the simulator, told what to do per request) behind
//! tailor with short limits (tests/fixtures/faults.yaml). Each case checks what the client saw,
//! how many attempts the upstream got, and the metric deltas.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{metric, parse_metrics, setup_named, sse_data, Env};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

async fn setup() -> Env {
    setup_named("faults.yaml").await
}

fn chat(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hello there"}}]}}"#
    )
}

fn attempts(env: &Env) -> Vec<String> {
    env.mock
        .received()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["model"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

const REQ: &str = "tailor_requests_total{client=\"anonymous\",code=";

#[tokio::test]
async fn reset_mid_stream_ends_with_an_error_event() {
    let env = setup().await;
    let r = env
        .chat(&chat("plain", true), &[("x-mock-fail-after", "3")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = sse_data(&r.text());
    assert!(!events.contains(&"[DONE]".to_owned()));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_error");
    assert_eq!(
        attempts(&env).len(),
        1,
        "nothing is retried after the first byte"
    );
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            &format!("{REQ}\"200\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"upstream_error\",route=\"plain\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "tailor_upstream_errors_total{kind=\"stream\",model=\"gpt-4o\",route=\"plain\"}"
        ),
        1.0
    );
}

/// A stream that breaks before its usage chunk is billed with OpenAI's tokenizer: the prompt
/// tailor sent and the text the client got, counted exactly (o200k_base for gpt-4o).
#[tokio::test]
async fn a_broken_stream_is_billed_with_exact_token_counts() {
    use tailor::tokens::{chat as tchat, Encoding};
    // loaded at start on a background thread; a test must not race it
    Encoding::O200kBase.load();
    let env = setup().await;
    let r = env
        .chat(&chat("plain", true), &[("x-mock-fail-after", "5")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut text = String::new();
    for d in sse_data(&r.text()) {
        if let Ok(v) = serde_json::from_str::<Value>(&d) {
            text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert!(!text.is_empty());
    let sent = env.mock.received()[0].body.clone();
    let input =
        tchat::request_prompt_tokens(Encoding::O200kBase, tailor::request::Endpoint::Chat, &sent)
            .unwrap();
    // 3 per message + "user" 1 + "hello there" 2, and 3 to prime the reply
    assert_eq!(input, 9);
    let m = parse_metrics(&env.metrics().await);
    let est = |t: &str| {
        metric(
            &m,
            &format!(
                "tailor_estimated_tokens_total{{model=\"gpt-4o\",route=\"plain\",type=\"{t}\"}}"
            ),
        )
    };
    assert_eq!(est("input"), input as f64);
    let output = Encoding::O200kBase.count(&text);
    assert_eq!(est("output"), output as f64, "{text:?}");
    // bytes / 4 would not give it: the words are short
    assert_ne!(output, text.len().div_ceil(4) as u64, "{text:?}");
}

#[tokio::test]
async fn stalled_stream_hits_the_idle_limit_and_the_upstream_is_cancelled() {
    let env = setup().await;
    let t = Instant::now();
    let r = env
        .chat(&chat("plain", true), &[("x-mock-stall-after", "2")])
        .await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "idle limit is 500ms, took {took:?}"
    );
    let events = sse_data(&r.text());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("idle"),
        "{last}"
    );
    // tailor hung up on the silent upstream
    for _ in 0..20 {
        if env.mock.cancelled_streams() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.mock.cancelled_streams(), 1);
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_upstream_errors_total{kind=\"stall\",model=\"gpt-4o\",route=\"plain\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn slow_headers_are_retried_within_the_total_deadline_then_504() {
    let env = setup().await;
    let t = Instant::now();
    let r = env
        .chat(&chat("plain", false), &[("x-mock-delay-ms", "1500")])
        .await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    assert_eq!(r.header("x-should-retry"), "false");
    assert!(
        took < Duration::from_millis(3500),
        "total deadline 3s covers every try, took {took:?}"
    );
    assert_eq!(attempts(&env).len(), 3);
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_upstream_errors_total{kind=\"timeout\",model=\"gpt-4o\",route=\"plain\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            &format!("{REQ}\"504\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"upstream_error\",route=\"plain\"}}")
        ),
        1.0
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_the_fallback_serves() {
    let env = setup().await;
    // two 500s, then the same model answers: no fallback needed
    let r = env
        .chat(
            &chat("fb", false),
            &[("x-mock-fail-first", "2"), ("x-mock-fail-key", "a")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-tailor-model"), "gpt-4o");
    assert_eq!(attempts(&env), ["gpt-4o-2024-08-06"; 3]);
    // a storm: every try fails, on the fallback too
    env.mock.clear();
    let r = env
        .chat(&chat("fb", false), &[("x-mock-status", "503")])
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.header("x-should-retry"),
        "false",
        "tailor retried; the SDK must not multiply it"
    );
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(attempts(&env).len(), 6, "3 tries of gpt-4o, then 3 of mini");
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(metric(&m, "tailor_fallbacks_total{from=\"gpt-4o\",reason=\"server_error\",route=\"fb\",to=\"mini\"}"), 1.0);
    assert_eq!(
        metric(
            &m,
            &format!("{REQ}\"503\",endpoint=\"chat\",model=\"mini\",outcome=\"upstream_error\",route=\"fb\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            &format!(
                "{REQ}\"200\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"ok\",route=\"fb\"}}"
            )
        ),
        1.0
    );
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let env = setup().await;
    let t = Instant::now();
    let r = env
        .chat(
            &chat("plain", false),
            &[
                ("x-mock-fail-first", "1"),
                ("x-mock-fail-key", "b"),
                ("x-mock-status", "429"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "retry-after: 1 was honoured"
    );
    assert_eq!(attempts(&env).len(), 2);
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_upstream_errors_total{kind=\"rate_limited\",model=\"gpt-4o\",route=\"plain\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn deleted_fine_tune_falls_back_at_once() {
    let env = setup().await;
    for stream in [false, true] {
        let r = env.chat(&chat("ft", stream), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-tailor-model"), "gpt-4o");
    }
    assert_eq!(
        attempts(&env),
        [
            "ft:gpt-4o-2024-08-06:acme:deleted:X",
            "gpt-4o-2024-08-06",
            "ft:gpt-4o-2024-08-06:acme:deleted:X",
            "gpt-4o-2024-08-06"
        ]
    );
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(metric(&m, "tailor_fallbacks_total{from=\"deleted-ft\",reason=\"model_not_found\",route=\"ft\",to=\"gpt-4o\"}"), 2.0);
}

#[tokio::test]
async fn connection_refused_is_retried_then_falls_back() {
    let env = setup().await;
    let r = env.chat(&chat("dead", false), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-tailor-model"), "gpt-4o");
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            "tailor_upstream_errors_total{kind=\"connect\",model=\"dead-4o\",route=\"dead\"}"
        ),
        3.0
    );
    assert_eq!(metric(&m, "tailor_fallbacks_total{from=\"dead-4o\",reason=\"connect\",route=\"dead\",to=\"gpt-4o\"}"), 1.0);
}

#[tokio::test]
async fn a_failing_model_leaves_rotation_and_comes_back() {
    let env = setup().await;
    let mut to_broken = 0;
    for _ in 0..30 {
        let r = env.chat(&chat("health-ab", false), &[]).await;
        if r.header("x-tailor-model") == "broken" {
            to_broken += 1;
            assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    assert_eq!(
        to_broken, 1,
        "3 failed tries of one request eject it (health.failures: 3)"
    );
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(metric(&m, "tailor_model_healthy{model=\"broken\"}"), 0.0);
    assert_eq!(metric(&m, "tailor_model_healthy{model=\"gpt-4o\"}"), 1.0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(&m, "tailor_model_healthy{model=\"broken\"}"),
        1.0,
        "back after the cool-down"
    );
}

/// Sends a streaming request and returns the response with its body unread.
async fn open_stream(
    env: &Env,
    body: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::post(format!(
        "http://{}/v1/chat/completions",
        env.tailor.api_addr
    ));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    env.client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn client_hang_up_mid_stream_cancels_upstream_and_bills_once_by_estimate() {
    let env = setup().await;
    let resp = open_stream(
        &env,
        &chat("plain", true),
        &[("x-mock-words", "200"), ("x-mock-chunk-delay-ms", "20")],
    )
    .await;
    let mut body = resp.into_body();
    let mut got = 0;
    while got < 5 {
        if let Some(Ok(f)) = body.frame().await {
            if f.is_data() {
                got += 1;
            }
        }
    }
    let hung_up = Instant::now();
    drop(body);
    while env.mock.cancelled_streams() == 0 {
        assert!(
            hung_up.elapsed() < Duration::from_secs(1),
            "upstream not cancelled within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            &format!(
                "{REQ}\"200\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"client_cancelled\",route=\"plain\"}}"
            )
        ),
        1.0
    );
    let out = metric(&m, "tailor_tokens_total{client=\"anonymous\",model=\"gpt-4o\",route=\"plain\",type=\"output\"}");
    assert!(
        out > 0.0 && out < 200.0,
        "estimated from what was streamed: {out}"
    );
    assert!(metric(&m, "tailor_tokens_total{client=\"anonymous\",model=\"gpt-4o\",route=\"plain\",type=\"input\"}") > 0.0);
    assert_eq!(
        metric(&m, "tailor_in_flight_requests{route=\"plain\"}"),
        0.0
    );
}

#[tokio::test]
async fn hang_up_before_the_first_byte_records_no_output() {
    let env = setup().await;
    let body = chat("plain", true);
    let call = env.chat(&body, &[("x-mock-delay-ms", "800")]);
    assert!(tokio::time::timeout(Duration::from_millis(200), call)
        .await
        .is_err());
    tokio::time::sleep(Duration::from_millis(900)).await;
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(
            &m,
            &format!(
                "{REQ}\"499\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"client_cancelled\",route=\"plain\"}}"
            )
        ),
        1.0
    );
    assert_eq!(metric(&m, "tailor_tokens_total{client=\"anonymous\",model=\"gpt-4o\",route=\"plain\",type=\"output\"}"), 0.0);
    assert_eq!(
        metric(&m, "tailor_in_flight_requests{route=\"plain\"}"),
        0.0
    );
}

#[tokio::test]
async fn over_the_route_limit_is_an_immediate_429_and_health_still_answers() {
    let env = setup().await;
    let slow = [("x-mock-words", "40"), ("x-mock-chunk-delay-ms", "20")];
    let a = open_stream(&env, &chat("limited", true), &slow).await;
    let b = open_stream(&env, &chat("limited", true), &slow).await;
    let t = Instant::now();
    let r = env.chat(&chat("limited", true), &[]).await;
    assert!(t.elapsed() < Duration::from_millis(200), "no queueing");
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.json()["error"]["code"], "concurrency_limit_exceeded");
    assert_eq!(env.admin("/healthz").await.0, StatusCode::OK);
    // the slots come back when the streams end
    let _ = (a.into_body().collect().await, b.into_body().collect().await);
    assert_eq!(
        env.chat(&chat("limited", false), &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn shutdown_drains_then_ends_open_streams_with_an_error_event() {
    let common::Env {
        mock: _mock,
        tailor,
        client,
        ..
    } = setup().await;
    let url = format!("http://{}/v1/chat/completions", tailor.api_addr);
    let admin = tailor.admin_addr;
    // a short stream that finishes within the drain time, and one that cannot (5 s > 1 s)
    let short = client
        .request(
            Request::post(&url)
                .header("x-mock-words", "10")
                .header("x-mock-chunk-delay-ms", "20")
                .body(Full::new(Bytes::from(chat("plain", true))))
                .unwrap(),
        )
        .await
        .unwrap();
    let long = client
        .request(
            Request::post(&url)
                .header("x-mock-words", "100")
                .header("x-mock-chunk-delay-ms", "50")
                .body(Full::new(Bytes::from(chat("plain", true))))
                .unwrap(),
        )
        .await
        .unwrap();
    let short = tokio::spawn(async move { short.into_body().collect().await.unwrap().to_bytes() });
    let long = tokio::spawn(async move { long.into_body().collect().await.map(|c| c.to_bytes()) });
    let shared = tailor.shared.clone();
    let stop = tokio::spawn(tailor.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = client
        .request(
            Request::get(format!("http://{admin}/readyz"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!shared.ready.load(std::sync::atomic::Ordering::Relaxed));
    let short = String::from_utf8(short.await.unwrap().to_vec()).unwrap();
    assert!(
        short.ends_with("data: [DONE]\n\n"),
        "a stream within the drain time completes"
    );
    let long = String::from_utf8(long.await.unwrap().unwrap().to_vec()).unwrap();
    let last: Value = serde_json::from_str(sse_data(&long).last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{last}"
    );
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .unwrap()
        .unwrap();
}

/// A folder for a config file to reload, and the faults fixture's text for `env`'s simulator.
fn reload_files(env: &Env, tag: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("tailor-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/faults.yaml"
    ))
    .unwrap()
    .replace("MOCK_URL", &format!("http://{}", env.mock.addr));
    (dir, path, base)
}

/// The environment the faults fixture reads.
fn reload_env(k: &str) -> Option<String> {
    (k == "TAILOR_TEST_KEY").then(|| common::UPSTREAM_KEY.to_owned())
}

#[tokio::test]
async fn reload_swaps_whole_configs_and_rejects_bad_ones() {
    let env = setup().await;
    let (dir, path, base) = reload_files(&env, "reload");
    let adjust: tailor::reload::Adjust = std::sync::Arc::new(|_| {});
    let envf = reload_env;
    // a stream in flight on the old config
    let inflight = open_stream(
        &env,
        &chat("plain", true),
        &[("x-mock-words", "30"), ("x-mock-chunk-delay-ms", "20")],
    )
    .await;
    // new config: `plain` is gone
    std::fs::write(
        &path,
        base.replace("match: { model: plain }", "match: { model: renamed }"),
    )
    .unwrap();
    assert!(tailor::reload::reload_now(
        &path,
        &env.tailor.shared,
        &adjust,
        &envf
    ));
    assert_eq!(
        env.chat(&chat("plain", false), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.chat(&chat("renamed", false), &[]).await.status,
        StatusCode::OK
    );
    let body = String::from_utf8(
        inflight
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "the in-flight request kept its snapshot"
    );
    // an invalid file is rejected and the last good config keeps serving
    std::fs::write(&path, base.replace("weight: 50", "wieght: 50")).unwrap();
    assert!(!tailor::reload::reload_now(
        &path,
        &env.tailor.shared,
        &adjust,
        &envf
    ));
    assert_eq!(
        env.chat(&chat("renamed", false), &[]).await.status,
        StatusCode::OK
    );
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(&m, "tailor_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "tailor_config_reloads_total{result=\"error\"}"),
        1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn over_the_server_limit_is_an_immediate_429_on_every_route() {
    let env = common::setup_edited("faults.yaml", true, &|t| {
        t.replace(
            "drain_timeout: 1s",
            "drain_timeout: 1s\n  max_concurrency: 2",
        )
    })
    .await;
    let slow = [("x-mock-words", "40"), ("x-mock-chunk-delay-ms", "20")];
    let a = open_stream(&env, &chat("plain", true), &slow).await;
    let b = open_stream(&env, &chat("fb", true), &slow).await;
    for model in ["plain", "fb", "ft"] {
        let r = env.chat(&chat(model, false), &[]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{model}");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server limit"));
    }
    assert_eq!(env.admin("/healthz").await.0, StatusCode::OK);
    let _ = (a.into_body().collect().await, b.into_body().collect().await);
    assert_eq!(
        env.chat(&chat("plain", false), &[]).await.status,
        StatusCode::OK
    );
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(&m, "tailor_rejected_requests_total{reason=\"overloaded\"}"),
        3.0
    );
}

#[tokio::test]
async fn a_reload_is_as_strict_as_start_up_and_limits_count_requests_in_flight() {
    let env = setup().await;
    let (dir, path, base) = reload_files(&env, "reload-strict");
    let envf = reload_env;
    // as `serve --listen 0.0.0.0:8080` does: the command line's address applies to every reload
    let exposed: tailor::reload::Adjust = std::sync::Arc::new(|c: &mut tailor::config::Config| {
        c.server.listen = "0.0.0.0:8080".parse().unwrap();
    });
    std::fs::write(&path, &base).unwrap();
    assert!(
        !tailor::reload::reload_now(&path, &env.tailor.shared, &exposed, &envf),
        "no `clients:` on 0.0.0.0 with upstream keys: refused, as at start-up"
    );
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(&m, "tailor_config_reloads_total{result=\"error\"}"),
        1.0
    );
    assert_eq!(
        env.chat(&chat("plain", false), &[]).await.status,
        StatusCode::OK
    );

    // two streams hold the route's two places; a reload lowers the limit to 1: nobody new gets
    // in until the running requests are fewer than the new limit
    let short = [("x-mock-words", "10"), ("x-mock-chunk-delay-ms", "20")];
    let long = [("x-mock-words", "100"), ("x-mock-chunk-delay-ms", "20")];
    let a = open_stream(&env, &chat("limited", true), &short).await;
    let b = open_stream(&env, &chat("limited", true), &long).await;
    let keep: tailor::reload::Adjust = std::sync::Arc::new(|_| {});
    let limit_to = |n: usize| {
        std::fs::write(
            &path,
            base.replace("max_concurrency: 2", &format!("max_concurrency: {n}")),
        )
        .unwrap();
        assert!(tailor::reload::reload_now(
            &path,
            &env.tailor.shared,
            &keep,
            &envf
        ));
    };
    limit_to(1);
    let r = env.chat(&chat("limited", false), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the new limit counts the old requests"
    );
    let _ = a.into_body().collect().await;
    let r = env.chat(&chat("limited", false), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "one still runs: the limit is 1"
    );
    let _ = b.into_body().collect().await;
    assert_eq!(
        env.chat(&chat("limited", false), &[]).await.status,
        StatusCode::OK
    );
    // raising it takes effect at once, for the requests already running too
    limit_to(3);
    let streams = [
        open_stream(&env, &chat("limited", true), &long).await,
        open_stream(&env, &chat("limited", true), &long).await,
        open_stream(&env, &chat("limited", true), &long).await,
    ];
    assert!(streams.iter().all(|s| s.status() == StatusCode::OK));
    assert_eq!(
        env.chat(&chat("limited", false), &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    for s in streams {
        let _ = s.into_body().collect().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn odd_retry_after_values_never_drop_the_connection() {
    let env = setup().await;
    for v in ["1e20", "-1", "soon", "NaN", "99999999999999999999"] {
        let r = env
            .chat(
                &chat("plain", false),
                &[("x-mock-status", "429"), ("x-mock-retry-after", v)],
            )
            .await;
        // the upstream's 429 reaches the client (after tailor's own retries), not a reset
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded", "{v}");
        assert_eq!(r.header("retry-after"), v);
    }
}

#[tokio::test]
async fn an_oversized_upstream_event_ends_the_stream_with_an_error_event() {
    let env = common::setup_edited("faults.yaml", true, &|t| {
        t.replace(
            "drain_timeout: 1s",
            "drain_timeout: 1s\n  max_sse_event_bytes: 4096",
        )
    })
    .await;
    let ok = env
        .chat(&chat("plain", true), &[("x-mock-big-event", "3000")])
        .await;
    assert!(
        ok.text().ends_with("data: [DONE]\n\n"),
        "under the cap: a normal stream"
    );
    let r = env
        .chat(&chat("plain", true), &[("x-mock-big-event", "100000")])
        .await;
    let text = r.text();
    assert!(
        !text.contains("xxxxxxxxxx"),
        "the oversized event is not forwarded"
    );
    let events = sse_data(&text);
    assert!(
        events.first().is_some_and(|e| e.contains("\"role\"")),
        "the events before it pass"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_error");
    assert!(!text.contains("[DONE]"));
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(&m, "tailor_upstream_errors_total{kind=\"event_too_large\",model=\"gpt-4o\",route=\"plain\"}"),
        1.0
    );
}
