//! Soak: concurrent clients for a bounded time (TAILOR_SOAK_SECS, default 90) on loopback, some
//! hanging up mid-stream, while the upstream misbehaves and the config is reloaded (valid and
//! invalid) every 300 ms. Every request must end in a complete response or an OpenAI-shaped
//! error; `/metrics` must count exactly the requests the clients made; nothing may panic; memory
//! must come back near its baseline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{parse_metrics, setup_with};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Checks a finished answer: 2xx is complete (JSON with usage, or SSE ending in [DONE] or an
/// error event); anything else is an OpenAI-shaped error.
fn check(status: StatusCode, ctype: &str, body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    if status.is_success() && ctype.starts_with("text/event-stream") {
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or("");
        let ok = last == "data: [DONE]"
            || last
                .strip_prefix("data: ")
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .is_some_and(|v| v["error"]["message"].is_string());
        return if ok {
            Ok(())
        } else {
            Err(format!("stream ended with {last:?}"))
        };
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("{status}: not JSON ({e}): {text}"))?;
    if status.is_success() {
        return if v["usage"].is_object() {
            Ok(())
        } else {
            Err(format!("no usage: {text}"))
        };
    }
    let e = v["error"]
        .as_object()
        .ok_or(format!("{status}: not an error object: {text}"))?;
    if ["message", "type", "param", "code"]
        .iter()
        .all(|k| e.contains_key(*k))
    {
        Ok(())
    } else {
        Err(format!("{status}: error without the four keys: {text}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let secs: u64 = std::env::var("TAILOR_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    // the simulator records nothing, so memory is tailor's (and the test clients')
    let env = Arc::new(setup_with("faults.yaml", false).await);
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/faults.yaml"
    ))
    .unwrap()
    .replace("MOCK_URL", &format!("http://{}", env.mock.addr));
    let dir = std::env::temp_dir().join(format!("tailor-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");

    let made = Arc::new(AtomicU64::new(0));
    let hung_up = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(secs);

    // warm-up, then the memory baseline
    for _ in 0..50 {
        env.chat(
            r#"{"model":"plain","messages":[{"role":"user","content":"warm"}]}"#,
            &[],
        )
        .await;
    }
    made.fetch_add(50, Ordering::Relaxed);
    // the tokenizer tables (tens of MiB, loaded once on a background thread after start) belong
    // in the baseline: this test looks for growth over time, not for fixed tables
    for e in [
        tailor::tokens::Encoding::O200kBase,
        tailor::tokens::Encoding::Cl100kBase,
    ] {
        e.load();
    }
    let baseline = rss_kib();

    let reloader = {
        let (env, path, base) = (env.clone(), path.clone(), base.clone());
        tokio::spawn(async move {
            let adjust: tailor::reload::Adjust = Arc::new(|_| {});
            let envf = |k: &str| (k == "TAILOR_TEST_KEY").then(|| common::UPSTREAM_KEY.to_owned());
            let mut i = 0u64;
            while Instant::now() < deadline {
                let text = match i % 3 {
                    0 => base.replace("weight: 50", "weight: 30"),
                    1 => base.replace("weight: 50", "wieght: 50"), // invalid: rejected, old config serves
                    _ => base.clone(),
                };
                std::fs::write(&path, text).unwrap();
                tailor::reload::reload_now(&path, &env.tailor.shared, &adjust, &envf);
                i += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            i
        })
    };

    let mut tasks = Vec::new();
    for worker in 0..24u64 {
        let (env, made, hung_up, failures) =
            (env.clone(), made.clone(), hung_up.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while Instant::now() < deadline {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let pick = (n >> 33) % 8;
                let stream = pick % 2 == 1;
                let (model, headers): (&str, Vec<(&str, String)>) = match pick {
                    0 | 1 => ("plain", vec![]),
                    2 => ("plain", vec![("x-mock-fail-first", "1".into()), ("x-mock-fail-key", format!("k{n}"))]),
                    3 => ("plain", vec![("x-mock-fail-after", "2".into())]),
                    4 => ("fb", vec![("x-mock-status", "503".into())]),
                    5 => ("health-ab", vec![("x-mock-words", "30".into()), ("x-mock-chunk-delay-ms", "2".into())]),
                    6 => ("nope", vec![]),
                    _ => ("limited", vec![("x-mock-words", "40".into()), ("x-mock-chunk-delay-ms", "3".into())]),
                };
                let body = format!(r#"{{"model":"{model}","stream":{stream},"user":"u{}","messages":[{{"role":"user","content":"soak"}}]}}"#, n % 97);
                let mut req = Request::post(format!("http://{}/v1/chat/completions", env.tailor.api_addr));
                for (k, v) in &headers {
                    req = req.header(*k, v.as_str());
                }
                made.fetch_add(1, Ordering::Relaxed);
                let resp = env.client.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
                let status = resp.status();
                let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut b = resp.into_body();
                if stream && status.is_success() && (n >> 40) % 4 == 0 {
                    // hang up after a couple of frames
                    let _ = b.frame().await;
                    let _ = b.frame().await;
                    hung_up.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let bytes = b.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                if let Err(e) = check(status, &ctype, &bytes) {
                    failures.lock().unwrap().push(e);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client task panicked");
    }
    let reloads = reloader.await.unwrap();
    // let hang-ups and drops settle
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} bad answers, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let m = parse_metrics(&env.metrics().await);
    let sum = |prefix: &str| {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    let counted = sum("tailor_requests_total{")
        + sum("tailor_unrouted_requests_total")
        + sum("tailor_rejected_requests_total{");
    let made = made.load(Ordering::Relaxed);
    assert_eq!(
        counted as u64, made,
        "every request the clients made is in /metrics exactly once"
    );
    assert_eq!(sum("tailor_in_flight_requests{"), 0.0);
    assert!(
        sum("tailor_config_reloads_total{result=\"error\"") >= 1.0
            && sum("tailor_config_reloads_total{result=\"ok\"") >= 1.0
    );
    let after = rss_kib();
    let grew = after.saturating_sub(baseline);
    println!("soak: {secs}s, {made} requests ({} hung up), {reloads} reloads, RSS {baseline} KiB -> {after} KiB (+{grew} KiB)", hung_up.load(Ordering::Relaxed));
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
