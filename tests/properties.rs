//! Property tests: the SSE scanner, usage extraction, the body rewrite and config parsing hold
//! for any input, not only the examples in the unit tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

use bytes::Bytes;
use proptest::prelude::*;
use tailor::config::Config;
use tailor::request::{Endpoint, RequestView};
use tailor::usage::sse::SseScanner;
use tailor::usage::{find_in_json, Usage};

/// A chat stream of `n` content chunks with arbitrary text, a usage chunk, and `[DONE]`.
fn stream(texts: &[String], usage: (u32, u32, u32), crlf: bool) -> String {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut s = String::new();
    for t in texts {
        let chunk = serde_json::json!({"choices":[{"index":0,"delta":{"content":t}}],"usage":null});
        s.push_str(&format!("data: {chunk}{nl}{nl}"));
    }
    let (p, c, o) = usage;
    let u = serde_json::json!({"choices":[],"usage":{"prompt_tokens":p + c,"completion_tokens":o,"prompt_tokens_details":{"cached_tokens":c}}});
    s.push_str(&format!(
        ": keep-alive comment{nl}{nl}data: {u}{nl}{nl}data: [DONE]{nl}{nl}"
    ));
    s
}

fn feed_in_pieces(input: &[u8], cuts: &[usize], strip: bool) -> (Vec<u8>, SseScanner) {
    let mut s = SseScanner::new(strip);
    let mut out = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut at = 0;
    for p in points.into_iter().chain(std::iter::once(input.len())) {
        out.extend_from_slice(&s.feed(Bytes::copy_from_slice(&input[at..p])));
        at = p;
    }
    out.extend_from_slice(&s.finish());
    (out, s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sse_any_split_gives_the_same_bytes_events_and_usage(
        texts in proptest::collection::vec(".{0,40}", 0..12),
        usage in (0u32..100_000, 0u32..100_000, 0u32..100_000),
        crlf in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let input = stream(&texts, usage, crlf);
        let (whole, s1) = feed_in_pieces(input.as_bytes(), &[], false);
        let (pieces, s2) = feed_in_pieces(input.as_bytes(), &cuts, false);
        prop_assert_eq!(&whole, input.as_bytes());
        prop_assert_eq!(&pieces, input.as_bytes());
        prop_assert_eq!(s1.events(), s2.events());
        prop_assert_eq!(s1.text_bytes(), s2.text_bytes());
        let want = Usage { input: u64::from(usage.0 + usage.1), cached: u64::from(usage.1), output: u64::from(usage.2), reasoning: 0 };
        prop_assert_eq!(s2.usage(), Some(want));
        prop_assert!(s2.complete());
        // strip mode: same for any split too, and no usage reaches the client
        let (a, _) = feed_in_pieces(input.as_bytes(), &[], true);
        let (b, _) = feed_in_pieces(input.as_bytes(), &cuts, true);
        prop_assert_eq!(&a, &b);
        prop_assert!(!String::from_utf8_lossy(&a).contains("usage"));
    }

    #[test]
    fn sse_scanner_never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..2000), cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
        let (out, _) = feed_in_pieces(&data, &cuts, false);
        prop_assert_eq!(out, data);
    }

    #[test]
    fn usage_is_found_wherever_it_sits(
        p in 0u64..10_000_000, c in 0u64..10_000_000, o in 0u64..10_000_000, r in 0u64..1000,
        before in proptest::collection::btree_map("[a-z]{1,8}", ".{0,30}", 0..5),
        after in proptest::collection::btree_map("[a-z]{1,8}", ".{0,30}", 0..5),
        pretty in any::<bool>(),
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in before { obj.insert(k, v.into()); }
        obj.insert("usage".into(), serde_json::json!({"prompt_tokens": p + c, "completion_tokens": o + r,
            "prompt_tokens_details": {"cached_tokens": c}, "completion_tokens_details": {"reasoning_tokens": r}}));
        for (k, v) in after { if k != "usage" { obj.insert(k, v.into()); } }
        let v = serde_json::Value::Object(obj);
        let text = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        prop_assert_eq!(find_in_json(&text), Some(Usage { input: p + c, cached: c, output: o + r, reasoning: r }));
    }

    #[test]
    fn usage_finder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = find_in_json(&data);
    }

    #[test]
    fn rewrite_changes_model_and_nothing_else(
        fields in proptest::collection::btree_map("[a-z_]{1,10}", any::<i64>(), 0..8),
        model in "[ -~]{0,30}",
        target in "[ -~]{0,40}",
        stream in any::<bool>(),
        spaces in 0usize..3,
    ) {
        let mut obj = serde_json::Map::new();
        obj.insert("model".into(), model.clone().into());
        obj.insert("messages".into(), serde_json::json!([{"role":"user","content":"x"}]));
        obj.insert("stream".into(), stream.into());
        for (k, v) in &fields {
            if !["model", "messages", "stream", "stream_options"].contains(&k.as_str()) { obj.insert(k.clone(), (*v).into()); }
        }
        let pad = " ".repeat(spaces);
        let pairs: Vec<String> = obj.iter().map(|(k, v)| format!("{}:{pad}{}", serde_json::to_string(k).unwrap(), v)).collect();
        let text = format!("{{{pad}{}{pad}}}", pairs.join(&format!(",{pad}")));
        let view = RequestView::parse(text.as_bytes(), Endpoint::Chat).unwrap();
        prop_assert_eq!(view.model.as_ref(), model.as_str());
        let out = view.rewrite(&target, view.needs_usage_injection(), None);
        let mut got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut want = serde_json::Value::Object(obj);
        want["model"] = target.clone().into();
        if stream { want["stream_options"] = serde_json::json!({"include_usage": true}); }
        prop_assert_eq!(got.take(), want);
        if !stream {
            // byte for byte: only the model string changed
            let key = |m: &str| format!("\"model\":{pad}{}", serde_json::to_string(m).unwrap());
            let expected = text.replacen(&key(&model), &key(&target), 1);
            prop_assert_eq!(String::from_utf8(out.to_vec()).unwrap(), expected);
        }
    }

    #[test]
    fn config_parsing_never_panics(text in ".{0,400}") {
        let _ = Config::from_yaml(&text, &|_| None);
    }

    #[test]
    fn unknown_keys_anywhere_are_named(key in "[a-z]{3,10}x", place in 0usize..4) {
        let places = [
            ("server:\n", "server"),
            ("  openai:\n", "upstreams.openai"),
            ("  gpt-4o:\n", "models.gpt-4o"),
            ("  - name: default\n", "routes[0]"),
        ];
        let base = "server:\n  listen: 127.0.0.1:8080\nupstreams:\n  openai:\n    url: http://127.0.0.1:1/v1\nmodels:\n  gpt-4o:\n    upstream: openai\n    id: gpt-4o-2024-08-06\nroutes:\n  - name: default\n    split: [{ model: gpt-4o }]\n";
        let (anchor, path) = places[place];
        let indent = if anchor.starts_with("  ") { "    " } else { "  " };
        let yaml = base.replacen(anchor, &format!("{anchor}{indent}{key}: 1\n"), 1);
        let e = Config::from_yaml(&yaml, &|_| None).unwrap_err().to_string();
        let expected = format!("{path}.{key}:");
        prop_assert!(e.starts_with(&expected), "{} -> {}", yaml, e);
    }
}
