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
        // a command that refuses its arguments exits without reading stdin: its answer is the
        // output, and the write then fails with a broken pipe
        match child.stdin.take().unwrap().write_all(s.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.unwrap(),
        }
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

#[test]
fn a_config_with_three_mistakes_names_all_three() {
    let o = tailor(
        &[
            "check",
            "--config",
            "tests/fixtures/invalid-three-mistakes.yaml",
        ],
        None,
    );
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("3 problems:"), "{out}");
    for path in [
        "server.listen: `localhost` is not an address",
        "models.ft.upstream: no upstream named `azure`",
        "routes[1].split[0].model: no model named `gpt-5`",
    ] {
        assert!(out.contains(path), "missing {path:?} in\n{out}");
    }
    // a typo in one place and a wrong type in another: both, from the parse
    let dir = std::env::temp_dir().join(format!("tailor-cli-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.yaml");
    std::fs::write(
        &file,
        "upstreams: { a: { url: \"http://x/v1\", timeouts: { idle: soon } } }\n\
         models: { m: { upstream: a, id: gpt-4o } }\n\
         routes: [{ name: r, split: [{ model: m, wieght: 1 }] }]\n",
    )
    .unwrap();
    let o = tailor(&["check", "--config", file.to_str().unwrap()], None);
    let out = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("upstreams.a.timeouts.idle: "), "{out}");
    assert!(
        out.contains("routes[0].split[0].wieght: unknown field"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dataset_check_names_the_legacy_format_and_shows_the_chat_one() {
    let dir = std::env::temp_dir().join(format!("tailor-cli-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("legacy.jsonl");
    std::fs::write(
        &file,
        "{\"prompt\": \"Where is my order?\", \"completion\": \"It ships today.\"}\n\
         {\"prompt\": \"Refund?\", \"completion\": \"Yes, within 30 days.\"}\n",
    )
    .unwrap();
    let o = tailor(&["dataset", "check", file.to_str().unwrap()], None);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("2 line(s) are in the legacy"), "{out}");
    assert!(out.contains(r#"{"messages": [{"role": "system""#), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn route_says_where_its_input_comes_from_and_takes_a_draw_fraction() {
    // nothing on stdin: say that the body is read from there
    let o = tailor(&["route", "--config", "routes.yaml"], Some(""));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("reads the request body from stdin"),
        "{}",
        text(&o)
    );
    // a fraction is accepted, and out of 0..1 is refused with a clear message
    // support: support-ft 90 %, gpt-4o 10 %; without a session header the draw decides
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
    for (draw, want) in [("0.5", "model=support-ft"), ("0.95", "model=gpt-4o")] {
        let o = tailor(
            &[
                "route",
                "--config",
                "routes.yaml",
                "-H",
                "X-Team: support",
                "--draw",
                draw,
            ],
            Some(body),
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(want), "--draw {draw}: {}", text(&o));
    }
    let o = tailor(
        &["route", "--config", "routes.yaml", "--draw", "95"],
        Some(body),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("between 0 and 1"), "{}", text(&o));
    // every subcommand documents --config
    for cmd in ["serve", "demo", "check", "route", "simulate", "report"] {
        let o = tailor(&[cmd, "--help"], None);
        let help = text(&o);
        let line = help
            .lines()
            .skip_while(|l| !l.contains("--config"))
            .take(2)
            .collect::<String>();
        assert!(line.contains("The config file"), "{cmd}: {help}");
    }
}

#[test]
fn check_warns_when_an_openai_upstream_has_no_credentials() {
    let dir = std::env::temp_dir().join(format!("tailor-cli-nokey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.yaml");
    std::fs::write(
        &file,
        "upstreams: { openai: { url: https://api.openai.com/v1 }, local: { url: http://127.0.0.1:8000/v1 } }\n\
         models: { m: { upstream: openai, id: gpt-4o }, l: { upstream: local, id: gpt-4o-mini } }\n\
         routes: [{ name: r, match: { model: l }, split: [{ model: l }] }, { name: d, split: [{ model: m }] }]\n",
    )
    .unwrap();
    let o = tailor(&["check", "--config", file.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("OK, with 1 warning(s)"), "{out}");
    assert!(
        out.contains(
            "upstream `openai` at api.openai.com has no credentials: every request will get 401"
        ),
        "{out}"
    );
    // a local server without credentials is fine
    assert!(!out.contains("upstream `local` at"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
