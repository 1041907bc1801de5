//! Every reader of upstream bytes against the wire formats of other OpenAI-compatible servers
//! (`x-mock-format`: spaced JSON as Python writes it, `\r\n` or `\r` line ends, `data:` without
//! its space, no `event:` lines, `usage` first, SSE comments, non-ASCII text and `\u` escapes,
//! and all at once): metering,
//! stripping the usage a client did not ask for, Responses completeness, the estimate after a
//! hang-up, shadow comparisons and capture all give the same answers as with OpenAI's own format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{metric, parse_metrics, setup_edited, Env};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tailor::mock::format::NAMES;

/// OpenAI's own format (empty), each other one, then all of them at once.
fn formats() -> Vec<String> {
    let mut v = vec![String::new()];
    v.extend(NAMES.iter().map(|n| n.to_string()));
    v.push(NAMES.join(","));
    v
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailor-formats-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn setup(dir: &Path) -> Env {
    let d = dir.display().to_string();
    setup_edited("formats.yaml", false, &move |t| {
        t.replace("CAPTURE_DIR", &d)
    })
    .await
}

/// The data payloads of an SSE body as a client reads it (independent of tailor's own reader):
/// lines end with `\n`, `\r\n` or `\r`, `data:` takes an optional space, `:` starts a comment.
fn payloads(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut data: Option<String> = None;
    for line in body.replace("\r\n", "\n").split(['\n', '\r']) {
        if line.is_empty() {
            out.extend(data.take());
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            data = Some(match data.take() {
                Some(prev) => format!("{prev}\n{v}"),
                None => v.to_owned(),
            });
        }
    }
    out.extend(data);
    out
}

fn chat(model: &str, stream: bool, extra: &str) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"Say something, please."}}]{extra}}}"#
    )
}

fn tokens(m: &HashMap<String, f64>, route: &str, kind: &str) -> f64 {
    metric(
        m,
        &format!("tailor_tokens_total{{client=\"anonymous\",model=\"gpt-4o\",route=\"{route}\",type=\"{kind}\"}}"),
    )
}

