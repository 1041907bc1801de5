//! Criterion micro-benchmarks of tailor's hot path: classifying a request against 50 routes
//! (regex rules included), rewriting `model` in 1 KB and 200 KB bodies, scanning a 64-chunk SSE
//! stream for usage, and recording one request's metrics.
//!
//! `cargo bench --bench hot_path`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark setup may fail loudly

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use tailor::classify::classify;
use tailor::config::Config;
use tailor::metrics::Metrics;
use tailor::request::{Endpoint, RequestView};
use tailor::usage::sse::SseScanner;
use tailor::usage::Usage;

/// 49 routes that do not match the benchmark request (each with a different kind of condition,
/// regexes included), then the A/B route that does.
fn fifty_routes() -> Config {
    let mut y = String::from(
        "upstreams:\n  u: { url: \"http://127.0.0.1:1/v1\" }\nmodels:\n  gpt-4o: { upstream: u, id: gpt-4o-2024-08-06 }\n  ft: { upstream: u, id: \"ft:gpt-4o-2024-08-06:acme:x:1\" }\nroutes:\n",
    );
    for i in 0..49 {
        let cond = match i % 7 {
            0 => format!("model: [m{i}, n{i}]"),
            1 => format!("headers: {{ x-team: team{i} }}"),
            2 => format!("user: \"^vip-{i}-\""),
            3 => format!("metadata: {{ feature: f{i} }}"),
            4 => format!("system: \"(?i)acme product {i}\""),
            5 => format!("content: \"(?i)refund{i}|warranty{i}\""),
            _ => format!("prompt_tokens: {{ min: {} }}", 100_000 + i),
        };
        y.push_str(&format!(
            "  - {{ name: r{i}, match: {{ {cond} }}, split: [{{ model: gpt-4o }}] }}\n"
        ));
    }
    y.push_str("  - name: ab\n    match: { model: [gpt-4o] }\n    split: [{ model: ft, weight: 90 }, { model: gpt-4o, weight: 10 }]\n    sticky: user\n");
    Config::from_yaml(&y, &|_| None).unwrap()
}

/// A chat body of about `size` bytes.
fn chat_body(size: usize) -> Vec<u8> {
    let filler = "lorem ipsum dolor sit amet ".repeat(size / 27 + 1);
    format!(
        r#"{{"model":"gpt-4o","user":"cust-42","temperature":0.2,"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{}"}}],"metadata":{{"feature":"chat"}}}}"#,
        &filler[..size.saturating_sub(200)]
    )
    .into_bytes()
}

fn bench_classify(c: &mut Criterion) {
    let cfg = fifty_routes();
    let body = chat_body(1024);
    let mut headers = HeaderMap::new();
    headers.insert("x-team", HeaderValue::from_static("other"));
    let healthy = |_: usize| true;
    c.bench_function("classify: parse 1 KB + 50 routes (regex rules)", |b| {
        b.iter(|| {
            let view = RequestView::parse(black_box(&body), Endpoint::Chat).unwrap();
            let d = classify(&cfg, &view, &headers, 7, &healthy).unwrap();
            black_box(d.model)
        })
    });
}

fn bench_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("rewrite model");
    for size in [1024usize, 200 * 1024] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                let view = RequestView::parse(black_box(body), Endpoint::Chat).unwrap();
                black_box(view.rewrite("ft:gpt-4o-2024-08-06:acme:x:1", false, None))
            })
        });
    }
    g.finish();
}

fn bench_sse(c: &mut Criterion) {
    let mut chunks: Vec<Bytes> = (0..64)
        .map(|i| Bytes::from(format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n")))
        .collect();
    chunks.push(Bytes::from_static(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":900,\"completion_tokens\":64,\"prompt_tokens_details\":{\"cached_tokens\":512}}}\n\ndata: [DONE]\n\n"));
    let mut g = c.benchmark_group("sse scan 64 chunks");
    for strip in [false, true] {
        g.bench_with_input(
            BenchmarkId::from_parameter(if strip { "strip usage" } else { "pass through" }),
            &strip,
            |b, strip| {
                b.iter(|| {
                    let mut s = SseScanner::new(*strip);
                    for ch in &chunks {
                        black_box(s.feed(ch.clone()));
                    }
                    black_box(s.usage())
                })
            },
        );
    }
    g.finish();
}

/// One 200 KB event arriving in 1,000 or 10,000 reads: the cost must grow with the bytes, not
/// with the square of the reads (each byte searched once, no re-copy of what is pending).
fn bench_sse_tiny_reads(c: &mut Criterion) {
    let text = "x".repeat(200 * 1024);
    let event = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n");
    let mut g = c.benchmark_group("sse one 200 KB event");
    g.throughput(Throughput::Bytes(event.len() as u64));
    for reads in [1_000usize, 10_000] {
        let size = event.len().div_ceil(reads);
        let pieces: Vec<Bytes> = event
            .as_bytes()
            .chunks(size)
            .map(Bytes::copy_from_slice)
            .collect();
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{reads} reads")),
            &pieces,
            |b, pieces| {
                b.iter(|| {
                    let mut s = SseScanner::new(true);
                    for p in pieces {
                        black_box(s.feed(p.clone()));
                    }
                    black_box(s.text_bytes())
                })
            },
        );
    }
    g.finish();
}

fn bench_metrics(c: &mut Criterion) {
    let m = Metrics::new().unwrap();
    let meter = m.meter("support", "support-ft", "anonymous");
    let u = Usage {
        input: 1200,
        cached: 512,
        output: 300,
        reasoning: 0,
    };
    c.bench_function("record one request's metrics", |b| {
        b.iter(|| {
            meter.record_usage(black_box(&u), 4_125_000_000);
            meter.record_request("chat", http::StatusCode::OK, "ok");
            meter.duration.observe(0.42);
        })
    });
}

criterion_group!(
    benches,
    bench_classify,
    bench_rewrite,
    bench_sse,
    bench_sse_tiny_reads,
    bench_metrics
);
criterion_main!(benches);
