//! The `tailor` binary's offline commands: `check` on every config we ship, and `route`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn tailor(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn shipped_routes_yaml_checks_and_shows_prices() {
    let o = tailor(&["check", "--config", "routes.yaml"], None);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for want in [
        "support-ft",
        "3.75 / 1.875 / 15",
        "built-in `gpt-4o-2024-08-06`",
        "support-ft 90%, gpt-4o 10%",
        "sticky: header:x-session-id",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn every_fixture_config_is_loaded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        if std::fs::read_to_string(&path).unwrap().contains("MOCK_URL") {
            continue; // a template, loaded by tests/proxy.rs with the simulator's address
        }
        n += 1;
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let o = tailor(&["check", "--config", path.to_str().unwrap()], None);
        if name.starts_with("invalid-") {
            assert!(!o.status.success(), "{name} must fail");
            // each invalid fixture names the key path it must report in its first comment line
            let first = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_owned();
            let want = first
                .split_whitespace()
                .find(|w| w.starts_with("routes["))
                .unwrap()
                .trim_end_matches([',', '.']);
            assert!(
                text(&o).contains(&format!("{want}:")),
                "{name}: expected {want} in: {}",
                text(&o)
            );
        } else {
            assert!(o.status.success(), "{name}: {}", text(&o));
        }
    }
    assert!(n >= 2);
}

#[test]
fn route_explains_a_decision() {
    let body =
        r#"{"model":"gpt-4o","user":"cust-9","messages":[{"role":"user","content":"hello"}]}"#;
    let o = tailor(
        &["route", "--config", "routes.yaml", "-H", "X-Team: support"],
        Some(body),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("route embeddings     skipped: endpoint not in match.endpoint"),
        "{out}"
    );
    assert!(out.contains("decision: route=support model="), "{out}");
    assert!(out.contains("by sticky hash"), "{out}");

    let o = tailor(
        &[
            "route",
            "--config",
            "routes.yaml",
            "--endpoint",
            "embeddings",
        ],
        Some(r#"{"model":"nope","input":"x"}"#),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("no route matches"), "{}", text(&o));

    let o = tailor(&["route", "--config", "routes.yaml"], Some("not json"));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("could not parse the JSON"),
        "{}",
        text(&o)
    );
}
