//! Shared by the integration tests: the simulator and tailor on 127.0.0.1:0, an HTTP client, and
//! readers for `/metrics` and SSE bodies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)] // test helpers may fail loudly

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tailor::config::Config;
use tailor::metrics::Metrics;
use tailor::mock::{self, MockServer};
use tailor::server::{self, Running};

/// The simulator's upstream key in the fixtures.
pub const UPSTREAM_KEY: &str = "sk-upstream-secret";
/// team-b's client key in tests/fixtures/security.yaml (read from TAILOR_TEST_CLIENT_KEY).
pub const CLIENT_B_KEY: &str = "tk-team-b-5e4d3c2b";

pub struct Env {
    pub mock: MockServer,
    pub tailor: Running,
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub config: Config,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// The environment the fixtures' `api_key_env` / `key_env` read.
fn test_env(k: &str) -> Option<String> {
    match k {
        "TAILOR_TEST_KEY" => Some(UPSTREAM_KEY.to_owned()),
        "TAILOR_TEST_CLIENT_KEY" => Some(CLIENT_B_KEY.to_owned()),
        "TAILOR_TEST_ID_KEY" => Some("fleet-shared-request-id-key".to_owned()),
        _ => None,
    }
}

/// Loads `tests/fixtures/{name}`, edited by `edit`, with MOCK_URL replaced.
pub fn load_fixture_edited(name: &str, mock_url: &str, edit: &dyn Fn(String) -> String) -> Config {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    // files a fixture names (arm prompts) are relative to it, as with `Config::load`
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    Config::from_yaml_in(&edit(text).replace("MOCK_URL", mock_url), &test_env, &dir).unwrap()
}

/// Loads `tests/fixtures/{name}` with MOCK_URL replaced.
pub fn load_fixture_named(name: &str, mock_url: &str) -> Config {
    load_fixture_edited(name, mock_url, &|t| t)
}

/// The simulator plus tailor on the named fixture.
pub async fn setup_named(name: &str) -> Env {
    setup_edited(name, true, &|t| t).await
}

/// As [`setup_named`]; `record`: the simulator keeps the requests it received.
pub async fn setup_with(name: &str, record: bool) -> Env {
    setup_edited(name, record, &|t| t).await
}

/// As [`setup_with`], with `edit` applied to the fixture's text first.
pub async fn setup_edited(name: &str, record: bool, edit: &dyn Fn(String) -> String) -> Env {
    let mock = mock::start("127.0.0.1:0".parse().unwrap(), record)
        .await
        .unwrap();
    let url = format!("http://{}", mock.addr);
    let tailor = server::start(
        load_fixture_edited(name, &url, edit),
        Metrics::new().unwrap(),
    )
    .await
    .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    Env {
        mock,
        tailor,
        client,
        config: load_fixture_edited(name, &url, edit),
    }
}

impl Env {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.tailor.api_addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn chat(&self, body: &str, headers: &[(&str, &str)]) -> Resp {
        self.call(
            Method::POST,
            "/v1/chat/completions",
            headers,
            body.to_owned(),
        )
        .await
    }

    /// GET on the admin port: status and body.
    pub async fn admin(&self, path: &str) -> (StatusCode, String) {
        let req = Request::get(format!("http://{}{path}", self.tailor.admin_addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.admin("/metrics").await.1
    }
}

/// Parses the exposition into `name{labels}` -> value (labels as Prometheus prints them, sorted).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

pub fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// The data payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

/// A `tailor` process started from the built binary.
pub struct Proc {
    pub child: std::process::Child,
    /// `http://ADDR` of the API (without `/v1`) and of the admin port.
    pub api: String,
    pub admin: String,
}

/// Starts the binary with `args` and `envs`, stderr to `stderr`, and waits for its
/// "tailor listening on http://ADDR/v1 (admin: http://ADDR)" line.
pub fn spawn_tailor(args: &[&str], envs: &[(&str, &str)], stderr: &std::path::Path) -> Proc {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tailor"));
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("tailor listening on "),
        "unexpected first line {line:?}; stderr: {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
    let api = line
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches("/v1")
        .to_owned();
    let admin = line
        .rsplit("admin: ")
        .next()
        .unwrap()
        .trim()
        .trim_end_matches(')')
        .to_owned();
    Proc { child, api, admin }
}

/// Sends a signal by name (`TERM`, `HUP`) with the system's `kill`.
pub fn signal(child: &std::process::Child, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}
