//! Streaming load client for `benches/load.sh` (scenarios 3 and 4). wrk and oha time whole
//! responses; these scenarios need the arrival time of every SSE event, so this client speaks
//! HTTP/1.1 through hyper's connection API (one connection per worker, like an SDK's pool) and
//! prints one JSON line per run.
//!
//! ```text
//! cargo bench --bench streams -- paced URL WORKERS SECONDS
//!     64-chunk streams paced 20 ms apart, WORKERS at a time for SECONDS: time to first token and
//!     gaps between chunks (p50/p99), streams with a lost chunk
//! cargo bench --bench streams -- hold URL STREAMS PID
//!     STREAMS streams opened at once and held open (64 chunks, 150 ms apart); once every one has
//!     its first chunk, PID's RSS is read; afterwards every stream is checked for all 64 chunks
//! ```
//! URL is the base (`http://127.0.0.1:PORT`); requests go to `/v1/chat/completions`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark may fail loudly

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

const WORDS: usize = 64;
const BODY: &str = r#"{"model":"gpt-4o","user":"cust-7","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Tell me a story."}]}"#;

/// What one stream delivered.
struct Outcome {
    /// Request sent to first content delta.
    ttft: Duration,
    /// Request sent to the first event of any kind (the role chunk).
    first_event: Duration,
    /// Between consecutive content deltas.
    gaps: Vec<Duration>,
    content_chunks: usize,
    done: bool,
}

async fn connect(host: &str) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (send, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

/// Sends one streaming chat request on `send` and reads it to the end, stamping every SSE event
/// with the arrival time of the read that completed it. `first` is called at the first event.
async fn one_stream(
    send: &mut SendRequest<Full<Bytes>>,
    host: &str,
    delay_ms: u64,
    first: impl FnOnce(),
) -> Outcome {
    send.ready().await.expect("connection ready");
    let req = http::Request::post("/v1/chat/completions")
        .header("host", host)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .header("x-team", "a") // tailor: the team-a route (model `mini`), metered apart
        .header("x-mock-words", WORDS.to_string())
        .header("x-mock-chunk-delay-ms", delay_ms.to_string())
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("request");
    let start = Instant::now();
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200, "stream answered {}", resp.status());
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Outcome {
        ttft: Duration::ZERO,
        first_event: Duration::ZERO,
        gaps: Vec::new(),
        content_chunks: 0,
        done: false,
    };
    let mut last: Option<Instant> = None;
    let mut first = Some(first);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        buf.extend_from_slice(data);
        while let Some(end) = memchr::memmem::find(&buf, b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            if let Some(f) = first.take() {
                out.first_event = now - start;
                f();
            }
            if event.starts_with(b"data: [DONE]") {
                out.done = true;
            } else if let Some(i) = memchr::memmem::find(&event, br#""content":""#) {
                if event.get(i + 11) != Some(&b'"') {
                    out.content_chunks += 1;
                    match last {
                        None => out.ttft = now - start,
                        Some(l) => out.gaps.push(now - l),
                    }
                    last = Some(now);
                }
            }
        }
    }
    out
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e6
}

fn rss_kib(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("pid status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn paced(host: String, workers: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    // a stream lasts about 63 x 20 ms; workers start evenly spread over that time (and so stay
    // spread), like independent users, rather than all asking at the same instant
    let spread = Duration::from_millis(63 * 20) / workers as u32;
    for k in 0..workers {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = connect(&host).await;
            tokio::time::sleep(spread * k as u32).await;
            let mut got = Vec::new();
            while Instant::now() < deadline {
                got.push(one_stream(&mut send, &host, 20, || ()).await);
            }
            got
        }));
    }
    let (mut ttft, mut gaps, mut streams, mut lost) = (Vec::new(), Vec::new(), 0, 0);
    let mut first_event = Vec::new();
    for t in tasks {
        for o in t.await.expect("worker") {
            streams += 1;
            lost += usize::from(o.content_chunks != WORDS || !o.done);
            ttft.push(o.ttft);
            first_event.push(o.first_event);
            gaps.extend(o.gaps);
        }
    }
    println!(
        r#"{{"streams":{streams},"lost":{lost},"first_event_p50_us":{:.0},"ttft_p50_us":{:.0},"ttft_p99_us":{:.0},"gap_p50_us":{:.0},"gap_p99_us":{:.0}}}"#,
        pct(&mut first_event, 0.5),
        pct(&mut ttft, 0.5),
        pct(&mut ttft, 0.99),
        pct(&mut gaps, 0.5),
        pct(&mut gaps, 0.99)
    );
}

async fn hold(host: String, streams: usize, pid: String) {
    let before = rss_kib(&pid);
    let opened = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(tokio::sync::Notify::new());
    // connect in waves so the listen backlog never overflows (a dropped SYN costs a 1 s retry)
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (host, opened, finished, all_open, gate) = (
            host.clone(),
            opened.clone(),
            finished.clone(),
            all_open.clone(),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let mut send = connect(&host).await;
            let mut permit = Some(permit);
            let o = one_stream(&mut send, &host, 150, || {
                drop(permit.take());
                if opened.fetch_add(1, Ordering::SeqCst) + 1 == streams {
                    all_open.notify_one();
                }
            })
            .await;
            finished.fetch_add(1, Ordering::SeqCst);
            o
        }));
    }
    let t0 = Instant::now();
    all_open.notified().await;
    let open_after = t0.elapsed();
    let during = rss_kib(&pid);
    let finished_early = finished.load(Ordering::SeqCst);
    let mut lost = 0;
    for t in tasks {
        let o = t.await.expect("stream");
        lost += usize::from(o.content_chunks != WORDS || !o.done);
    }
    println!(
        r#"{{"streams":{streams},"lost":{lost},"finished_before_all_open":{finished_early},"open_secs":{:.2},"rss_before_kib":{before},"rss_open_kib":{during},"kib_per_stream":{:.1}}}"#,
        open_after.as_secs_f64(),
        (during.saturating_sub(before)) as f64 / streams as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let host = |u: &str| {
        u.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["paced", url, workers, secs] => rt.block_on(paced(
            host(url),
            workers.parse().expect("workers"),
            secs.parse().expect("secs"),
        )),
        ["hold", url, streams, pid] => rt.block_on(hold(
            host(url),
            streams.parse().expect("streams"),
            pid.to_owned(),
        )),
        _ => eprintln!(
            "streams: run by benches/load.sh (paced URL WORKERS SECONDS | hold URL STREAMS PID)"
        ),
    }
}
