//! `passthrough:`: the rest of the OpenAI API through tailor (files, batches, moderations,
//! images), against the simulator: the upstream's key, the path as the only thing the client
//! chooses, bodies streamed both ways with flat memory, the `endpoint` label, usage metered when
//! the model is known.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const PASS: &str = "\npassthrough: { upstream: mock }\n";

/// proxy.yaml with a passthrough and an image model on the simulator.
fn with_passthrough(extra: &'static str) -> impl Fn(String) -> String {
    move |t: String| {
        let t = t.replace(
            "  embed: { upstream: mock, id: text-embedding-3-small }",
            "  embed: { upstream: mock, id: text-embedding-3-small }\n  image: { upstream: mock, id: gpt-image-1, price: { input: 5, output: 40 } }",
        );
        format!("{t}{extra}")
    }
}

const BOUNDARY: &str = "tailor-test-boundary-7MA4YWxkTrZu0gW";

fn multipart(purpose: &str, filename: &str, content: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    write!(
        b,
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
    )
    .unwrap();
    write!(b, "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").unwrap();
    b.extend_from_slice(content);
    write!(b, "\r\n--{BOUNDARY}--\r\n").unwrap();
    b
}

/// POSTs a JSON body.
async fn post_json(env: &Env, path: &str, body: impl Into<Bytes>) -> Resp {
    env.call(
        Method::POST,
        path,
        &[("content-type", "application/json")],
        body,
    )
    .await
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

#[tokio::test]
async fn without_passthrough_other_paths_answer_404() {
    let env = setup_named("proxy.yaml").await;
    for (m, p) in [
        (Method::GET, "/v1/files"),
        (Method::POST, "/v1/moderations"),
    ] {
        let r = env.call(m, p, &[], "{}").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{p}");
        assert_eq!(r.json()["error"]["code"], "unknown_url");
    }
    assert!(
        env.mock.received().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn files_batches_and_moderations_pass_with_the_upstream_key() {
    let env = setup_edited("proxy.yaml", true, &with_passthrough(PASS)).await;
    // upload
    let jsonl = br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}}
{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"there"}]}}
"#;
    let ct = multipart_type();
    let r = env
        .call(
            Method::POST,
            "/v1/files",
            &[
                ("content-type", &ct),
                ("authorization", "Bearer sk-client-own"),
            ],
            multipart("batch", "in.jsonl", jsonl),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-tailor-route"), "passthrough");
    let file = r.json();
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], jsonl.len());
    assert_eq!(file["purpose"], "batch");
    let id = file["id"].as_str().unwrap().to_owned();
    let got = env.mock.received();
    let up = got.last().unwrap();
    assert_eq!(up.path_and_query, "/v1/files");
    assert_eq!(
        up.headers["authorization"],
        format!("Bearer {UPSTREAM_KEY}")
    );
    assert_eq!(
        up.headers["content-length"],
        multipart("batch", "in.jsonl", jsonl).len().to_string()
    );
    // list (with its query), retrieve, content
    let r = env
        .call(Method::GET, "/v1/files?purpose=batch&limit=5", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["data"][0]["id"], id.as_str());
    assert_eq!(
        env.mock.received().last().unwrap().path_and_query,
        "/v1/files?purpose=batch&limit=5"
    );
    let r = env
        .call(Method::GET, &format!("/v1/files/{id}"), &[], "")
        .await;
    assert_eq!(r.json()["filename"], "in.jsonl");
    let r = env
        .call(Method::GET, &format!("/v1/files/{id}/content"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &jsonl[..]);
    // a batch over it
    let body = format!(
        r#"{{"input_file_id":"{id}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#
    );
    let r = post_json(&env, "/v1/batches", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let batch = r.json();
    assert_eq!(batch["status"], "validating");
    let r = env
        .call(
            Method::GET,
            &format!("/v1/batches/{}", batch["id"].as_str().unwrap()),
            &[],
            "",
        )
        .await;
    let done = r.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["request_counts"]["total"], 2);
    let out = done["output_file_id"].as_str().unwrap();
    let r = env
        .call(Method::GET, &format!("/v1/files/{out}/content"), &[], "")
        .await;
    assert_eq!(r.text().lines().count(), 2);
    // moderations
    let r = post_json(
        &env,
        "/v1/moderations",
        r#"{"model": "omni-moderation-latest", "input": ["fine", "violence-test"]}"#,
    )
    .await;
    let v = r.json();
    assert_eq!(v["results"][0]["flagged"], false);
    assert_eq!(v["results"][1]["flagged"], true);
    // delete
    let r = env
        .call(Method::DELETE, &format!("/v1/files/{id}"), &[], "")
        .await;
    assert_eq!(r.json()["deleted"], true);
    let m = parse_metrics(&env.metrics().await);
    let count = |endpoint: &str, code: &str| {
        metric(&m, &format!("tailor_requests_total{{client=\"anonymous\",code=\"{code}\",endpoint=\"{endpoint}\",model=\"\",outcome=\"ok\",route=\"passthrough\"}}"))
    };
    // upload, list, retrieve, content, the batch output's content, delete
    assert_eq!(count("files", "200"), 6.0);
    assert_eq!(count("batches", "200"), 2.0);
    assert_eq!(count("moderations", "200"), 1.0);
    assert_eq!(
        metric(&m, "tailor_in_flight_requests{route=\"passthrough\"}"),
        0.0
    );
}

