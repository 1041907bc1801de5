//! Capture: production answers written as a fine-tuning dataset (tests/fixtures/capture.yaml).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{metric, parse_metrics, setup_edited};
use serde_json::{json, Value};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailor-capture-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn setup(dir: &Path) -> common::Env {
    let d = dir.display().to_string();
    setup_edited("capture.yaml", false, &move |t| {
        t.replace("CAPTURE_DIR", &d)
    })
    .await
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn or bad line ({e}): {l}")))
        .collect()
}

/// Waits until `path` has `n` lines (the writer runs on its own thread).
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let l = lines(path);
        if l.len() >= n || t.elapsed() > Duration::from_secs(5) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dataset_check(path: &Path) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(["dataset", "check", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// The assistant message a client got: from a JSON completion, or reassembled from its stream.
fn client_answer(r: &common::Resp) -> Value {
    if r.header("content-type").starts_with("text/event-stream") {
        let mut content = String::new();
        let (mut args, mut name, mut id) = (String::new(), String::new(), String::new());
        for ev in r.text().split("\n\n") {
            let Some(d) = ev.strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(d) else {
                continue;
            };
            let delta = &v["choices"][0]["delta"];
            content.push_str(delta["content"].as_str().unwrap_or(""));
            if let Some(tc) = delta["tool_calls"].get(0) {
                args.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
                name.push_str(tc["function"]["name"].as_str().unwrap_or(""));
                id.push_str(tc["id"].as_str().unwrap_or(""));
            }
        }
        if id.is_empty() {
            json!({"role": "assistant", "content": content})
        } else {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]})
        }
    } else {
        let m = &r.json()["choices"][0]["message"];
        let mut out = json!({"role": "assistant", "content": m["content"]});
        if m.get("tool_calls").is_some_and(|t| !t.is_null()) {
            out["tool_calls"] = m["tool_calls"].clone();
        }
        out
    }
}

