//! Canary keys: the real binary at `--log trace`, in front of the simulator, given an upstream key
//! and a client key it must never show. After successes, failures of every kind, a scrape and the
//! health endpoints, nothing it printed or answered contains either key (or a wrong key a client
//! tried). Then SIGTERM: it drains and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const UPSTREAM: &str = "sk-canary-UPSTREAM-7f3a9c2d";
const CLIENT: &str = "tk-canary-CLIENT-51b2e8aa";
const WRONG: &str = "tk-canary-WRONG-0c9d8e7f";

/// (method, path, body, headers)
type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);

#[tokio::test(flavor = "multi_thread")]
async fn no_key_ever_appears_in_logs_metrics_errors_or_health() {
    let mock = tailor::mock::start("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tailor-canary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("routes.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
server: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
clients: [{{ name: app, key_env: TAILOR_CANARY_CLIENT }}]
upstreams:
  mock: {{ url: "http://{}/v1", api_key_env: TAILOR_CANARY_UPSTREAM, retries: {{ max: 1, backoff: 10ms }} }}
models:
  gpt-4o: {{ upstream: mock, id: gpt-4o-2024-08-06 }}
routes: [{{ name: main, split: [{{ model: gpt-4o }}] }}]
"#,
            mock.addr
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let common::Proc {
        mut child,
        api,
        admin,
    } = common::spawn_tailor(
        &[
            "--log",
            "trace",
            "--log-format",
            "json",
            "serve",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[
            ("TAILOR_CANARY_UPSTREAM", UPSTREAM),
            ("TAILOR_CANARY_CLIENT", CLIENT),
        ],
        &log,
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut seen = String::new();
    let good = format!("Bearer {CLIENT}");
    let wrong = format!("Bearer {WRONG}");
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let stream = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/chat/completions",
            chat,
            vec![("authorization", &good)],
        ),
        (
            "POST",
            "/v1/chat/completions",
            stream,
            vec![("authorization", &good)],
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat,
            vec![("authorization", &wrong)],
        ),
        ("POST", "/v1/chat/completions", chat, vec![]),
        (
            "POST",
            "/v1/chat/completions",
            chat,
            vec![("authorization", &good), ("x-mock-status", "401")],
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat,
            vec![("authorization", &good), ("x-mock-status", "500")],
        ),
        (
            "POST",
            "/v1/chat/completions",
            stream,
            vec![("authorization", &good), ("x-mock-fail-after", "2")],
        ),
        (
            "POST",
            "/v1/chat/completions",
            "{not json",
            vec![("authorization", &good)],
        ),
        ("GET", "/v1/models", "", vec![("authorization", &good)]),
        ("GET", "/metrics", "", vec![]),
        ("GET", "/healthz", "", vec![]),
        ("GET", "/readyz", "", vec![]),
    ];
    for (method, path, body, headers) in cases {
        let base = if path.starts_with("/v1") {
            &api
        } else {
            &admin
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = client
            .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
        seen.push_str(&format!("{} {:?}\n", resp.status(), resp.headers()));
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(
        seen.contains("tailor_requests_total"),
        "the scrape was captured"
    );

    common::signal(&child, "TERM");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM: drain and exit 0, got {exit:?}");

    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("\"target\":\"tailor::access\""),
        "trace logs were captured"
    );
    assert!(logs.lines().count() > 20);
    for secret in [UPSTREAM, CLIENT, WRONG] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!seen.contains(secret), "{secret} in a response");
        // nor a recognisable part of it
        assert!(
            !logs.contains(&secret[10..22]) && !seen.contains(&secret[10..22]),
            "part of {secret} leaked"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
