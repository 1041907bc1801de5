use super::*;

const CHAT: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

const USAGE: Usage = Usage {
    input: 9,
    cached: 0,
    output: 2,
    reasoning: 0,
};

fn run(input: &[u8], split_every: usize, strip: bool) -> (Vec<u8>, SseScanner) {
    let mut s = SseScanner::new(strip);
    let mut out = Vec::new();
    for piece in input.chunks(split_every) {
        out.extend_from_slice(&s.feed(Bytes::copy_from_slice(piece)));
    }
    out.extend_from_slice(&s.finish());
    (out, s)
}

#[test]
fn passes_bytes_unchanged_at_every_split() {
    for n in 1..CHAT.len() {
        let (out, s) = run(CHAT.as_bytes(), n, false);
        assert_eq!(out, CHAT.as_bytes(), "split {n}");
        assert_eq!(s.usage(), Some(USAGE));
        assert!(s.complete());
        assert_eq!(s.events(), 5);
    }
}

#[test]
fn strip_mode_gives_the_stream_without_include_usage() {
    let expected = stripped_chat();
    assert!(!expected.contains("usage"));
    for n in [1, 7, 64, CHAT.len()] {
        let (out, s) = run(CHAT.as_bytes(), n, true);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "split {n}");
        assert_eq!(s.usage().unwrap().input, 9);
    }
}

fn stripped_chat() -> String {
    CHAT.replace(
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
        "",
    )
    .replace(",\"usage\":null", "")
}

/// The same stream as other servers write it: every reading must agree, and stripping must
/// leave every byte but the usage members and the usage chunk.
#[test]
fn every_format_reads_the_same() {
    let spaced = |s: &str| {
        s.replace("\":", "\": ")
            .replace(",\"", ", \"")
            .replace("\"Hi\"", "\"H\\u0069\"")
    };
    let crlf = |s: &str| s.replace('\n', "\r\n");
    let cr = |s: &str| s.replace('\n', "\r");
    let mixed = |s: &str| s.replace("\n\n", "\r\n\r").replacen("\r\n\r", "\n\r", 2);
    let nospace = |s: &str| s.replace("data: ", "data:");
    let comments = |s: &str| s.replace("data: ", ": keep-alive\n\ndata: ");
    let usage_first = CHAT
        .replace(
            "{\"id\":\"c\",\"choices\":[{",
            "{\"usage\":null,\"id\":\"c\",\"choices\":[{",
        )
        .replace("}],\"usage\":null}", "}]}");
    let e = stripped_chat();
    for (name, input, expected) in [
        ("spaced", spaced(CHAT), spaced(&e)),
        ("crlf", crlf(CHAT), crlf(&e)),
        ("cr", cr(CHAT), cr(&e)),
        ("mixed", mixed(CHAT), mixed(&e)),
        ("nospace", nospace(CHAT), nospace(&e)),
        (
            "comments",
            comments(CHAT),
            // the usage chunk's comment stays: only the event itself goes
            comments(&e).replace("data: [DONE]", ": keep-alive\n\ndata: [DONE]"),
        ),
        ("usage-first", usage_first, e.clone()),
    ] {
        for n in [1, 2, 3, 13, input.len()] {
            let (out, s) = run(input.as_bytes(), n, false);
            assert_eq!(out, input.as_bytes(), "{name}");
            assert_eq!(s.usage(), Some(USAGE), "{name}");
            assert!(s.complete(), "{name}");
            assert_eq!(s.text_bytes(), 2, "{name}");
            let (stripped, s) = run(input.as_bytes(), n, true);
            assert_eq!(
                String::from_utf8(stripped).unwrap(),
                expected,
                "{name} split {n}"
            );
            assert_eq!(s.usage(), Some(USAGE), "{name}");
        }
    }
}

