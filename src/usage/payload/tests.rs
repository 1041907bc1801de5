use super::*;

fn strip(obj: &str) -> Option<String> {
    let p = Payload::parse(obj.as_bytes())?;
    let r = member_span(obj.as_bytes(), p.top_usage?)?;
    let mut s = obj.to_owned();
    s.replace_range(r, "");
    Some(s)
}

#[test]
fn usage_member_is_removed_in_any_spacing_and_position() {
    for (input, want) in [
        (r#"{"a":1,"usage":null}"#, r#"{"a":1}"#),
        (r#"{"a": 1, "usage": null}"#, r#"{"a": 1}"#),
        (r#"{"usage":null,"a":1}"#, r#"{"a":1}"#),
        (r#"{ "usage" : null , "a" : 1 }"#, r#"{ "a" : 1 }"#),
        (r#"{"a":1,"usage":null,"b":[2]}"#, r#"{"a":1,"b":[2]}"#),
        (r#"{"usage":null}"#, r#"{}"#),
        (
            r#"{"a":"\"usage\":null","usage":null}"#,
            r#"{"a":"\"usage\":null"}"#,
        ),
        (r#"{"u\"":1,"usage":null}"#, r#"{"u\"":1}"#),
        ("{\"a\":1,\r\n  \"usage\": null\r\n}", "{\"a\":1\r\n}"),
    ] {
        assert_eq!(strip(input).as_deref(), Some(want), "{input}");
    }
}

/// The members a stream repeats are read once; where the next payload differs in them, or a
/// number among them goes on, it is read whole.
#[test]
fn a_stream_reads_its_repeated_members_once() {
    fn read(repeated: &mut RepeatedPrefix, data: &str) -> Option<(Option<usize>, u64)> {
        let p = Payload::parse_after(data.as_bytes(), Some(repeated), &mut |_| {})?;
        Some((p.choices, p.text_bytes))
    }
    let chunk = |created: &str, content: &str| {
        format!(
            r#"{{"id": "c1", "created": {created}, "model": "m", "choices": [{{"delta": {{"content": "{content}"}}}}], "usage": null}}"#
        )
    };
    let k = &mut RepeatedPrefix::default();
    assert_eq!(read(k, &chunk("17", "ab")), Some((Some(1), 2)));
    assert_eq!(k.bytes(), br#"{"id": "c1", "created": 17, "model": "m""#);
    assert_eq!(read(k, &chunk("17", "abc")), Some((Some(1), 3)));
    // what is remembered ends on a string: a number before it may change
    assert_eq!(read(k, &chunk("1732", "abcd")), Some((Some(1), 4)));
    assert_eq!(k.bytes(), br#"{"id": "c1", "created": 1732, "model": "m""#);
    // remembering up to a number would have read `2` as the next token
    let k = &mut RepeatedPrefix::default();
    assert_eq!(
        read(k, r#"{"id": "c1", "n": 1, "choices": []}"#),
        Some((Some(0), 0))
    );
    assert_eq!(k.bytes(), br#"{"id": "c1""#);
    assert_eq!(
        read(k, r#"{"id": "c1", "n": 12, "choices": []}"#),
        Some((Some(0), 0))
    );
    assert_eq!(read(k, r#"{"id": "c1", "n": 1 2, "choices": []}"#), None);
    assert_eq!(read(k, r#"{"id": "c1""#), None);
}

#[test]
fn payload_view_reads_any_format() {
    let a = Payload::parse(br#"{"usage":{"prompt_tokens":3,"completion_tokens":2},"choices":[]}"#)
        .unwrap();
    let b = Payload::parse(b"{ \"choices\" : [ ] ,\n \"usage\" : { \"completion_tokens\" : 2 , \"prompt_tokens\" : 3 } }").unwrap();
    assert_eq!(a.usage(), b.usage());
    assert_eq!((a.choices, b.choices), (Some(0), Some(0)));
    let t = Payload::parse(
        br#"{"choices":[{"delta":{"content":"caf\u00e9","tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}],"usage":null}"#,
    )
    .unwrap();
    assert_eq!(t.text_bytes, 5 + 2);
    let mut texts = Vec::new();
    Payload::parse_with(
        br#"{"choices":[{"delta":{"content":"caf\u00e9","tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}],"usage":null}"#,
        &mut |t| texts.push(t.to_owned()),
    )
    .unwrap();
    assert_eq!(texts, ["café", "{}"]);
    assert_eq!(t.usage(), None);
    let r = Payload::parse(br#"{"type":"response.output_text.delta","delta":"Hi"}"#).unwrap();
    assert_eq!(
        (r.text_bytes, r.kind.as_deref()),
        (2, Some("response.output_text.delta"))
    );
    let c = Payload::parse(br#"{"type": "response.completed", "response": {"usage": {"input_tokens": 7, "output_tokens": 4}}}"#).unwrap();
    assert_eq!(c.usage().map(|u| (u.input, u.output)), Some((7, 4)));
    assert!(Payload::parse(b"[1]").is_none());
    assert!(Payload::parse(b"{\"a\":").is_none());
}

#[test]
fn json_body_usage_in_any_order() {
    let first = br#"{"usage": {"prompt_tokens": 5, "completion_tokens": 1}, "output": [{"usage": {"input_tokens": 1}}]}"#;
    assert_eq!(json_body_usage(first).unwrap().map(|u| u.input), Some(5));
    assert_eq!(json_body_usage(br#"{"usage":null}"#), Some(None));
    assert!(json_body_usage(br#"{"usage":{"prompt_tokens":5}"#).is_none());
}
