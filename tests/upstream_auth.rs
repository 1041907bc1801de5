//! A wrong upstream key must be visible: the upstream's 401 reaches the client as it is, and is
//! counted as `outcome="upstream_error"` in `tailor_requests_total` and in the access line. A 401
//! to the caller's own key (`auth: passthrough`) is the caller's doing and stays `ok`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

fn config(mock: &str) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
upstreams:
  keyed: {{ url: "http://{mock}/v1", api_key_env: TAILOR_TEST_KEY }}
  own: {{ url: "http://{mock}/v1", auth: passthrough }}
models:
  gpt-4o: {{ upstream: keyed, id: gpt-4o-2024-08-06 }}
  mine: {{ upstream: own, id: gpt-4o-mini }}
routes:
  - {{ name: keyed, match: {{ model: gpt-4o }}, split: [{{ model: gpt-4o }}] }}
  - {{ name: own, match: {{ model: mine }}, split: [{{ model: mine }}] }}
"#
    )
}

async fn send(method: &str, url: String, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_upstream_key_counts_as_an_upstream_error() {
    let mock = tailor::mock::start("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tailor-upstream-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(&path, config(&mock.addr.to_string())).unwrap();
    // the simulator answers 401 invalid_api_key to this key, as OpenAI does to a revoked one
    let p = common::spawn_tailor(
        &[
            "--log-format",
            "json",
            "serve",
            "--config",
            path.to_str().unwrap(),
        ],
        &[("TAILOR_TEST_KEY", "sk-invalid")],
        &dir.join("stderr.log"),
    );
    let chat = |model: &str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
    };
    let url = format!("{}/v1/chat/completions", p.api);
    let json = ("content-type", "application/json");

    let (status, body) = send("POST", url.clone(), &[json], &chat("gpt-4o")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_api_key"), "{body}");
    // the caller's own wrong key, passed through: the caller's doing
    let caller = [json, ("authorization", "Bearer sk-invalid")];
    let (status, body) = send("POST", url.clone(), &caller, &chat("mine")).await;
    assert_eq!(status, 401, "{body}");
    // a good caller key through the same upstream: ok
    let caller = [json, ("authorization", "Bearer sk-caller")];
    assert_eq!(
        send("POST", url.clone(), &caller, &chat("mine")).await.0,
        200
    );
    // a request refused before routing: its log line names the error and says why
    let (status, body) = send("POST", url, &[json], "{\"model\": ").await;
    assert_eq!(status, 400, "{body}");

    let (_, metrics) = send("GET", format!("{}/metrics", p.admin), &[], "").await;
    let m = common::parse_metrics(&metrics);
    let series = |route: &str, code: &str, outcome: &str| {
        common::metric(
            &m,
            &format!("tailor_requests_total{{client=\"anonymous\",code=\"{code}\",endpoint=\"chat\",model=\"{}\",outcome=\"{outcome}\",route=\"{route}\"}}",
                if route == "keyed" { "gpt-4o" } else { "mine" }),
        )
    };
    assert_eq!(series("keyed", "401", "upstream_error"), 1.0, "{metrics}");
    assert_eq!(series("keyed", "401", "ok"), 0.0, "{metrics}");
    assert_eq!(series("own", "401", "ok"), 1.0, "{metrics}");
    assert_eq!(series("own", "200", "ok"), 1.0, "{metrics}");
    assert_eq!(
        common::metric(
            &m,
            "tailor_upstream_errors_total{kind=\"auth\",model=\"gpt-4o\",route=\"keyed\"}"
        ),
        1.0,
        "{metrics}"
    );

    // the access line says so too (written when the process ends, at the latest)
    let mut child = p.child;
    common::signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "tailor::access")
        .collect();
    let line = |route: &str, status: u64| {
        access
            .iter()
            .find(|v| v["route"] == route && v["status"] == status)
            .unwrap_or_else(|| panic!("no access line for {route} {status} in\n{log}"))
    };
    assert_eq!(line("keyed", 401)["outcome"], "upstream_error", "{log}");
    assert_eq!(line("own", 401)["outcome"], "ok", "{log}");
    // every line is one JSON object whose keys are each there once (a log pipeline keeps one of
    // two equal keys, or refuses the line)
    for l in log.lines() {
        // tailor's own reader of an object's fields keeps repeated keys (serde_json's `Value`
        // keeps the last of two and says nothing)
        let keys: Vec<String> = tailor::json::object_fields(l.as_bytes())
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}"))
            .into_iter()
            .map(|f| f.key.into_owned())
            .collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a key twice in {l}");
    }
    let refused = access
        .iter()
        .find(|v| v["status"] == 400)
        .unwrap_or_else(|| panic!("no line for the refused request in\n{log}"));
    assert_eq!(refused["message"], "rejected", "{log}");
    assert_eq!(refused["error"], "invalid_json", "{log}");
    assert!(
        refused["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
