//! tailor's own HTTP/1.1 client (src/forward/h1) against a scripted upstream that writes raw bytes:
//! the framings and spellings real servers use, cut into pieces at random, must read as the same
//! body and the same usage; hostile or broken answers must give the client an OpenAI-shaped error
//! and leave tailor serving; idle connections are reused exactly when the answer allows it, and
//! never once the upstream closed them or answered out of step; an early answer (413) to a large
//! body reaches the client at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{metric, parse_metrics, sse_data};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tailor::config::Config;
use tailor::metrics::Metrics;
use tailor::server::{self, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does with the next request on a connection.
#[derive(Clone)]
struct Script {
    /// The answer's bytes.
    wire: Vec<u8>,
    /// Closes the connection after answering.
    close: bool,
    /// Writes the answer in one write, not in pieces.
    at_once: bool,
}

/// A raw upstream: answers each request with the next script, in pieces of 1 to 40 bytes (up to
/// 4,000 for long answers).
struct Upstream {
    addr: std::net::SocketAddr,
    scripts: Arc<Mutex<Vec<Script>>>,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Request heads received.
    heads: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scripts: Arc<Mutex<Vec<Script>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, a, h) = (scripts.clone(), accepted.clone(), heads.clone());
        tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                tokio::spawn(serve(sock, s.clone(), h.clone(), seed));
            }
        });
        Upstream {
            addr,
            scripts,
            accepted,
            heads,
        }
    }

    fn push(&self, wire: impl Into<Vec<u8>>, close: bool) {
        self.scripts.lock().unwrap().push(Script {
            wire: wire.into(),
            close,
            at_once: false,
        });
    }

    /// Like `push`, the answer written in one piece.
    fn push_at_once(&self, wire: impl Into<Vec<u8>>) {
        self.scripts.lock().unwrap().push(Script {
            wire: wire.into(),
            close: false,
            at_once: true,
        });
    }
}

async fn serve(
    mut sock: TcpStream,
    scripts: Arc<Mutex<Vec<Script>>>,
    heads: Arc<Mutex<Vec<String>>>,
    mut seed: u64,
) {
    sock.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    loop {
        // one request: its head, then content-length bytes
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + len);
        heads.lock().unwrap().push(head);
        let script = {
            let mut s = scripts.lock().unwrap();
            if s.is_empty() {
                return;
            }
            s.remove(0)
        };
        if script.at_once && sock.write_all(&script.wire).await.is_err() {
            return;
        }
        let mut at = if script.at_once { script.wire.len() } else { 0 };
        while at < script.wire.len() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let most = if script.wire.len() > 4096 { 4000 } else { 40 };
            let n = ((seed >> 33) % most + 1) as usize;
            let n = n.min(script.wire.len() - at);
            if sock.write_all(&script.wire[at..at + n]).await.is_err() {
                return;
            }
            at += n;
            if seed.is_multiple_of(4) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if script.close {
            return;
        }
    }
}

struct Env {
    up: Upstream,
    tailor: Running,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

async fn setup() -> Env {
    let up = Upstream::start().await;
    let (tailor, client) = start_tailor(up.addr).await;
    Env { up, tailor, client }
}

/// tailor with one API worker (so one set of idle connections), routing to `upstream`.
async fn start_tailor(
    upstream: std::net::SocketAddr,
) -> (
    Running,
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
) {
    let yaml = format!(
        r#"
server: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0", workers: 1 }}
upstreams:
  raw:
    url: http://{}/v1
    api_key_env: K
    timeouts: {{ connect: 1s, headers: 2s, idle: 2s, total: 5s }}
    retries: {{ max: 0 }}
models:
  m: {{ upstream: raw, id: gpt-4o-2024-08-06 }}
routes: [{{ name: r, split: [{{ model: m }}] }}]
"#,
        upstream
    );
    let config = Config::from_yaml(&yaml, &|_| Some("sk-raw-upstream".into())).unwrap();
    let tailor = server::start(config, Metrics::new().unwrap())
        .await
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    (tailor, client)
}

impl Env {
    async fn chat(&self, stream: bool) -> (StatusCode, Bytes) {
        chat_with(&self.client, &self.tailor, stream, "hi").await
    }

    /// Connections the upstream accepted so far.
    fn accepted(&self) -> usize {
        self.up.accepted.load(Ordering::SeqCst)
    }

    async fn output_tokens(&self) -> f64 {
        let req = Request::get(format!("http://{}/metrics", self.tailor.admin_addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        let m = parse_metrics(&String::from_utf8_lossy(&text));
        metric(
            &m,
            "tailor_tokens_total{client=\"anonymous\",model=\"m\",route=\"r\",type=\"output\"}",
        )
    }
}

/// A chat request to `tailor` whose message is `content`: the status and the whole body.
async fn chat_with(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    tailor: &Running,
    stream: bool,
    content: &str,
) -> (StatusCode, Bytes) {
    let body = format!(
        r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"{content}"}}]}}"#
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/v1/chat/completions", tailor.api_addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, body)
}

/// `JSON` as a plain HTTP/1.1 answer with its length.
fn ok_answer() -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{JSON}",
        JSON.len()
    )
}

