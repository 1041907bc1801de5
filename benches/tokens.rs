//! The tokenizer's cost, to decide where tailor can count exactly: bpe-openai against tiktoken-rs
//! on a realistic 2 KB chat prompt and a 200 KB one (the routing condition `prompt_tokens`), the
//! cookbook's chat count of a request body, the per-event cost of counting a stream's text as it
//! passes ([`StreamText`]), and, printed once before criterion runs, each encoder's load time and
//! resident memory.
//!
//! `cargo bench --bench tokens -- --measurement-time 2 --warm-up-time 1`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark setup may fail loudly

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tailor::request::Endpoint;
use tailor::tokens::chat::request_prompt_tokens;
use tailor::tokens::stream::StreamText;
use tailor::tokens::Encoding;

/// Resident memory in KiB (Linux), 0 elsewhere: anonymous (heap) and file-backed (the binary's
/// pages, where bpe-openai's prebuilt tables live until touched).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// Load time and memory of each encoder, once (a load is one-off by design: it cannot be repeated
/// in one process, both crates keep their encoders in statics).
fn report_loads() {
    let loads: [(&str, fn()); 4] = [
        ("bpe-openai o200k_base", || {
            black_box(bpe_openai::o200k_base());
        }),
        ("bpe-openai cl100k_base", || {
            black_box(bpe_openai::cl100k_base());
        }),
        ("tiktoken-rs o200k_base", || {
            black_box(tiktoken_rs::o200k_base_singleton());
        }),
        ("tiktoken-rs cl100k_base", || {
            black_box(tiktoken_rs::cl100k_base_singleton());
        }),
    ];
    for (name, load) in loads {
        let ((anon, file), t) = (rss_kib(), Instant::now());
        load();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let (anon2, file2) = rss_kib();
        eprintln!(
            "load {name}: {ms:.1} ms, +{} MiB resident heap, +{} MiB resident file pages",
            anon2.saturating_sub(anon) / 1024,
            file2.saturating_sub(file) / 1024
        );
    }
}

/// English chat text with some code, numbers and punctuation, about `size` bytes.
fn prose(size: usize) -> String {
    let para = "Hi! I ordered the Acme X200 blender on 2024-03-14 (order #A-99812) and it stopped \
        working after 3 weeks. The motor makes a grinding noise, then the display shows `E4`. \
        I've tried resetting it as the manual says (hold POWER + PULSE for 10 s), no luck. \
        Can I get a refund or a replacement? Here's the log it printed: {\"err\": 4, \"rpm\": 0, \
        \"temp_c\": 71.5}. Thanks in advance; I'd prefer a replacement if it ships this week.\n";
    para.repeat(size / para.len() + 1)[..size].to_owned()
}

fn chat_body(size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are Acme's support assistant. Be brief and kind."},
            {"role": "user", "content": prose(size.saturating_sub(200))},
        ],
    }))
    .unwrap()
}

fn bench_count(c: &mut Criterion) {
    report_loads();
    let bpe = bpe_openai::o200k_base();
    let tik = tiktoken_rs::o200k_base_singleton();
    let mut g = c.benchmark_group("count_o200k");
    for size in [2 * 1024, 200 * 1024] {
        let text = prose(size);
        assert_eq!(bpe.count(text.as_str()), tik.encode_ordinary(&text).len());
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("bpe-openai", size), &text, |b, t| {
            b.iter(|| bpe.count(black_box(t.as_str())))
        });
        g.bench_with_input(BenchmarkId::new("tiktoken-rs", size), &text, |b, t| {
            b.iter(|| tik.encode_ordinary(black_box(t)).len())
        });
        // what classify pays today: the bytes of the prompt / 4
        g.bench_with_input(BenchmarkId::new("bytes_div_4", size), &text, |b, t| {
            b.iter(|| black_box(t).len().div_ceil(4))
        });
    }
    g.finish();
    // a client can send one 100 KB word: one pre-tokenizer piece, the BPE merge's worst case
    let mut g = c.benchmark_group("count_o200k_one_100k_word");
    g.sample_size(10);
    let word = "ab".repeat(50 * 1024);
    assert_eq!(bpe.count(word.as_str()), tik.encode_ordinary(&word).len());
    g.bench_function("bpe-openai", |b| {
        b.iter(|| bpe.count(black_box(word.as_str())))
    });
    g.bench_function("tiktoken-rs", |b| {
        b.iter(|| tik.encode_ordinary(black_box(&word)).len())
    });
    g.finish();
    let mut g = c.benchmark_group("chat_request_o200k");
    for size in [2 * 1024, 200 * 1024] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| request_prompt_tokens(Encoding::O200kBase, Endpoint::Chat, black_box(body)))
        });
    }
    g.finish();
}

/// One SSE content delta's text at a time (5 bytes, a typical token or two), as the scanner
/// pushes it; per element = per event. 2,000 events (10 KB, one tokenizing flush) and 64 (none: the
/// common case, text only kept).
fn bench_stream(c: &mut Criterion) {
    Encoding::O200kBase.load();
    let text = prose(5 * 2000);
    let deltas: Vec<&str> = text
        .as_bytes()
        .chunks(5)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut g = c.benchmark_group("stream_text_per_event");
    for events in [64, 2000] {
        g.throughput(Throughput::Elements(events as u64));
        g.bench_with_input(BenchmarkId::new("push", events), &events, |b, &n| {
            b.iter(|| {
                let mut s = StreamText::new(Encoding::O200kBase);
                for d in &deltas[..n] {
                    s.push(black_box(d));
                }
                black_box(s.bytes())
            })
        });
        g.bench_with_input(
            BenchmarkId::new("push_then_count", events),
            &events,
            |b, &n| {
                b.iter(|| {
                    let mut s = StreamText::new(Encoding::O200kBase);
                    for d in &deltas[..n] {
                        s.push(black_box(d));
                    }
                    black_box(s.tokens())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_count, bench_stream);
criterion_main!(benches);
