//! Property tests: the SSE scanner, usage extraction, the body rewrite, header parsing, capture
//! reassembly and config parsing hold for any input, not only the examples in the unit tests:
//! nothing a client or an upstream sends can panic them, and every wire format reads the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

use bytes::Bytes;
use proptest::prelude::*;
use tailor::capture::example::example;
use tailor::config::Config;
use tailor::forward::policy::retry_after;
use tailor::request::{Endpoint, RequestView, SystemPrompt};
use tailor::usage::sse::SseScanner;
use tailor::usage::{find_in_json, Usage};

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::Chat,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::Responses,
];

/// Parses `body` for every endpoint; whatever parses must read and rewrite without a panic, and
/// a body that is strict JSON stays strict JSON.
fn parse_everywhere(body: &[u8]) -> Result<(), TestCaseError> {
    let strict = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    for ep in ENDPOINTS {
        if let Ok(v) = RequestView::parse(body, ep) {
            let _ = (
                v.text(),
                v.has_tools(),
                v.metadata("k"),
                v.estimated_prompt_tokens(),
            );
            let prompt = SystemPrompt {
                text: "p",
                replace: body.len().is_multiple_of(2),
            };
            let out = v.rewrite("m", v.needs_usage_injection(), Some(prompt));
            prop_assert!(
                !strict || serde_json::from_slice::<serde_json::Value>(&out).is_ok(),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    Ok(())
}

/// A chat stream written the way one server or another writes it.
#[derive(Debug, Clone, Copy)]
struct Style {
    spaced: bool,
    /// The line end: `\n`, `\r\n` or `\r` (the SSE specification's three).
    nl: &'static str,
    nospace: bool,
    comments: bool,
    usage_first: bool,
}

fn styled_stream(texts: &[String], usage: (u32, u32, u32), st: Style) -> String {
    let nl = st.nl;
    let data = if st.nospace { "data:" } else { "data: " };
    let json = |v: &serde_json::Value| {
        if st.spaced {
            serde_json::to_string_pretty(v).unwrap().replace('\n', " ")
        } else {
            v.to_string()
        }
    };
    let mut s = String::new();
    for t in texts {
        let chunk = serde_json::json!({"choices":[{"index":0,"delta":{"content":t}}]});
        let mut body = json(&chunk);
        // `usage: null` first or last, as include_usage adds it
        body = if st.usage_first {
            body.replacen('{', "{\"usage\":null,", 1)
        } else {
            format!("{},\"usage\":null}}", &body[..body.len() - 1])
        };
        if st.comments {
            s.push_str(&format!(": ping{nl}{nl}"));
        }
        s.push_str(&format!("{data}{body}{nl}{nl}"));
    }
    let (p, c, o) = usage;
    let u = serde_json::json!({"choices":[],"usage":{"prompt_tokens":p + c,"completion_tokens":o,"prompt_tokens_details":{"cached_tokens":c}}});
    s.push_str(&format!("{data}{}{nl}{nl}{data}[DONE]{nl}{nl}", json(&u)));
    s
}

/// A chat stream of `n` content chunks with arbitrary text, a usage chunk, and `[DONE]`, its lines
/// ended by `nl`.
fn stream(texts: &[String], usage: (u32, u32, u32), nl: &str) -> String {
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

/// One of the SSE specification's three line ends.
fn line_end() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["\n", "\r\n", "\r"][..])
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
        nl in line_end(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let input = stream(&texts, usage, nl);
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
        prop_assert_eq!(out, data.clone());
        let _ = feed_in_pieces(&data, &cuts, true);
    }

    #[test]
    fn sse_garbage_shaped_like_events_never_panics(
        parts in proptest::collection::vec(prop_oneof![
            Just("data:".to_owned()), Just("data: ".to_owned()), Just("\n".to_owned()), Just("\r\n".to_owned()), Just("\r".to_owned()),
            Just("{\"usage\":".to_owned()), Just("null".to_owned()), Just("\"choices\":[".to_owned()),
            Just("{\"content\":\"".to_owned()), Just("\\".to_owned()), Just("\"".to_owned()), Just(",".to_owned()),
            Just("}".to_owned()), Just("]".to_owned()), Just("event: response.completed".to_owned()), ".{0,5}",
        ], 0..60),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let data = parts.concat();
        let (out, _) = feed_in_pieces(data.as_bytes(), &cuts, false);
        prop_assert_eq!(out, data.as_bytes());
        let _ = feed_in_pieces(data.as_bytes(), &cuts, true);
    }

    #[test]
    fn every_wire_format_reads_the_same(
        texts in proptest::collection::vec(".{0,20}", 1..8),
        usage in (0u32..100_000, 0u32..100_000, 0u32..100_000),
        style in (any::<bool>(), line_end(), any::<bool>(), any::<bool>(), any::<bool>()),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let st = Style { spaced: style.0, nl: style.1, nospace: style.2, comments: style.3, usage_first: style.4 };
        let plain = styled_stream(&texts, usage, Style { spaced: false, nl: "\n", nospace: false, comments: false, usage_first: false });
        let input = styled_stream(&texts, usage, st);
        let (_, want) = feed_in_pieces(plain.as_bytes(), &[], false);
        let (out, got) = feed_in_pieces(input.as_bytes(), &cuts, false);
        prop_assert_eq!(&out, input.as_bytes());
        prop_assert_eq!(got.usage(), want.usage());
        prop_assert_eq!(got.text_bytes(), want.text_bytes());
        // the broken-stream estimate: the text's tokens, whatever the format, as if counted whole
        let enc = tailor::tokens::Encoding::O200kBase;
        enc.load();
        prop_assert_eq!(got.text().tokens(), want.text().tokens());
        prop_assert_eq!(got.text().tokens(), enc.count(&texts.concat()));
        prop_assert!(got.complete());
        let (stripped, s) = feed_in_pieces(input.as_bytes(), &cuts, true);
        let stripped = String::from_utf8(stripped).unwrap();
        prop_assert!(!stripped.contains("usage"), "{:?}: {}", st, stripped);
        prop_assert_eq!(s.usage(), want.usage());
        // every event but the usage chunk stays, each still valid JSON
        let events = stripped.matches(if st.nospace { "data:" } else { "data: " }).count();
        prop_assert_eq!(events, texts.len() + 1);
    }

    #[test]
    fn request_bodies_of_any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        parse_everywhere(&data)?;
    }

    #[test]
    fn mutated_and_cut_chat_bodies_never_panic(
        cut in any::<usize>(),
        flips in proptest::collection::vec((any::<usize>(), prop_oneof![Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'['), Just(b'}'), Just(b','), any::<u8>()]), 0..4),
    ) {
        let mut body = br#"{"model":"gpt-4o","user":"u\u00e9","metadata":{"k":"v"},"instructions":"sys","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"system","content":"a\"b"},{"role":"user","content":[{"type":"text","text":"hi \\ there"}]}],"tools":[{"type":"function","function":{"name":"f"}}],"input":"x","prompt":["p"]}"#.to_vec();
        for (at, b) in flips {
            let i = at % body.len();
            body[i] = b;
        }
        body.truncate(cut % (body.len() + 1));
        parse_everywhere(&body)?;
    }

    #[test]
    fn retry_after_never_panics(v in "[ -~]{0,40}", ms in any::<bool>()) {
        let mut h = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(&v) {
            h.insert(if ms { "retry-after-ms" } else { "retry-after" }, value);
        }
        let _ = retry_after(&h);
    }

    #[test]
    fn capture_reassembly_never_panics(
        request in proptest::collection::vec(any::<u8>(), 0..300),
        answer in proptest::collection::vec(any::<u8>(), 0..1500),
        index in any::<u64>(),
    ) {
        let frames = [Bytes::from(answer)];
        let _ = example(&request, &frames, &[]);
        // a tool call index the upstream chose must not decide what tailor allocates
        let stream = format!("data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":{index},\"function\":{{\"arguments\":\"x\"}}}}]}}}}]}}\n\ndata: [DONE]\n\n");
        let req = br#"{"messages":[{"role":"user","content":"q"}]}"#;
        let line = example(req, &[Bytes::from(stream)], &[]);
        prop_assert_eq!(line.is_some(), index < 128);
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
