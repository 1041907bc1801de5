//! The cursor-based readers against the serde readers they replaced ([`super::oracle`]), on the
//! same bytes: payloads and bodies as servers write them, the same with bytes deleted, inserted,
//! replaced or cut off, nesting at serde_json's limit, and SSE event lines. Every reading must
//! agree, failures included, and so must the text handed on before a failure.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::oracle;
use super::payload::{json_body_usage, member_span, Payload, StreamMemory};
use super::sse::Event;
use crate::json::scan::RepeatedPrefix;
use crate::json::span_of;
use crate::json::testgen::{edits, leaf, mutate, number, payload, plain, renderings, string, Json};

fn agree(data: &[u8]) -> Result<(), TestCaseError> {
    agree_after(data, None)
}

/// [`agree`], reading `data` as the next payload of a stream whose earlier ones left `repeated`.
fn agree_after(data: &[u8], repeated: Option<&mut RepeatedPrefix>) -> Result<(), TestCaseError> {
    agree_by(data, |sink| Payload::parse_after(data, repeated, sink))
}

/// [`agree`], reading `data` as the next payload of a stream whose earlier ones left `memory`.
fn agree_next(data: &[u8], memory: &mut StreamMemory) -> Result<(), TestCaseError> {
    agree_by(data, |sink| Payload::parse_next(data, memory, sink))
}

/// `read`'s reading of `data` against serde's.
fn agree_by<'a>(
    data: &'a [u8],
    read: impl FnOnce(&mut dyn FnMut(&str)) -> Option<Payload<'a>>,
) -> Result<(), TestCaseError> {
    let mut texts = Vec::new();
    let new = read(&mut |t| texts.push(t.to_owned()));
    let mut old_texts = Vec::new();
    let old = oracle::Payload::parse_with(data, &mut |t| old_texts.push(t.to_owned()));
    prop_assert_eq!(&texts, &old_texts, "{:?}", String::from_utf8_lossy(data));
    match (new, old) {
        (Some(n), Some(o)) => {
            prop_assert_eq!(n.top_usage, o.top_usage.map(|u| u.get().as_bytes()));
            prop_assert_eq!(
                n.top_usage.map(|u| span_of(data, u)),
                o.top_usage.map(|u| span_of(data, u.get().as_bytes()))
            );
            prop_assert_eq!(n.usage(), o.usage());
            prop_assert_eq!(n.response_usage(), o.response_usage());
            prop_assert_eq!(n.choices, o.choices);
            prop_assert_eq!(n.text_bytes, o.text_bytes);
            prop_assert_eq!(n.kind, o.kind);
            // where a reading places the `"usage": null` member, it is where it is found
            if let Some(span) = n.null_usage {
                let found = n.top_usage.and_then(|u| member_span(data, u));
                prop_assert_eq!(Some(span), found, "{:?}", String::from_utf8_lossy(data));
            }
        }
        (n, o) => prop_assert_eq!(
            n.is_some(),
            o.is_some(),
            "{:?}",
            String::from_utf8_lossy(data)
        ),
    }
    prop_assert_eq!(
        json_body_usage(data),
        oracle::json_body_usage(data),
        "{:?}",
        String::from_utf8_lossy(data)
    );
    Ok(())
}