/// The text a client reassembles from a chat stream's deltas.
fn streamed_text(body: &str) -> String {
    payloads(body)
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn metering_and_usage_stripping_hold_in_every_format() {
    let dir = temp_dir("meter");
    let env = setup(&dir).await;
    for f in &formats() {
        let f = f.as_str();
        let h = [("x-mock-format", f)];
        let before = parse_metrics(&env.metrics().await);

        // non-streaming: the body passes as sent, its usage is metered exactly
        let r = env.chat(&chat("gpt-4o", false, ""), &h).await;
        assert_eq!(r.status, StatusCode::OK, "{f}: {}", r.text());
        let u = r.json()["usage"].clone();
        if f.contains("spaced") {
            assert!(r.text().contains("\": "), "{f}: the body is passed as sent");
        }

        // streaming, usage asked for: the usage chunk arrives and equals what was metered
        let asked = env
            .chat(
                &chat(
                    "gpt-4o",
                    true,
                    r#","stream_options":{"include_usage":true}"#,
                ),
                &h,
            )
            .await;
        let asked_text = asked.text();
        let usage_events: Vec<Value> = payloads(&asked_text)
            .iter()
            .filter_map(|p| serde_json::from_str::<Value>(p).ok())
            .filter(|v| v["usage"].is_object())
            .collect();
        assert_eq!(usage_events.len(), 1, "{f}: {asked_text}");

        // streaming, usage not asked for: no `usage` anywhere, everything else as the upstream wrote it
        let plain = env.chat(&chat("gpt-4o", true, ""), &h).await;
        let text = plain.text();
        assert_eq!(plain.status, StatusCode::OK);
        let events = payloads(&text);
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{f}: {text}"
        );
        for p in events.iter().filter(|p| p.as_str() != "[DONE]") {
            let v: Value = serde_json::from_str(p).unwrap();
            assert!(v.get("usage").is_none(), "{f}: usage left in {p}");
            assert!(
                v["choices"].as_array().is_some_and(|c| !c.is_empty()),
                "{f}: {p}"
            );
            if f.contains("spaced") {
                assert!(
                    p.contains("\": ") && p.contains(", \""),
                    "{f}: spacing kept in {p}"
                );
            }
            if f.contains("usage-first") {
                // `{"usage": null, "choices": ...` lost its first member and the comma after it
                assert!(
                    p.starts_with("{\"choices\""),
                    "{f}: the member after usage now leads: {p}"
                );
            }
        }
        // 12 words, each one content delta, plus the role delta and the finish chunk
        assert_eq!(events.len(), 12 + 2 + 1, "{f}: {text}");
        if f.split(',').any(|n| n == "cr") {
            assert!(!text.contains('\n'), "{f}: only \\r line ends");
        } else if f.contains("crlf") {
            assert!(
                !text.replace("\r\n", "").contains('\n'),
                "{f}: only \\r\\n line ends"
            );
        }
        if f.contains("nospace") {
            assert!(text.contains("data:{") && !text.contains("data: "), "{f}");
        }
        if f.contains("comments") {
            assert!(text.contains(": keep-alive"), "{f}: comments pass through");
        }
        let said = streamed_text(&text);
        assert!(said.contains("simulated reply"), "{f}: {said}");
        if f.contains("unicode") {
            assert!(said.contains("Voilà, 🚀"), "{f}: {said}");
        }
        if f.contains("unicode") && f.contains("spaced") {
            assert!(
                text.contains("\\ud83d\\ude80"),
                "{f}: escaped as the upstream sent it"
            );
        }

        let after = parse_metrics(&env.metrics().await);
        let d = |kind: &str| tokens(&after, "default", kind) - tokens(&before, "default", kind);
        let prompt = u["prompt_tokens"].as_f64().unwrap();
        let asked_usage = &usage_events[0]["usage"];
        assert_eq!(d("output"), 3.0 * 12.0, "{f}: 12 words, three times");
        assert_eq!(asked_usage["completion_tokens"].as_f64(), Some(12.0), "{f}");
        // the simulator counts the messages only: the same prompt tokens for all three
        assert_eq!(asked_usage["prompt_tokens"].as_f64(), Some(prompt), "{f}");
        assert_eq!(d("input") + d("cached_input"), 3.0 * prompt, "{f}");
        let est = |m: &HashMap<String, f64>| {
            metric(
                m,
                "tailor_estimated_tokens_total{model=\"gpt-4o\",route=\"default\",type=\"output\"}",
            )
        };
        assert_eq!(est(&after), est(&before), "{f}: nothing estimated");
    }
}

#[tokio::test]
async fn responses_streams_are_complete_without_event_lines() {
    let dir = temp_dir("responses");
    let env = setup(&dir).await;
    for f in &formats() {
        let f = f.as_str();
        let r = env
            .call(
                http::Method::POST,
                "/v1/responses",
                &[("x-mock-format", f)],
                r#"{"model":"gpt-4o","stream":true,"input":"Hi"}"#.to_owned(),
            )
            .await;
        let text = r.text();
        assert_eq!(r.status, StatusCode::OK, "{f}");
        assert!(
            !text.contains("upstream_stream_error"),
            "{f}: an error event was appended: {text}"
        );
        let last: Value = serde_json::from_str(payloads(&text).last().unwrap()).unwrap();
        assert_eq!(last["type"], "response.completed", "{f}");
    }
    let m = parse_metrics(&env.metrics().await);
    let n = formats().len() as f64;
    assert_eq!(
        metric(&m, "tailor_requests_total{client=\"anonymous\",code=\"200\",endpoint=\"responses\",model=\"gpt-4o\",outcome=\"ok\",route=\"default\"}"),
        n
    );
    assert_eq!(
        metric(
            &m,
            "tailor_upstream_errors_total{kind=\"stream\",model=\"gpt-4o\",route=\"default\"}"
        ),
        0.0
    );
    assert_eq!(metric(&m, "tailor_model_healthy{model=\"gpt-4o\"}"), 1.0);
    assert_eq!(tokens(&m, "default", "output"), 12.0 * n);
}

