use super::*;
use crate::usage::Usage;

/// The chunks of real streams after the first few are read by their shape: chat deltas with an
/// `obfuscation` pad (compact, and spaced as other servers write them), tool call arguments, and
/// Responses text deltas with their sequence numbers. Each reads as it does alone.
#[test]
fn chunks_of_real_streams_are_read_by_their_shape() {
    let chat = |pad: &str, text: &str| {
        format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_1","choices":[{{"index":0,"delta":{{"content":"{text}"}},"logprobs":null,"finish_reason":null}}],"usage":null,"obfuscation":"{pad}"}}"#
        )
    };
    let spaced = |_: &str, text: &str| {
        format!(
            "{{\"id\": \"c\", \"created\": 17, \"choices\": [{{\"index\": 0, \"delta\": {{\"content\": \"{text}\"}}, \"finish_reason\": null}}],\r\n \"usage\": null}}"
        )
    };
    let tool = |_: &str, text: &str| {
        format!(
            r#"{{"id":"c","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{text}"}}}}]}}}}]}}"#
        )
    };
    let responses = |n: &str, text: &str| {
        format!(
            r#"{{"type":"response.output_text.delta","sequence_number":{n},"item_id":"msg_1","output_index":0,"content_index":0,"delta":"{text}","logprobs":[]}}"#
        )
    };
    // the `type` after a place that changes length
    let numbered = |n: &str, text: &str| {
        format!(r#"{{"sequence_number":{n},"type":"response.output_text.delta","delta":"{text}"}}"#)
    };
    type Chunk = dyn Fn(&str, &str) -> String;
    let makers: [&Chunk; 5] = [&chat, &spaced, &tool, &responses, &numbered];
    for make in makers {
        let memory = &mut StreamMemory::default();
        for (i, text) in ["Hel", "lo", " wor\\nld", "caf\\u00e9", "", "\\ud800"]
            .iter()
            .enumerate()
        {
            let data = make(&(7 * 10usize.pow(i as u32)).to_string(), text);
            let shaped = memory.shape.read(data.as_bytes(), &mut |_| {}).is_some();
            let alone = read_all(|sink| Payload::parse_with(data.as_bytes(), sink));
            let next = read_all(|sink| Payload::parse_next(data.as_bytes(), memory, sink));
            assert_eq!(next, alone, "{data}");
            // the first is read whole; so is the lone surrogate (which is not text)
            let want = i > 0 && !text.contains("d800");
            assert_eq!(shaped, want, "{i} {data}");
            assert_eq!(alone.is_some(), !text.contains("d800"));
        }
    }
}

/// What a reading gives: its texts, usage, `choices`, text bytes, `type` and usage bytes.
type Reading = (
    Vec<String>,
    Option<Usage>,
    Option<usize>,
    u64,
    Option<String>,
    Option<Vec<u8>>,
);

fn read_all<'a>(read: impl FnOnce(&mut dyn FnMut(&str)) -> Option<Payload<'a>>) -> Option<Reading> {
    let mut texts = Vec::new();
    let p = read(&mut |t| texts.push(t.to_owned()))?;
    Some((
        texts,
        p.usage(),
        p.choices,
        p.text_bytes,
        p.kind.map(|k| k.into_owned()),
        p.top_usage.map(<[u8]>::to_vec),
    ))
}

/// A payload is remembered only within the limits: four texts, sixteen places, 4 KiB. One past
/// them is read whole each time, and hands on all its texts.
#[test]
fn payloads_past_the_limits_are_read_whole() {
    let texts = |n: usize, t: &str| {
        let choices: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"delta":{{"content":"{t}{i}"}}}}"#))
            .collect();
        format!(r#"{{"choices":[{}]}}"#, choices.join(","))
    };
    let skipped = |n: usize, t: &str| {
        let members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":"{t}""#)).collect();
        format!(r#"{{{}}}"#, members.join(","))
    };
    let long = |_: usize, t: &str| format!(r#"{{"delta":"{t}","pad":"{}"}}"#, "x".repeat(4096));
    type Make = dyn Fn(usize, &str) -> String;
    // (payload, size, remembered, texts handed on)
    let cases: [(&Make, usize, bool, usize); 5] = [
        (&texts, 4, true, 4),
        (&texts, 5, false, 5),
        (&skipped, 16, true, 0),
        (&skipped, 17, false, 0),
        (&long, 0, false, 1),
    ];
    for (make, n, kept, n_texts) in cases {
        let memory = &mut StreamMemory::default();
        let first = make(n, "a");
        assert!(Payload::parse_next(first.as_bytes(), memory, &mut |_| {}).is_some());
        let next = make(n, "bb");
        let shaped = memory.shape.read(next.as_bytes(), &mut |_| {}).is_some();
        assert_eq!(shaped, kept, "{n} {next}");
        let alone = read_all(|sink| Payload::parse_with(next.as_bytes(), sink));
        let read = read_all(|sink| Payload::parse_next(next.as_bytes(), memory, sink));
        assert_eq!(read.as_ref().map(|r| r.0.len()), Some(n_texts));
        assert_eq!(read, alone);
    }
}

/// A chunk read by its shape knows where its `"usage": null` member is (the bytes left out when
/// the client did not ask for usage), moved by the places before it: where it would be found, in
/// every spacing and wherever the member stands (first: it and the comma after it go).
#[test]
fn chunks_read_by_their_shape_know_where_their_null_usage_is() {
    let spaced = |t: &str| {
        format!(
            r#"{{"id": "c", "choices": [{{"delta": {{"content": "{t}"}}}}], "usage": null, "obfuscation": "{t}"}}"#
        )
    };
    let compact = |t: &str| {
        format!(
            r#"{{"created":{},"choices":[{{"delta":{{"content":"{t}"}}}}],"usage":null}}"#,
            t.len()
        )
    };
    let first = |t: &str| format!("{{\"usage\" :null ,\r\n \"choices\":[{{\"text\":\"{t}\"}}]}}");
    type Make = dyn Fn(&str) -> String;
    // each chunk, and the bytes its `"usage": null` member takes
    let cases: [(&Make, &str); 3] = [
        (&spaced, r#", "usage": null"#),
        (&compact, r#","usage":null"#),
        (&first, "\"usage\" :null ,\r\n "),
    ];
    for (make, cut) in cases {
        let memory = &mut StreamMemory::default();
        for (i, text) in ["a", "longer text", "", "caf\\u00e9"].iter().enumerate() {
            let data = make(text);
            // after the first, each chunk is read by the shape
            let shaped = memory.shape.read(data.as_bytes(), &mut |_| {}).is_some();
            assert_eq!(shaped, i > 0, "{data}");
            let p = Payload::parse_next(data.as_bytes(), memory, &mut |_| {}).unwrap();
            let found = member_span(data.as_bytes(), p.top_usage.unwrap()).unwrap();
            assert_eq!(p.null_usage, Some(found.clone()), "{data}");
            assert_eq!(data.get(found.clone()), Some(cut), "{data}");
        }
    }
}