fn check(data: &[u8]) {
    if let Err(e) = agree(data) {
        panic!("{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_format_reads_as_serde_did(j in payload(), noise in vec(any::<u8>(), 0..64)) {
        for data in renderings(&j, &noise) {
            agree(&data)?;
        }
    }

    #[test]
    fn broken_payloads_read_as_serde_did(
        j in payload(),
        noise in vec(any::<u8>(), 0..64),
        e in edits(),
    ) {
        for mut data in renderings(&j, &noise) {
            mutate(&mut data, &e);
            agree(&data)?;
        }
    }

    /// A stream's chunks after the first resume after the members they repeat: each still reads
    /// as serde_json reads it alone, whether it repeats them, changes them or breaks them.
    #[test]
    fn each_chunk_of_a_stream_reads_as_serde_did(
        (first, next) in chunk_pair(),
        noise in vec(any::<u8>(), 0..64),
        e in edits(),
    ) {
        for (a, b) in renderings(&first, &noise).iter().zip(renderings(&next, &noise)) {
            let mut repeated = RepeatedPrefix::default();
            agree_after(a, Some(&mut repeated))?;
            agree_after(&b, Some(&mut repeated))?;
            let mut broken = b.clone();
            mutate(&mut broken, &e);
            agree_after(&broken, Some(&mut repeated))?;
            agree_after(a, Some(&mut repeated))?;
        }
    }

    /// Chunks that differ from the last in some strings and numbers are read by their shape
    /// ([`Payload::parse_next`]): each still reads as serde_json reads it alone, whatever the
    /// strings and numbers became, and after any break.
    #[test]
    fn chunks_alike_read_as_serde_did(
        (first, _) in chunk_pair(),
        with in vec(prop::option::of(prop_oneof![
            string().prop_map(Json::Str),
            number().prop_map(Json::Num),
            leaf(),
        ]), 0..24),
        noise in vec(any::<u8>(), 0..64),
        e in edits(),
    ) {
        let second = vary(&first, &mut with.iter());
        let third = vary(&second, &mut with.iter().rev());
        let all = [&first, &second, &third].map(|j| renderings(j, &noise));
        for i in 0..all[0].len() {
            let [a, b, c] = [0, 1, 2].map(|k| all[k].get(i).cloned().unwrap_or_default());
            let memory = &mut StreamMemory::default();
            for data in [&a, &b, &c, &a] {
                agree_next(data, memory)?;
            }
            let mut broken = c.clone();
            mutate(&mut broken, &e);
            agree_next(&broken, memory)?;
            agree_next(&b, memory)?;
        }
    }

    #[test]
    fn event_lines_read_as_before(lines in vec(
        prop_oneof![
            select(&["data:", "data: ", "data:  ", "event:", "event: ", ": c", "", "id: 1", "dat", "Data:"][..])
                .prop_map(|s| s.as_bytes().to_vec()),
            vec(any::<u8>(), 0..6),
            Just(b"{\"a\":1}".to_vec()),
        ],
        0..12,
    ), ends in vec(select(&["\n", "\r\n", "\r", ""][..]), 12)) {
        let mut event = Vec::new();
        for (line, end) in lines.iter().zip(&ends) {
            event.extend_from_slice(line);
            event.extend_from_slice(end.as_bytes());
        }
        let new = Event::parse(&event);
        let (name, data) = oracle::event(&event);
        prop_assert_eq!(new.name, name);
        prop_assert_eq!(new.data, data);
    }
}

/// Two chunks of one stream: the same leading members (`id`, `created`...), each repeated, changed,
/// or (a number) gone on by a digit in the second, then any payload's members.
fn chunk_pair() -> impl Strategy<Value = (Json, Json)> {
    let names = &["id", "object", "created", "model", "system_fingerprint"][..];
    // mostly ASCII, as servers write these (only ASCII leading members are remembered)
    let value = prop_oneof![
        3 => "[a-z0-9_-]{0,12}".prop_map(|s| Json::Str(plain(&s))),
        2 => number().prop_map(Json::Num),
        1 => leaf(),
    ];
    let lead = vec((select(names), value.clone(), value, 0u8..3), 1..5);
    (lead, payload(), payload()).prop_map(|(lead, a, b)| {
        let chunk = |second: bool, rest: Json| {
            let mut members: Vec<_> = lead
                .iter()
                .map(|(k, v, other, how)| {
                    let v = match (second, how, v) {
                        (true, 0, Json::Num(n)) => Json::Num(format!("{n}7")),
                        (true, 1, _) => other.clone(),
                        _ => v.clone(),
                    };
                    (plain(k), v)
                })
                .collect();
            match rest {
                Json::Obj(m) => members.extend(m),
                other => members.push((plain("choices"), other)),
            }
            Json::Obj(members)
        };
        (chunk(false, a), chunk(true, b))
    })
}

/// `j` with its strings and numbers that are not keys replaced in turn by `with`'s (`None`: kept).
fn vary(j: &Json, with: &mut dyn Iterator<Item = &Option<Json>>) -> Json {
    match j {
        Json::Str(_) | Json::Num(_) => match with.next() {
            Some(Some(v)) => v.clone(),
            _ => j.clone(),
        },
        Json::Arr(items) => Json::Arr(items.iter().map(|v| vary(v, with)).collect()),
        Json::Obj(members) => Json::Obj(
            members
                .iter()
                .map(|(k, v)| (k.clone(), vary(v, with)))
                .collect(),
        ),
        Json::Null | Json::Bool(_) => j.clone(),
    }
}

/// Payloads by hand: what the generators may miss.
#[test]
fn edge_cases_read_as_serde_did() {
    for data in [
        "",
        "{}",
        "[]",
        "null",
        "{\"usage\":null}",
        "{\"usage\":null,\"usage\":{\"prompt_tokens\":1}}",
        "{\"usage\":{\"prompt_tokens\":1},\"usage\":null}",
        "{\"usage\":{\"prompt_tokens\":1,\"input_tokens\":2}}",
        "{\"usage\":[3,4]}",
        "{\"usage\":[3,4,null,{\"reasoning_tokens\":1}]}",
        "{\"usage\":[3,4,null,null,5]}",
        "{\"usage\":[3,4,[5]]}",
        "{\"usage\":[3,4,[5,6]]}",
        "{\"usage\":{\"prompt_tokens_details\":[]}}",
        "{\"usage\":{\"prompt_tokens_details\":[2]}}",
        "{\"usage\":{\"prompt_tokens_details\":[2,3]}}",
        "{\"usage\":{\"completion_tokens_details\":{\"reasoning_tokens\":1,\"reasoning_tokens\":2}}}",
        "{\"usage\":{\"completion_tokens_details\":\"x\"}}",
        "{\"usage\":{\"prompt_tokens\":-1}}",
        "{\"usage\":{\"prompt_tokens\":1.0}}",
        "{\"usage\":{\"prompt_tokens\":18446744073709551616}}",
        "{\"us\\u0061ge\":{\"prompt_tokens\":7}}",
        "{\"response\":{\"usage\":{\"input_tokens\":1},\"usage\":null}}",
        "{\"response\":{\"usage\":null,\"x\":1}}",
        "{\"response\":[{\"input_tokens\":5}]}",
        "{\"response\":[{\"input_tokens\":5},1]}",
        "{\"response\":[]}",
        "{\"response\":{\"\\ud800\":1,\"usage\":{\"input_tokens\":1}}}",
        "{\"response\":{\"x\":\"\\ud800\",\"usage\":{\"input_tokens\":1}}}",
        "{\"response\":\"usage\"}",
        "{\"type\":null}",
        "{\"type\":\"a\",\"type\":null}",
        "{\"type\":1}",
        "{\"type\":\"response.completed\"}",
        "{\"delta\":\"a\",\"delta\":\"b\",\"x\":}",
        "{\"delta\":\"a\"}x",
        "{\"delta\":\"a\"} \r\n",
        "{\"delta\":1e400}",
        "{\"delta\":[1e400]}",
        "{\"x\":1e400}",
        "{\"delta\":\"\\ud800\"}",
        "{\"x\":\"\\ud800\"}",
        "{\"delta\":{\"\\ud800\":1}}",
        "{\"delta\":{\"a\":\"\\ud800\"}}",
        "{\"choices\":{\"\\udc00\":1}}",
        "{\"choices\":\"\\udc00\"}",
        "{\"choices\":[\"\\udc00\"]}",
        "{\"choices\":[[[{\"text\":\"deep\"}]]],\"choices\":5}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\",\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}}, {\"text\":\"b\"}]}",
        "{\"choices\":[{\"message\":{\"content\":[{\"text\":\"part\"}]}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":nul}",
        "{\"choices\":[1,true,null,-0.5e-3,\"s\"]}",
        "{\"choices\":[1e400]}",
        "{\"choices\":[],}",
        "{\"choices\":[,]}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":1,\"usage\":{\"prompt_tokens\":3}, \"b\":[1,2,{\"c\":\"\\\"usage\\\"\"}]}",
    ] {
        check(data.as_bytes());
    }
    // not UTF-8: where serde_json checks text, and where it does not
    for data in [
        &b"{\"x\":\"\xff\"}"[..],
        b"{\"\xff\":1}",
        b"{\"delta\":\"\xff\"}",
        b"{\"delta\":\"ok\",\"type\":\"\xff\"}",
        b"{\"usage\":{\"prompt_tokens\":1,\"x\":\"\xff\"}}",
        b"{\"response\":{\"x\":\"\xc3\"}}",
        b"{\"choices\":[{\"delta\":{\"content\":\"a\"},\"x\":\"\xff\"}]}",
        b"{\"choices\":[{\"delta\":{\"content\":\"a\"}},{\"delta\":{\"content\":\"\xe2\x82\"}}]}",
        b"{\"choices\":{\"a\":\"\xff\"}}",
        b"{\"choices\":\"\xff\"}",
        b"{\"delta\":[\"\xff\"]}",
    ] {
        check(data);
    }
}

