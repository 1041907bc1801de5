//! Reload through the real binary: a changed file is picked up by itself, SIGHUP reloads at once,
//! and a broken file leaves the running config in place.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::time::{Duration, Instant};

fn config(mock: &str, model_name: &str) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
upstreams:
  mock: {{ url: "http://{mock}/v1", api_key_env: TAILOR_TEST_KEY }}
models:
  gpt-4o: {{ upstream: mock, id: gpt-4o-2024-08-06 }}
routes: [{{ name: main, match: {{ model: {model_name} }}, split: [{{ model: gpt-4o }}] }}]
"#
    )
}

async fn models(api: &str) -> String {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .get(format!("{api}/v1/models").parse().unwrap())
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn wait_for(api: &str, want: &str, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if models(api).await.contains(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn file_change_and_sighup_reload_a_bad_file_does_not() {
    let mock = tailor::mock::start("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let mock = mock.addr.to_string();
    let dir = std::env::temp_dir().join(format!("tailor-reload-signal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(&path, config(&mock, "first")).unwrap();
    let p = common::spawn_tailor(
        &["serve", "--config", path.to_str().unwrap()],
        &[("TAILOR_TEST_KEY", "sk-x")],
        &dir.join("stderr.log"),
    );
    assert!(models(&p.api).await.contains("\"first\""));

    // the file changes: picked up by the watcher (it polls every second)
    tokio::time::sleep(Duration::from_millis(1100)).await; // a new mtime second
    std::fs::write(&path, config(&mock, "second")).unwrap();
    assert!(
        wait_for(&p.api, "\"second\"", Duration::from_secs(5)).await,
        "file change not picked up"
    );

    // a broken file: rejected, the running config stays
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&path, config(&mock, "third").replace("split:", "splitt:")).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(models(&p.api).await.contains("\"second\""));

    // SIGHUP after a fix
    std::fs::write(&path, config(&mock, "fourth")).unwrap();
    common::signal(&p.child, "HUP");
    assert!(
        wait_for(&p.api, "\"fourth\"", Duration::from_secs(3)).await,
        "SIGHUP reload not seen"
    );

    let mut child = p.child;
    common::signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(log.contains("config reload rejected"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