#[tokio::test]
async fn a_hang_up_is_billed_by_estimate_in_every_format() {
    let dir = temp_dir("hangup");
    let env = setup(&dir).await;
    for f in &formats() {
        let f = f.as_str();
        let before = parse_metrics(&env.metrics().await);
        let req = Request::post(format!(
            "http://{}/v1/chat/completions",
            env.tailor.api_addr
        ))
        .header("x-mock-format", f)
        .header("x-mock-words", "200")
        .header("x-mock-chunk-delay-ms", "10")
        .body(Full::new(Bytes::from(chat("gpt-4o", true, ""))))
        .unwrap();
        let mut body = env.client.request(req).await.unwrap().into_body();
        let mut seen = 0;
        while seen < 8 {
            if let Some(Ok(frame)) = body.frame().await {
                seen += usize::from(frame.is_data());
            }
        }
        drop(body);
        let t = Instant::now();
        let out = loop {
            let m = parse_metrics(&env.metrics().await);
            let est = metric(
                &m,
                "tailor_estimated_tokens_total{model=\"gpt-4o\",route=\"default\",type=\"output\"}",
            ) - metric(
                &before,
                "tailor_estimated_tokens_total{model=\"gpt-4o\",route=\"default\",type=\"output\"}",
            );
            if est > 0.0 || t.elapsed() > Duration::from_secs(3) {
                assert!(metric(&m, "tailor_estimated_cost_usd_total{client=\"anonymous\",model=\"gpt-4o\",route=\"default\"}") > 0.0);
                break est;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // a few words were streamed (each ~6 bytes): some output was billed, far less than 200 words
        assert!(
            out > 0.0 && out < 200.0,
            "{f}: estimated {out} output tokens"
        );
    }
}

#[tokio::test]
async fn shadow_pairs_compare_the_real_texts_in_every_format() {
    let dir = temp_dir("shadow");
    let env = setup(&dir).await;
    for f in &formats() {
        let f = f.as_str();
        for (model, stream) in [
            ("same", false),
            ("same", true),
            ("other", false),
            ("other", true),
        ] {
            let r = env
                .chat(&chat(model, stream, ""), &[("x-mock-format", f)])
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    let n = 2.0 * formats().len() as f64;
    let t = Instant::now();
    loop {
        let m = parse_metrics(&env.metrics().await);
        let cmp = |route: &str, model: &str, result: &str| {
            metric(&m, &format!("tailor_shadow_comparisons_total{{model=\"{model}\",result=\"{result}\",route=\"{route}\"}}"))
        };
        let done = cmp("same", "gpt-4o-twin", "agree") + cmp("other", "mini", "differ");
        if done == 2.0 * n || t.elapsed() > Duration::from_secs(5) {
            // the same upstream model says the same; another model says something else (an
            // unread text would make both "agree")
            assert_eq!(cmp("same", "gpt-4o-twin", "agree"), n, "{m:?}");
            assert_eq!(cmp("other", "mini", "differ"), n);
            assert_eq!(cmp("other", "mini", "agree"), 0.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn captured_examples_equal_what_the_client_read_in_every_format() {
    let dir = temp_dir("capture");
    let env = setup(&dir).await;
    let mut said = Vec::new();
    for f in &formats() {
        let f = f.as_str();
        for stream in [false, true] {
            let r = env
                .chat(&chat("captured", stream, ""), &[("x-mock-format", f)])
                .await;
            assert_eq!(r.status, StatusCode::OK);
            said.push(if stream {
                streamed_text(&r.text())
            } else {
                r.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            });
        }
    }
    let path = dir.join("formats.jsonl");
    let t = Instant::now();
    let lines = loop {
        let l: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if l.len() >= said.len() || t.elapsed() > Duration::from_secs(5) {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), said.len());
    for (line, text) in lines.iter().zip(&said) {
        let messages = line["messages"].as_array().unwrap();
        assert_eq!(
            messages.last().unwrap()["content"].as_str(),
            Some(text.as_str())
        );
    }
}
