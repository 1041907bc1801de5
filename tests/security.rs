//! Who gets in: client keys, upstream destinations fixed by config, no redirects, limits, and
//! bounded metric labels (tests/fixtures/security.yaml).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{metric, parse_metrics, setup_named, Env, CLIENT_B_KEY, UPSTREAM_KEY};
use http::{Method, StatusCode};

const KEY_A: &str = "Bearer tk-team-a-0f9e8d7c";

/// The connection-limit test times "closed at once" (under the 1 s header timeout); the 10,000
/// request test would starve it of CPU on a 2-core machine, so the two never run together.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup() -> Env {
    setup_named("security.yaml").await
}

const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn client_keys_are_required_and_name_the_client_in_metrics() {
    let env = setup().await;
    let b_key = format!("Bearer {CLIENT_B_KEY}");
    for auth in [
        None,
        Some("Bearer nope"),
        Some("tk-team-a-0f9e8d7c"),
        Some("Bearer tk-team-a-0f9e8d7"),
        Some("Basic eDp5"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = env.chat(BODY, &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        let models = env.call(Method::GET, "/v1/models", &headers, "").await;
        assert_eq!(models.status, StatusCode::UNAUTHORIZED);
    }
    assert!(
        env.mock.received().is_empty(),
        "nothing reached the upstream"
    );
    assert_eq!(
        env.chat(BODY, &[("authorization", KEY_A)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.chat(BODY, &[("authorization", &b_key)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.chat(BODY, &[("authorization", &b_key)]).await.status,
        StatusCode::OK
    );
    let m = parse_metrics(&env.metrics().await);
    let req = |c: &str| {
        metric(&m, &format!("tailor_requests_total{{client=\"{c}\",code=\"200\",endpoint=\"chat\",model=\"gpt-4o\",outcome=\"ok\",route=\"main\"}}"))
    };
    assert_eq!((req("team-a"), req("team-b")), (1.0, 2.0));
    assert!(
        metric(
            &m,
            "tailor_cost_usd_total{client=\"team-b\",model=\"gpt-4o\",route=\"main\"}"
        ) > 0.0
    );
    assert!(metric(&m, "tailor_tokens_total{client=\"team-a\",model=\"gpt-4o\",route=\"main\",type=\"output\"}") > 0.0);
    assert_eq!(
        metric(
            &m,
            "tailor_rejected_requests_total{reason=\"unauthorized\"}"
        ),
        10.0
    );
}

#[tokio::test]
async fn nothing_in_a_request_changes_where_it_goes_or_which_key_it_carries() {
    let env = setup().await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
        "api_base":"http://127.0.0.1:9/v1","base_url":"http://127.0.0.1:9","api_key":"sk-attacker",
        "extra_body":{"api_base":"http://127.0.0.1:9","azure_endpoint":"http://127.0.0.1:9"},
        "metadata":{"api_base":"http://127.0.0.1:9"}}"#;
    let r = env
        .chat(
            body,
            &[
                ("authorization", KEY_A),
                ("host", "127.0.0.1:9"),
                ("x-forwarded-host", "127.0.0.1:9"),
                ("api-key", "sk-attacker"),
                ("x-api-base", "http://127.0.0.1:9"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = env.mock.received();
    assert_eq!(got.len(), 1, "the request reached the configured upstream");
    assert_eq!(
        got[0].headers["authorization"],
        format!("Bearer {UPSTREAM_KEY}").as_str()
    );
    assert!(
        !got[0].headers.contains_key("api-key"),
        "the caller's api-key header is not forwarded"
    );
    assert!(
        String::from_utf8_lossy(&got[0].body).contains("sk-attacker"),
        "the body itself is forwarded as sent (OpenAI rejects or ignores such fields)"
    );
}

#[tokio::test]
async fn upstream_redirects_are_not_followed() {
    let env = setup().await;
    let r = env
        .chat(BODY, &[("authorization", KEY_A), ("x-mock-status", "307")])
        .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(env.mock.received().len(), 1);
}

#[tokio::test]
async fn limits_give_openai_errors() {
    let env = setup().await;
    // header count and size: 431
    let many: Vec<(String, String)> = (0..41)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = env.chat(BODY, &many).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], "request_header_fields_too_large");
    let big = "x".repeat(9000);
    assert_eq!(
        env.chat(BODY, &[("authorization", KEY_A), ("x-big", &big)])
            .await
            .status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // nesting: 400, no stack overflow
    let deep = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"x"}}],"x":{}{}}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let r = env.chat(&deep, &[("authorization", KEY_A)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nesting deeper than"),
        "{}",
        r.text()
    );
    // body size: 413
    let huge = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(
        env.chat(&huge, &[("authorization", KEY_A)]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        env.chat(BODY, &[("authorization", KEY_A)]).await.status,
        StatusCode::OK,
        "still serving"
    );
}

/// Reads until the server closes the connection; returns how long that took.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(t.elapsed()),
            Err(_) => return None,
        }
    }
}

/// Some(elapsed) when the peer closed without sending a byte; None when it answered or
/// stayed open past `limit`.
fn closed_without_answer(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(0) => Some(t.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(t.elapsed()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_and_connection_limits() {
    let _alone = TIMING.lock().await;
    let env = setup().await;
    let addr = env.tailor.api_addr;
    let result = tokio::task::spawn_blocking(move || {
        // headers trickling in: closed after header_read_timeout (1 s)
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let slow_closed = closed_within(&mut slow, Duration::from_secs(4));
        // the client sees the close a moment before the server task gives its slot back:
        // on a loaded machine, connecting at once can find the slot still taken
        std::thread::sleep(Duration::from_millis(300));
        // max_connections: 16 open, the 17th is closed at once
        let mut open: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        for s in &open {
            s.set_nonblocking(true).unwrap();
            let still_open = matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            assert!(still_open, "one of the 16 connections within the limit was closed");
        }
        // a whole request on the 17th: served, it would get an answer (401 without a key);
        // over the limit, it is closed without a byte, however slow the machine is
        let mut extra = TcpStream::connect(addr).unwrap();
        let _ = extra.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
        let extra_closed = closed_without_answer(&mut extra, Duration::from_secs(5));
        open.clear();
        (slow_closed, extra_closed)
    })
    .await
    .unwrap();
    let slow = result.0.expect("slowloris connection was not closed");
    assert!(
        slow >= Duration::from_millis(900) && slow < Duration::from_secs(3),
        "{slow:?}"
    );
    assert!(
        result.1.is_some(),
        "the connection over the limit was served or stayed open"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.chat(BODY, &[("authorization", KEY_A)]).await.status,
        StatusCode::OK,
        "serving again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_prior_knowledge_is_told_from_http1_by_its_first_bytes() {
    let env = setup().await;
    let addr = env.tailor.api_addr;
    let settings = tokio::task::spawn_blocking(move || {
        // the preface in two pieces: tailor peeks until it has all 24 bytes
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(b"\r\nSM\r\n\r\n").unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // an empty SETTINGS frame
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        head
    })
    .await
    .unwrap();
    assert_eq!(
        settings[3], 4,
        "the server's first frame is SETTINGS: {settings:?}"
    );
    // and HTTP/1.1 on the same port still works
    assert_eq!(
        env.chat(BODY, &[("authorization", KEY_A)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn ten_thousand_random_requests_add_no_series() {
    let _alone = TIMING.lock().await;
    let env = setup().await;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        format!("{x:016x}")
    };
    let series = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let mut round = |n: usize| {
        let reqs: Vec<(String, String, String, String)> =
            (0..n).map(|_| (rnd(), rnd(), rnd(), rnd())).collect();
        reqs
    };
    // one warm-up round creates every series these kinds of request can create
    for (i, (model, user, hv, path)) in round(6).into_iter().enumerate() {
        send_random(&env, i, &model, &user, &hv, &path).await;
    }
    let before = series(&env.metrics().await);
    for (i, (model, user, hv, path)) in round(10_000).into_iter().enumerate() {
        send_random(&env, i, &model, &user, &hv, &path).await;
    }
    let after = series(&env.metrics().await);
    let added: Vec<_> = after.difference(&before).collect();
    assert!(added.is_empty(), "new series: {added:?}");
    let m = parse_metrics(&env.metrics().await);
    assert!(metric(&m, "tailor_unrouted_requests_total") > 3000.0);
}

async fn send_random(env: &Env, i: usize, model: &str, user: &str, hv: &str, path: &str) {
    let body = format!(
        r#"{{"model":"{model}","user":"{user}","messages":[{{"role":"user","content":"x"}}]}}"#
    );
    let routed = format!(
        r#"{{"model":"gpt-4o","user":"{user}","messages":[{{"role":"user","content":"x"}}]}}"#
    );
    let r = match i % 3 {
        0 => {
            env.chat(
                &body,
                &[
                    ("authorization", KEY_A),
                    ("x-team", hv),
                    ("x-session-id", hv),
                ],
            )
            .await
        }
        1 => {
            env.chat(
                &routed,
                &[
                    ("authorization", KEY_A),
                    ("x-team", hv),
                    ("x-mock-words", "1"),
                ],
            )
            .await
        }
        _ => {
            env.call(
                Method::POST,
                &format!("/v1/{path}"),
                &[("authorization", KEY_A)],
                "{}",
            )
            .await
        }
    };
    assert!(matches!(r.status.as_u16(), 200 | 404), "{}", r.status);
}

#[tokio::test]
async fn cut_and_mutated_bodies_over_the_wire_get_an_openai_error_and_nothing_breaks() {
    // many requests: not beside the timing-sensitive tests
    let _alone = TIMING.lock().await;
    let env = setup().await;
    let key = format!("Bearer {}", common::CLIENT_B_KEY);
    let valid = r#"{"model":"gpt-4o","user":"u\u00e9","messages":[{"role":"system","content":"a\"b"},{"role":"user","content":"hi \\ there"}],"stream":false}"#;
    let mut bodies: Vec<Vec<u8>> =
        vec![br#"{"model":"\"#.to_vec(), b"\"\\".to_vec(), b"{".to_vec()];
    // every cut of a valid body, and bytes swapped for JSON's special ones
    for cut in 0..valid.len() {
        bodies.push(valid.as_bytes()[..cut].to_vec());
    }
    for (i, b) in [
        (9usize, b'\\'),
        (20, b'"'),
        (40, b'{'),
        (61, b'['),
        (70, b'\\'),
    ] {
        let mut v = valid.as_bytes().to_vec();
        v[i] = b;
        bodies.push(v);
    }
    for body in bodies {
        let r = env
            .call(
                Method::POST,
                "/v1/chat/completions",
                &[("authorization", key.as_str())],
                body.clone(),
            )
            .await;
        let shown = String::from_utf8_lossy(&body).into_owned();
        assert!(
            matches!(r.status.as_u16(), 200 | 400 | 404),
            "{shown}: {}",
            r.status
        );
        if r.status != StatusCode::OK {
            let e = &r.json()["error"];
            for k in ["message", "type", "param", "code"] {
                assert!(e.get(k).is_some(), "{shown}: no {k} in {e}");
            }
        }
    }
    let ok = env
        .chat(
            r#"{"model":"gpt-4o","messages":[]}"#,
            &[("authorization", key.as_str())],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "still serving");
}