const JSON: &str = r#"{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15}}"#;

/// `JSON` chunked in pieces of `size`, the chunk lines spelled as `ext` says.
fn chunked(body: &str, size: usize, ext: &str) -> String {
    let mut out = String::new();
    for piece in body.as_bytes().chunks(size) {
        out.push_str(&format!("{:X}{ext}\r\n", piece.len()));
        out.push_str(std::str::from_utf8(piece).unwrap());
        out.push_str("\r\n");
    }
    out
}

#[tokio::test]
async fn every_framing_and_spelling_reads_as_the_same_body_and_usage() {
    let env = setup().await;
    let len = JSON.len();
    // (answer, the upstream closes after it, tailor keeps the connection for the next request)
    let answers: Vec<(String, bool, bool)> = vec![
        (
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{JSON}"),
            false,
            true,
        ),
        (
            format!("HTTP/1.1 200 OK\r\ncontent-type:application/json\r\nTRANSFER-ENCODING: chunked\r\n\r\n{}0\r\n\r\n", chunked(JSON, 17, "")),
            false,
            true,
        ),
        (
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n{}0;end\r\nx-t: 1\r\n\r\n", chunked(JSON, 5, " ;a=b")),
            false,
            true,
        ),
        // a length beside the coding is not the body's: the client gets the whole body (framed
        // anew), and the connection is not trusted again
        (
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ncontent-length: 10\r\n\r\n{}0\r\n\r\n", chunked(JSON, 17, "")),
            false,
            false,
        ),
        (
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 100000\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", chunked(JSON, 64, "")),
            false,
            false,
        ),
        (
            format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n{JSON}"),
            false,
            true,
        ),
        (
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{JSON}"),
            true,
            false,
        ),
        // the upstream leaves these open, but said it would not keep them: tailor closes them
        (
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nConnection: Close\r\ncontent-length: {len}\r\n\r\n{JSON}"),
            false,
            false,
        ),
        (
            format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n{JSON}"),
            false,
            false,
        ),
        (
            format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\ncontent-length: {len}\r\n\r\n{JSON}"),
            false,
            true,
        ),
        (
            format!("HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-length: {len}\n\n{JSON}"),
            false,
            true,
        ),
    ];
    let mut kept = false;
    for (i, (wire, close, keeps)) in answers.iter().enumerate() {
        env.up.push(wire.as_str(), *close);
        let before = env.output_tokens().await;
        let opened = env.accepted();
        let (status, body) = env.chat(false).await;
        assert_eq!(status, StatusCode::OK, "answer {i}: {body:?}");
        assert_eq!(body, JSON.as_bytes(), "answer {i}");
        assert_eq!(env.output_tokens().await - before, 7.0, "answer {i}");
        // the previous answer's connection was used again exactly when it could be
        let new = env.accepted() - opened;
        assert_eq!(new, usize::from(!kept), "answer {i}: connections opened");
        kept = *keeps;
    }
    // what tailor wrote: a plain HTTP/1.1 request with its length, host and the upstream's key
    let heads = env.up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), answers.len());
    for h in &heads {
        assert!(
            h.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{h}"
        );
        assert!(h.contains(&format!("host: {}\r\n", env.up.addr)), "{h}");
        assert!(
            h.contains("authorization: Bearer sk-raw-upstream\r\n"),
            "{h}"
        );
        assert!(h.contains("content-length: "), "{h}");
        assert!(!h.contains("transfer-encoding"), "{h}");
    }
}

#[tokio::test]
async fn a_stream_cut_anywhere_reads_as_the_same_events() {
    let env = setup().await;
    let events = [
        r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
        r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello"}}],"usage":null}"#,
        r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":3,"total_tokens":11}}"#,
        "[DONE]",
    ];
    // usage was asked for by tailor, not the client: its chunk and `"usage":null` are removed
    let kept: Vec<String> = events[..3]
        .iter()
        .chain(&events[4..])
        .map(|e| e.replace(r#","usage":null"#, ""))
        .collect();
    // the media type in any case (RFC 9110: case-insensitive), with or without parameters, and
    // lines ended by each of the SSE specification's three line ends
    for (size, media, end) in [
        (7, "text/event-stream", "\n"),
        (64, "Text/Event-Stream; charset=utf-8", "\n"),
        (1000, "TEXT/EVENT-STREAM", "\n"),
        (5, "text/event-stream", "\r\n"),
        (1, "text/event-stream", "\r\n"),
        (6, "text/event-stream", "\r"),
        (1000, "text/event-stream", "\r"),
    ] {
        let frame = |data: &[String]| -> String {
            data.iter()
                .map(|e| format!("data: {e}{end}{end}"))
                .collect()
        };
        let all: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        env.up.push(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {media}\r\ntransfer-encoding: chunked\r\n\r\n{}0\r\n\r\n",
                chunked(&frame(&all), size, "")
            ),
            false,
        );
        let before = env.output_tokens().await;
        let (status, body) = env.chat(true).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            String::from_utf8_lossy(&body),
            frame(&kept),
            "chunks of {size}, {end:?}"
        );
        assert_eq!(
            env.output_tokens().await - before,
            3.0,
            "chunks of {size}, {end:?}"
        );
    }
}