/// A `\r` that ends a read ends the event it completes: the `\n` after it, in the next read (or
/// the one after an empty read), goes with that event, dropped when it is.
#[test]
fn a_crlf_cut_between_its_two_bytes_follows_its_event() {
    let crlf = CHAT.replace('\n', "\r\n");
    let expected = stripped_chat().replace('\n', "\r\n");
    for strip in [false, true] {
        let mut s = SseScanner::new(strip);
        let mut out = Vec::new();
        for piece in crlf.split_inclusive('\r') {
            out.extend_from_slice(&s.feed(Bytes::copy_from_slice(piece.as_bytes())));
            out.extend_from_slice(&s.feed(Bytes::new()));
        }
        out.extend_from_slice(&s.finish());
        let want = if strip { &expected } else { &crlf };
        assert_eq!(String::from_utf8(out).unwrap(), *want, "strip {strip}");
        assert_eq!(s.usage(), Some(USAGE));
        assert_eq!(s.events(), 5);
    }
}

#[test]
fn crlf_and_responses_api_events_with_or_without_event_lines() {
    let input = "event: response.created\r\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\r\n\r\nevent: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":7,\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":4,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}\r\n\r\n";
    let no_event_lines: String = input
        .split("\r\n")
        .filter(|l| !l.starts_with("event:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    for text in [input, no_event_lines.as_str()] {
        for n in [1, 5, text.len()] {
            let (out, s) = run(text.as_bytes(), n, true);
            assert_eq!(out, text.as_bytes());
            assert_eq!(
                s.usage(),
                Some(Usage {
                    input: 7,
                    cached: 3,
                    output: 4,
                    reasoning: 1
                })
            );
            assert!(s.complete(), "{text}");
        }
    }
}

#[test]
fn truncated_stream_is_not_complete_and_tail_is_forwarded() {
    let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi";
    let (out, s) = run(input.as_bytes(), 3, false);
    assert_eq!(out, input.as_bytes());
    assert!(!s.complete());
    assert_eq!(s.usage(), None);
    assert_eq!(s.text_bytes(), 1);
}

#[test]
fn a_whole_chunk_of_complete_events_is_not_copied() {
    let mut s = SseScanner::new(false);
    let chunk = Bytes::from_static(CHAT.as_bytes());
    let out = s.feed(chunk.clone());
    assert_eq!(out.as_ptr(), chunk.as_ptr());
}

#[test]
fn an_event_over_the_cap_is_dropped_and_flagged() {
    let mut s = SseScanner::with_limit(false, 100);
    let first = s.feed(Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":\""));
    assert_eq!(first.as_ref(), b"data: {\"a\":1}\n\n");
    assert!(!s.overflowed());
    for _ in 0..20 {
        assert!(s.feed(Bytes::from_static(b"xxxxxxxxxx")).is_empty());
    }
    assert!(s.overflowed());
    assert!(
        s.finish().is_empty(),
        "the oversized event is never forwarded"
    );
}

#[test]
fn events_of_a_whole_body() {
    let crlf = ": hi\r\n\r\nevent:x\r\ndata:{\"a\":1}\r\ndata: 2\r\n\r\ndata: [DONE]";
    // the same with the SSE specification's other line ends: `\r` alone, and all three mixed
    let cr = crlf.replace("\r\n", "\r");
    let mixed = ": hi\n\revent:x\rdata:{\"a\":1}\ndata: 2\r\n\rdata: [DONE]\r";
    for body in [crlf, &cr, mixed] {
        let evs: Vec<_> = events(body.as_bytes()).collect();
        assert_eq!(evs.len(), 3, "{body:?}");
        assert!(evs[0].data.is_none());
        assert_eq!(evs[1].name, Some(&b"x"[..]));
        assert_eq!(evs[1].data.as_deref(), Some(&b"{\"a\":1}\n2"[..]));
        assert_eq!(evs[2].data.as_deref(), Some(&b"[DONE]"[..]));
    }
    // one data line and its blank line, in each spelling (the short path)
    for ev in [
        "data: 1\n\n",
        "data: 1\r\r",
        "data: 1\r\n\r\n",
        "data: 1\r\n\r",
        "data: 1\r",
    ] {
        assert_eq!(
            Event::parse(ev.as_bytes()).data.as_deref(),
            Some(&b"1"[..]),
            "{ev:?}"
        );
    }
    // a `\r` ends a line: what follows it is another line, never part of the data
    assert_eq!(
        Event::parse(b"data: 1\revent: e\r\r").data.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(Event::parse(b"data: 1\revent: e\r\r").name, Some(&b"e"[..]));
}