#[tokio::test]
async fn captured_lines_are_valid_and_match_what_the_client_received() {
    let dir = temp_dir("match");
    let env = setup(&dir).await;
    let tools = json!([{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]);
    let mut sent = Vec::new();
    for (i, stream, with_tools) in [
        (0, false, false),
        (1, true, false),
        (2, false, true),
        (3, true, true),
        (4, false, false),
        (5, true, false),
    ] {
        let mut body = json!({"model": "support", "stream": stream, "messages": [
            {"role": "system", "content": "You are ACME support."},
            {"role": "user", "content": format!("question {i}: mail me at jane.doe@example.com, card 4111-1111-1111-1111")}]});
        if with_tools {
            body["tools"] = tools.clone();
        }
        let r = env.chat(&body.to_string(), &[("x-mock-words", "7")]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        sent.push((body, client_answer(&r)));
    }
    // one cut at max_tokens (finish_reason length) and one failure: neither is captured
    let r = env
        .chat(
            r#"{"model":"support","messages":[{"role":"user","content":"long"}],"max_tokens":3}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = env
        .chat(
            r#"{"model":"support","messages":[{"role":"user","content":"fail"}]}"#,
            &[("x-mock-status", "500")],
        )
        .await;
    assert_eq!(r.status, 500);

    let path = dir.join("support.jsonl");
    let got = wait_lines(&path, sent.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_now = lines(&path);
    assert_eq!(
        got_now.len(),
        sent.len(),
        "exactly the successful, complete answers: {got_now:?}"
    );
    for (line, (body, answer)) in got.iter().zip(&sent) {
        let msgs = line["messages"].as_array().unwrap();
        // the request's messages, redacted, then what the client received
        assert_eq!(msgs[0], body["messages"][0]);
        let user = msgs[1]["content"].as_str().unwrap();
        assert!(
            user.contains("[REDACTED]") && !user.contains("jane.doe") && !user.contains("4111"),
            "{user}"
        );
        assert_eq!(
            msgs.last().unwrap(),
            answer,
            "captured answer differs from the client's"
        );
        assert_eq!(line.get("tools"), body.get("tools"));
    }
    assert!(got.iter().any(|l| l["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .get("tool_calls")
        .is_some()));
    let meta = lines(&dir.join("support.meta.jsonl"));
    assert_eq!(meta.len(), sent.len());
    assert_eq!(meta[0]["route"], "support");
    assert_eq!(meta[0]["model"], "gpt-4o");
    assert!(meta[0]["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(meta[0]["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(meta[0]["request"]["headers"].get("authorization").is_none());
    let (ok, out) = dataset_check(&path);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{} valid examples, 0 invalid lines", sent.len())),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sampling_holds_only_model_filters_and_rotation_keeps_lines_whole() {
    let dir = temp_dir("sample");
    let env = setup(&dir).await;
    let n = 2000;
    let mut ab_gpt4o = 0;
    let ask = |model: &'static str, i: usize| {
        let body = format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"{model}{i}"}}]}}"#
        );
        let env = &env;
        async move {
            let r = env.chat(&body, &[("x-mock-words", "2")]).await;
            assert_eq!(r.status, 200);
            r
        }
    };
    for i in 0..n {
        ask("sampled", i).await;
        if i < 200 {
            ab_gpt4o += usize::from(ask("ab", i).await.header("x-tailor-model") == "gpt-4o");
        }
        if i < 60 {
            ask("rotating", i).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 20 % of 2,000: 400, sd ~17.9; within 4.5 sd
    let sampled = lines(&dir.join("sampled.jsonl")).len();
    assert!((320..=480).contains(&sampled), "sampled {sampled} of {n}");
    assert_eq!(lines(&dir.join("sampled.meta.jsonl")).len(), sampled);
    // only the gpt-4o arm's answers
    let ab = lines(&dir.join("ab.meta.jsonl"));
    assert_eq!(ab.len(), ab_gpt4o);
    assert!(ab.iter().all(|m| m["model"] == "gpt-4o"));
    // rotation: every file within the limit (one line may exceed it alone), all lines whole,
    // data and metadata rotated together
    let mut total = 0;
    for i in 0.. {
        let (data, meta) = if i == 0 {
            (dir.join("rot.jsonl"), dir.join("rot.meta.jsonl"))
        } else {
            (
                dir.join(format!("rot.{i}.jsonl")),
                dir.join(format!("rot.{i}.meta.jsonl")),
            )
        };
        if !data.exists() {
            assert!(i >= 2, "expected rotated files");
            break;
        }
        let d = lines(&data);
        assert_eq!(d.len(), lines(&meta).len(), "{}", data.display());
        assert!(std::fs::metadata(&data).unwrap().len() <= 3000 || d.len() == 1);
        total += d.len();
    }
    assert_eq!(total, 60);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_slowing_requests() {
    let dir = temp_dir("full");
    // the capture file is a FIFO nobody reads: the writer blocks once the pipe is full, its queue
    // (1,024 jobs) fills, and further samples must be dropped at once
    let fifo = dir.join("support.jsonl");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let env = setup(&dir).await;
    let body = r#"{"model":"support","messages":[{"role":"user","content":"fill"}]}"#;
    let mut lat = Vec::new();
    for _ in 0..1600 {
        let t = Instant::now();
        let r = env.chat(body, &[("x-mock-words", "200")]).await;
        lat.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let m = parse_metrics(&env.metrics().await);
    let dropped = metric(&m, r#"tailor_capture_dropped_total{route="support"}"#);
    assert!(dropped > 100.0, "dropped {dropped}");
    // the last 400 requests (queue full, samples dropped) against the first 100 (writer still
    // writing): no waiting on the writer
    let pct = |v: &[Duration], q: f64| {
        let mut v = v.to_vec();
        v.sort();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    };
    let (early, full) = (&lat[..100], &lat[lat.len() - 400..]);
    let (e50, f50, f99) = (pct(early, 0.5), pct(full, 0.5), pct(full, 0.99));
    eprintln!("capture queue full: {dropped} dropped; p50 first 100 {e50:?}, p50 / p99 last 400 {f50:?} / {f99:?}");
    assert!(
        f50 < e50 * 3 + Duration::from_millis(1),
        "p50 {f50:?} vs {e50:?}"
    );
    assert!(f99 < Duration::from_millis(50), "p99 {f99:?}");
    // unblock the writer so the process can end: read the pipe dry
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(fifo).unwrap();
        let _ = std::io::copy(&mut f, &mut std::io::sink());
    });
    drop(env);
    drop(reader);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn kill_9_during_capture_leaves_no_torn_line_and_aligned_files_after_restart() {
    let dir = temp_dir("kill");
    let mock = tailor::mock::start("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/capture.yaml"
    ))
    .unwrap()
    .replace("MOCK_URL", &format!("http://{}", mock.addr))
    .replace("CAPTURE_DIR", dir.to_str().unwrap());
    let cfg = dir.join("routes.yaml");
    std::fs::write(&cfg, text).unwrap();
    let args = [
        "--no-access-log",
        "serve",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let envs = [("TAILOR_TEST_KEY", "sk-test")];
    let mut first = common::spawn_tailor(&args, &envs, &dir.join("first.err"));
    // load from 8 tasks, then kill -9 in the middle of it
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let load: Vec<_> = (0..8)
        .map(|task| {
            let (client, url) = (client.clone(), format!("{}/v1/chat/completions", first.api));
            tokio::spawn(async move {
                for n in 0.. {
                    // each request says who it is, in its message and in a header (the metadata line)
                    let seq = format!("{task}-{n}");
                    let req = http::Request::post(&url)
                        .header("content-type", "application/json")
                        .header("x-seq", &seq)
                        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                            r#"{{"model":"support","messages":[{{"role":"user","content":"k-{seq}"}}]}}"#
                        ))))
                        .unwrap();
                    match client.request(req).await {
                        Ok(r) => {
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        }
                        Err(_) => return, // tailor is gone
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    let _ = first.child.wait();
    for t in load {
        let _ = t.await;
    }
    let path = dir.join("support.jsonl");
    let before = std::fs::read_to_string(&path).unwrap();
    assert!(
        before.lines().count() > 10,
        "the load produced too few lines"
    );
    // add the worst cases to whatever the kill left: a crash after an example's line but before
    // its metadata line (unless the kill itself landed there: one crash leaves at most one), then
    // half a line
    let meta_path = dir.join("support.meta.jsonl");
    let meta_before = std::fs::read_to_string(&meta_path).unwrap();
    let whole = |t: &str| t.matches('\n').count();
    let orphan: &[u8] = if whole(&before) == whole(&meta_before) {
        b"{\"messages\":[{\"role\":\"user\",\"content\":\"k-orphan\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n"
    } else {
        b""
    };
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, orphan)?;
            std::io::Write::write_all(&mut f, b"{\"messages\":[{\"role\":\"user\",\"con")
        })
        .unwrap();
    let mut second = common::spawn_tailor(&args, &envs, &dir.join("second.err"));
    // the writer repairs the files as it starts, before any request
    let t = Instant::now();
    let (text, meta) = loop {
        let t2 = std::fs::read_to_string(&path).unwrap();
        let m2 = std::fs::read_to_string(&meta_path).unwrap();
        let aligned = t2.lines().count() == m2.lines().count();
        if (t2.ends_with('\n') && aligned) || t.elapsed() > Duration::from_secs(5) {
            break (t2, m2);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.ends_with('\n') && meta.ends_with('\n'),
        "torn tail left in place"
    );
    assert_eq!(
        text.lines().count(),
        meta.lines().count(),
        "files out of step"
    );
    // line N of each file is the same request
    for (l, m) in text.lines().zip(meta.lines()) {
        let l: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line ({e}): {l}"));
        let m: Value =
            serde_json::from_str(m).unwrap_or_else(|e| panic!("torn meta line ({e}): {m}"));
        let seq = m["request"]["headers"]["x-seq"].as_str().unwrap();
        assert_eq!(l["messages"][0]["content"], format!("k-{seq}"));
    }
    let (ok, out) = dataset_check(&path);
    assert!(ok, "{out}");
    let _ = second.child.kill();
    let _ = second.child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn simulate_replays_recorded_traffic_like_a_hand_computation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let simulate = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tailor"))
            .args([
                "simulate",
                "--config",
                &format!("{dir}/simulate-candidate.yaml"),
            ])
            .args(["--traffic", &format!("{dir}/simulate/support.meta.jsonl")])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = simulate(&["--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    // by hand: prices in USD per 1M tokens (input, cached, output)
    let (gpt4o, ft, mini) = ((2.5, 1.25, 10.0), (3.75, 1.875, 15.0), (0.15, 0.075, 0.6));
    let cost = |inp: f64, cached: f64, out: f64, p: (f64, f64, f64)| {
        ((inp - cached) * p.0 + cached * p.1 + out * p.2) / 1e6
    };
    // the candidate's support arm adds prompts/short.md as a system message, in o200k_base (the
    // ft model is a gpt-4o fine-tune): 3 + "system" 1 + "Answer in one sentence. Be kind always." 9
    let short = std::fs::read_to_string(format!("{dir}/prompts/short.md")).unwrap();
    let counted = tailor::tokens::chat::system_prompt_tokens(
        tailor::tokens::Encoding::O200kBase,
        short.trim_end(),
    );
    assert_eq!(counted, 13);
    let short = counted as f64;
    // line 1: support, cust-1 -> ft, +13 prompt tokens; line 2: user vip-7 -> vip (gpt-4o);
    // line 3: model gpt-4o, recorded with a 300-token arm prompt -> rest (mini), without it;
    // line 4: support -> ft, +13
    let ft_cost = cost(100.0 + short, 0.0, 50.0, ft) + cost(1500.0 + short, 1024.0, 80.0, ft);
    let vip_cost = cost(2000.0, 1024.0, 100.0, gpt4o);
    let rest_cost = cost(400.0 - 300.0, 0.0, 20.0, mini);
    let per_day = 86_400.0 / 10_800.0; // four requests over three hours
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
    assert_eq!(p["requests"], 4);
    assert!(close(&p["span_seconds"], 10_800.0));
    let arm = |route: &str| {
        p["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["route"] == route)
            .unwrap()
            .clone()
    };
    for (route, model, n, c, inp) in [
        ("support", "ft", 2, ft_cost, 100 + 1500 + 26),
        ("vip", "gpt-4o", 1, vip_cost, 2000),
        ("rest", "mini", 1, rest_cost, 100),
    ] {
        let a = arm(route);
        assert_eq!(a["model"], model);
        assert_eq!(a["requests"], n);
        assert!(close(&a["share"], f64::from(n) / 4.0));
        assert_eq!(a["input_tokens"], inp, "{route}");
        assert!(close(&a["projected_cost_usd"], c), "{route}: {a} vs {c}");
        assert!(close(&a["projected_usd_per_day"], c * per_day), "{route}");
        assert!(
            close(&a["projected_usd_per_month"], c * per_day * 30.0),
            "{route}"
        );
    }
    let total = ft_cost + vip_cost + rest_cost;
    assert!(close(&p["projected_cost_usd"], total));
    assert!(close(
        &p["actual_cost_usd"],
        0.00075 + 0.005 + 0.0012 + 0.004
    ));
    assert!(close(
        &p["actual_usd_per_day"],
        (0.00075 + 0.005 + 0.0012 + 0.004) * per_day
    ));
    // and as text for a person
    let o = simulate(&[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("4 requests replayed")
            && text.contains("support")
            && text.contains("$/month"),
        "{text}"
    );
}