#[tokio::test]
async fn usage_is_metered_at_the_model_price_when_the_model_is_known() {
    let env = setup_edited("proxy.yaml", true, &with_passthrough(PASS)).await;
    let prompt = "a lighthouse at dawn"; // 20 bytes: 5 input tokens in the simulator
    let r = post_json(
        &env,
        "/v1/images/generations",
        format!(r#"{{"model": "gpt-image-1", "prompt": "{prompt}", "n": 2}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["usage"]["output_tokens"], 544);
    // a model tailor does not know: counted, not priced
    let r = post_json(
        &env,
        "/v1/images/generations",
        format!(r#"{{"model": "dall-e-9", "prompt": "{prompt}"}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // `model` twice: refused before the upstream, which might price the other one
    let r = post_json(
        &env,
        "/v1/images/generations",
        r#"{"model": "dall-e-9", "prompt": "x", "model": "gpt-image-1"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "duplicate_parameter");
    assert_eq!(r.json()["error"]["param"], "model");
    let m = parse_metrics(&env.metrics().await);
    let tok = |model: &str, t: &str| {
        metric(&m, &format!("tailor_tokens_total{{client=\"anonymous\",model=\"{model}\",route=\"passthrough\",type=\"{t}\"}}"))
    };
    assert_eq!(tok("image", "input"), 5.0);
    assert_eq!(tok("image", "output"), 544.0);
    assert_eq!(tok("", "output"), 272.0);
    // 5 x $5/1M + 544 x $40/1M = 0.000025 + 0.02176
    let cost = metric(
        &m,
        "tailor_cost_usd_total{client=\"anonymous\",model=\"image\",route=\"passthrough\"}",
    );
    assert!((cost - 0.021785).abs() < 1e-12, "{cost}");
    assert_eq!(
        metric(
            &m,
            "tailor_cost_usd_total{client=\"anonymous\",model=\"\",route=\"passthrough\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(&m, "tailor_requests_total{client=\"anonymous\",code=\"200\",endpoint=\"images\",model=\"image\",outcome=\"ok\",route=\"passthrough\"}"),
        1.0
    );
}

/// Writes a raw HTTP/1.1 request and reads the status line of the answer.
fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn the_path_is_the_only_thing_the_client_chooses() {
    let env = setup_edited("proxy.yaml", true, &with_passthrough(PASS)).await;
    let addr = env.tailor.api_addr;
    for path in [
        "/v1/files/../../admin",
        "/v1/files/%2e%2e/%2e%2e/metrics",
        "/v1/files/a%2Fb",
        "/v1//169.254.169.254/latest",
        "/v1/files/x@evil.test",
        // a credential for the upstream itself would let the client bypass tailor
        "/v1/realtime/client_secrets",
    ] {
        let answer = tokio::task::spawn_blocking(move || {
            raw(
                addr,
                &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
            )
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(answer.contains("unknown_url"), "{answer}");
    }
    assert!(env.mock.received().is_empty(), "{:?}", env.mock.received());
    // an absolute-form target names another host: only its path is used
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "GET http://169.254.169.254/v1/files HTTP/1.1\r\nhost: 169.254.169.254\r\nconnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = env.mock.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/v1/files");
    assert_ne!(got[0].headers["host"], "169.254.169.254");
}

#[tokio::test]
async fn client_keys_are_enforced_and_passthrough_bodies_have_their_own_limit() {
    // proxy.yaml's server.max_body_bytes is 65536: passthrough bodies have their own limit
    let env = setup_edited(
        "proxy.yaml",
        true,
        &with_passthrough("\npassthrough: { upstream: mock, max_body_bytes: 100000 }\n"),
    )
    .await;
    let ct = multipart_type();
    let r = env
        .call(
            Method::POST,
            "/v1/files",
            &[("content-type", &ct)],
            multipart("batch", "a.jsonl", &[b'x'; 80_000]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let big = multipart("batch", "big.jsonl", &[b'x'; 120_000]);
    let r = env
        .call(
            Method::POST,
            "/v1/files",
            &[("content-type", &ct)],
            big.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    // without a content-length (chunked), the limit holds as the body streams
    let client = Client::builder(TokioExecutor::new()).build_http::<Chunks>();
    let req = Request::post(format!("http://{}/v1/files", env.tailor.api_addr))
        .header("content-type", &ct)
        .body(Chunks::new(big, 8192))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // a JSON body over server.max_body_bytes streams (it is not read for its model)
    let r = post_json(
        &env,
        "/v1/moderations",
        format!(r#"{{"input": "{}"}}"#, "y".repeat(70_000)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let m = parse_metrics(&env.metrics().await);
    assert_eq!(
        metric(&m, "tailor_requests_total{client=\"anonymous\",code=\"413\",endpoint=\"files\",model=\"\",outcome=\"ok\",route=\"passthrough\"}")
            + metric(&m, "tailor_rejected_requests_total{reason=\"body_too_large\"}"),
        2.0,
        "both 413s are counted"
    );

    // with clients: a tailor key is required, and it never reaches the upstream
    let env = setup_edited("security.yaml", true, &|t| format!("{t}{PASS}")).await;
    let r = env.call(Method::GET, "/v1/files", &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let auth = format!("Bearer {CLIENT_B_KEY}");
    let r = env
        .call(Method::GET, "/v1/files", &[("authorization", &auth)], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = env.mock.received();
    assert_eq!(got.len(), 1);
    assert_ne!(got[0].headers["authorization"], auth.as_str());
}

#[tokio::test]
async fn azure_passthrough_uses_its_paths_and_refuses_deployment_ones() {
    let env = setup_edited(
        "proxy.yaml",
        true,
        &with_passthrough("\npassthrough: { upstream: mock-azure }\n"),
    )
    .await;
    let r = env.call(Method::GET, "/v1/files?limit=2", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = env.mock.received();
    assert_eq!(
        got[0].path_and_query,
        "/openai/files?limit=2&api-version=2024-10-21"
    );
    assert_eq!(got[0].headers["api-key"], UPSTREAM_KEY);
    assert!(!got[0].headers.contains_key("authorization"));
    let r = post_json(&env, "/v1/images/generations", "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Azure"));
    // Azure's deployment paths (and its model-in-body /openai/v1 API) would reach chat past
    // routing, limits and metering
    for path in [
        "/v1/deployments/gpt4o-prod/chat/completions",
        "/v1/v1/chat/completions",
    ] {
        let r = post_json(&env, path, r#"{"messages":[]}"#).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(env.mock.received().len(), 1);
}

/// A request body sent in chunks of `size` bytes, with no length announced.
struct Chunks {
    data: Bytes,
    size: usize,
}

impl Chunks {
    fn new(data: Vec<u8>, size: usize) -> Chunks {
        Chunks {
            data: data.into(),
            size,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.size.min(self.data.len());
        let chunk = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A generated multipart upload of `len` content bytes: a repeating pattern, made as it is sent.
struct Upload {
    head: Option<Bytes>,
    left: u64,
    tail: Option<Bytes>,
    chunk: Bytes,
}

impl Body for Upload {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(h) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        if self.left > 0 {
            let n = (self.chunk.len() as u64).min(self.left);
            self.left -= n;
            let c = self.chunk.slice(..n as usize);
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        Poll::Ready(self.tail.take().map(|t| Ok(Frame::data(t))))
    }
}

/// A line of `/proc/{pid}/status` in KiB (`VmHWM`: peak resident memory, `VmRSS`: now).
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Waits until the process's memory stops growing (the tokenizer tables load on a background
/// thread after start: tens of MiB that are not the upload's).
async fn settled(pid: u32) {
    let mut last = 0;
    let mut same = 0;
    for _ in 0..100 {
        let now = status_kib(pid, "VmRSS:");
        same = if now == last { same + 1 } else { 0 };
        if same == 4 {
            return;
        }
        last = now;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Kills the child when the test ends, passed or not (a panic must not leave it running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_500_mb_upload_and_its_download_pass_with_flat_memory() {
    const LEN: u64 = 500 * 1000 * 1000;
    let mock = tailor::mock::start("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tailor-pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("routes.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\nupstreams: {{ up: {{ url: http://{}/v1, api_key_env: TAILOR_TEST_KEY }} }}\nmodels: {{ m: {{ upstream: up, id: gpt-4o }} }}\nroutes: [{{ name: r, split: [{{ model: m }}] }}]\npassthrough: {{ upstream: up }}\n",
            mock.addr
        ),
    )
    .unwrap();
    let tailor = spawn_tailor(
        &[
            "--log-format",
            "json",
            "serve",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[("TAILOR_TEST_KEY", UPSTREAM_KEY)],
        &dir.join("stderr"),
    );
    let pid = tailor.child.id();
    let api = tailor.api.clone();
    let _child = KillOnDrop(tailor.child);
    let client = Client::builder(TokioExecutor::new()).build_http::<Upload>();
    // warm up: one small request, so the baseline includes the runtime and pools
    let head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let upload = |len: u64| Upload {
        head: Some(Bytes::from(head.clone())),
        left: len,
        tail: Some(Bytes::from(tail.clone())),
        chunk: Bytes::from(
            (0..256 * 1024)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
    };
    let send = |len: u64| {
        let total = head.len() as u64 + len + tail.len() as u64;
        Request::post(format!("{api}/v1/files"))
            .header("content-type", multipart_type())
            .header("content-length", total)
            .body(upload(len))
            .unwrap()
    };
    let r = client.request(send(1000)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.into_body().collect().await.unwrap();
    settled(pid).await;
    let before = peak_rss_kib(pid);
    let r = client.request(send(LEN)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let file: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(file["bytes"], LEN);
    let after_upload = peak_rss_kib(pid);
    // download it back, checking every byte against the pattern without keeping it
    let get = Request::get(format!(
        "{api}/v1/files/{}/content",
        file["id"].as_str().unwrap()
    ))
    .body(Upload {
        head: None,
        left: 0,
        tail: None,
        chunk: Bytes::new(),
    })
    .unwrap();
    let resp = client.request(get).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], LEN.to_string().as_str());
    let mut body = resp.into_body();
    let mut at = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            for b in data.iter() {
                assert_eq!(*b, ((at % (256 * 1024)) % 251) as u8, "byte {at}");
                at += 1;
            }
        }
    }
    assert_eq!(at, LEN);
    let after_download = peak_rss_kib(pid);
    eprintln!("tailor peak RSS: {before} KiB before, {after_upload} after the upload, {after_download} after the download");
    assert!(
        after_upload - before < 64 * 1024,
        "upload grew RSS by {} KiB",
        after_upload - before
    );
    assert!(
        after_download - before < 64 * 1024,
        "download grew RSS by {} KiB",
        after_download - before
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_upload_is_counted_as_cancelled_not_as_an_upstream_error() {
    let env = setup_edited("proxy.yaml", true, &with_passthrough(PASS)).await;
    let addr = env.tailor.api_addr;
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = format!("POST /v1/files HTTP/1.1\r\nhost: x\r\ncontent-type: {}\r\ncontent-length: 1000000\r\n\r\n", multipart_type());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&[b'x'; 5000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // dropped: the connection closes with 995,000 bytes unsent
    })
    .await
    .unwrap();
    let mut m = parse_metrics(&env.metrics().await);
    let cancelled = "tailor_requests_total{client=\"anonymous\",code=\"499\",endpoint=\"files\",model=\"\",outcome=\"client_cancelled\",route=\"passthrough\"}";
    for _ in 0..50 {
        if metric(&m, cancelled) == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        m = parse_metrics(&env.metrics().await);
    }
    assert_eq!(
        metric(&m, cancelled),
        1.0,
        "{:?}",
        m.iter()
            .filter(|(k, _)| k.contains("passthrough"))
            .collect::<Vec<_>>()
    );
    let upstream_errors: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("tailor_upstream_errors_total") && k.contains("passthrough"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(upstream_errors, 0.0);
}