#[tokio::test]
async fn broken_and_hostile_answers_are_errors_and_tailor_keeps_serving() {
    let env = setup().await;
    let big = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let hostile: Vec<&str> = vec![
        "SSH-2.0-OpenSSH_9.6\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        big.as_str(),
        "",
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ];
    for (i, wire) in hostile.iter().enumerate() {
        env.up.push(*wire, true);
        let (status, body) = env.chat(i == hostile.len() - 1).await;
        if status == StatusCode::OK {
            // headers were fine, the body was not: a stream ends with an error event
            let events = sse_data(&String::from_utf8_lossy(&body));
            let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
            assert!(last["error"]["message"].is_string(), "answer {i}: {body:?}");
        } else {
            assert_eq!(status, StatusCode::BAD_GATEWAY, "answer {i}: {body:?}");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"]["message"].is_string(), "answer {i}: {v}");
        }
        // and the next, good, answer is read as ever
        env.up.push(ok_answer(), false);
        let (status, body) = env.chat(false).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, JSON.as_bytes()),
            "after answer {i}"
        );
    }
}

#[tokio::test]
async fn idle_connections_are_reused_and_never_once_the_upstream_closed_them() {
    let env = setup().await;
    let ok = ok_answer();
    for _ in 0..20 {
        env.up.push(ok.as_str(), false);
        assert_eq!(env.chat(false).await.0, StatusCode::OK);
    }
    // one API worker, so one list of idle connections: one connection, not twenty
    let reused = env.accepted();
    assert_eq!(reused, 1, "{reused} connections for 20 sequential requests");
    // the upstream now closes each connection after answering, without saying so
    for _ in 0..10 {
        env.up.push(ok.as_str(), true);
        let (status, body) = env.chat(false).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, JSON.as_bytes()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.accepted() >= reused + 9);
}

#[tokio::test]
async fn hostile_answers_on_connections_left_open_are_never_used_again() {
    let env = setup().await;
    let good = ok_answer();
    let hostile = [
        "SSH-2.0-OpenSSH_9.6\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        // a body longer than its length says: the extra bytes would be read as the next answer
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ];
    for (i, wire) in hostile.iter().enumerate() {
        // the upstream writes each answer in one piece (so the stray bytes after a body arrive
        // with it) and keeps the connection open after it
        env.up.push_at_once(*wire);
        let (status, _) = env.chat(i == hostile.len() - 1).await;
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "answer {i}");
        env.up.push(good.as_str(), false);
        let opened = env.accepted();
        let (status, body) = env.chat(false).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, JSON.as_bytes()),
            "after answer {i}"
        );
        assert_eq!(
            env.accepted() - opened,
            1,
            "after answer {i}: the connection it came on was used again"
        );
    }
}

/// An upstream that answers a small request (read whole) with `JSON`, and a large one with 413
/// as soon as its head is in, without reading the body; then it closes (`close`) or neither reads
/// nor closes. Its receive buffer is small, so a large body cannot all sit in the kernel. Returns
/// its address and the count of connections it accepted.
async fn early_answering_upstream(close: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if len < 1 << 20 {
                        let mut body = vec![0u8; len];
                        sock.read_exact(&mut body).await.unwrap();
                        sock.write_all(ok_answer().as_bytes()).await.unwrap();
                        continue;
                    }
                    let answer = format!(
                        "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{TOO_LARGE}",
                        TOO_LARGE.len()
                    );
                    sock.write_all(answer.as_bytes()).await.unwrap();
                    if !close {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    // closing with the body unread sends a reset
                    return;
                }
            });
        }
    });
    (addr, accepted)
}

const TOO_LARGE: &str = r#"{"error": {"message": "Request too large.", "type": "invalid_request_error", "param": null, "code": null}}"#;

#[tokio::test]
async fn an_answer_before_a_large_body_is_taken_reaches_the_client_at_once() {
    for close in [false, true] {
        let (addr, accepted) = early_answering_upstream(close).await;
        let (tailor, client) = start_tailor(addr).await;
        // a small request first: its connection is idle, and the large one goes out on it
        let (status, body) = chat_with(&client, &tailor, false, "hi").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, JSON.as_bytes()));
        // 8 MiB: more than the kernel's send buffer takes on this machine (4 MiB). Were the
        // buffers larger, the body would all be written and this would pass without the fix.
        let prompt = "x".repeat(8 << 20);
        let (status, body) = chat_with(&client, &tailor, false, &prompt).await;
        // before: with the upstream silent, the write waited until the header timeout (a 504);
        // with a reset, the answer was lost and the request sent again on another connection
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "close {close}: {body:?}"
        );
        assert_eq!(&body[..], TOO_LARGE.as_bytes(), "close {close}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "close {close}: sent again"
        );
        // and the next request is served, on a new connection
        let (status, _) = chat_with(&client, &tailor, false, "hi").await;
        assert_eq!(status, StatusCode::OK, "close {close}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "close {close}");
        tailor.shutdown().await;
    }
}