/// Visited containers count towards serde_json's limit (127 levels read, the 128th is an error),
/// skipped ones never do; text before the fault is handed on either way.
#[test]
fn nesting_at_serde_jsons_limit_reads_as_serde_did() {
    let templates: [(&str, &str, &str, &str, &str); 8] = [
        ("{\"choices\":", "[", "\"x\"", "]", "}"),
        (
            "{\"choices\":[",
            "{\"delta\":",
            "{\"content\":\"t\"}",
            "}",
            "]}",
        ),
        (
            "{\"choices\":[{\"message\":",
            "[",
            "{\"text\":\"t\"}",
            "]",
            "}]}",
        ),
        ("{\"delta\":", "[", "0", "]", "}"),
        ("{\"x\":", "{\"a\":[", "0", "]}", "}"),
        ("{\"usage\":", "[", "null", "]", "}"),
        ("{\"response\":", "{\"usage\":", "null", "}", "}"),
        (
            "{\"choices\":[{\"text\":\"a\"},",
            "[",
            "{\"text\":\"b\"}",
            "]",
            "]}",
        ),
    ];
    for (head, open, inner, close, tail) in templates {
        for n in (0..=140).chain([500, 3000]) {
            let deep = format!("{head}{}{inner}{}{tail}", open.repeat(n), close.repeat(n));
            check(deep.as_bytes());
            let cut = format!("{head}{}{inner}", open.repeat(n));
            check(cut.as_bytes());
        }
    }
}
