//! One SSE `data:` payload read in a single pass with a borrowed serde view: usage (top-level, or
//! a Responses event's `response.usage`), the number of `choices`, the generated text (handed
//! on as it is read), and the event `type`. Whatever the spacing, key order or escapes, the answer is the same.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{RawUsage, Usage};
use crate::json::{skip_other_values, span_in, KeyStr};

/// What a data payload says that matters to metering.
#[derive(Default)]
pub struct Payload<'a> {
    /// The last top-level `usage` member, raw (`null` included).
    pub top_usage: Option<&'a RawValue>,
    /// `response.usage` of a Responses event.
    response_usage: Option<RawUsage>,
    /// How many `choices` (when it is an array).
    pub choices: Option<usize>,
    /// Bytes of generated text (decoded): `choices[].delta.content`, `choices[].text`, tool call
    /// `arguments`, a Responses `delta`, refusals.
    pub text_bytes: u64,
    /// The Responses event `type`.
    pub kind: Option<Cow<'a, str>>,
}

impl<'a> Payload<'a> {
    /// Reads a payload; `None` when it is not a JSON object.
    pub fn parse(data: &'a [u8]) -> Option<Payload<'a>> {
        Payload::parse_with(data, &mut |_| {})
    }

    /// [`Payload::parse`], handing each piece of generated text (decoded) to `on_text` as it is
    /// read: no copy or allocation unless the text has escapes.
    pub fn parse_with(data: &'a [u8], on_text: &mut dyn FnMut(&str)) -> Option<Payload<'a>> {
        let mut de = serde_json::Deserializer::from_slice(data);
        let mut bytes = 0u64;
        let mut sink = |t: &str| {
            bytes += t.len() as u64;
            on_text(t);
        };
        let mut p = de::Deserializer::deserialize_map(&mut de, PayloadVisitor(&mut sink)).ok()?;
        de.end().ok()?;
        p.text_bytes = bytes;
        Some(p)
    }

    /// The usage this payload reports, if any.
    pub fn usage(&self) -> Option<Usage> {
        let top = self
            .top_usage
            .filter(|u| u.get() != "null")
            .and_then(|u| serde_json::from_str::<RawUsage>(u.get()).ok());
        top.or(self.response_usage.clone()).map(Usage::from)
    }
}

/// The Responses API's terminal events: the stream is complete after one of them.
pub fn is_terminal_response_event(name: &[u8]) -> bool {
    matches!(
        name,
        b"response.completed" | b"response.failed" | b"response.incomplete"
    )
}

/// [`is_terminal_response_event`] for a payload's `type`.
pub fn is_terminal_response_event_str(kind: &str) -> bool {
    is_terminal_response_event(kind.as_bytes())
}

struct PayloadVisitor<'s>(Sink<'s>);

impl<'de> Visitor<'de> for PayloadVisitor<'_> {
    type Value = Payload<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload<'de>, A::Error> {
        let mut p = Payload::default();
        while let Some(key) = map.next_key::<KeyStr<'de>>()? {
            match key.0.as_ref() {
                "usage" => p.top_usage = Some(map.next_value()?),
                "choices" => p.choices = map.next_value_seed(Choices(&mut *self.0))?,
                "response" => {
                    // a Responses event's object; any other shape carries no usage
                    let r: &RawValue = map.next_value()?;
                    p.response_usage = serde_json::from_str::<ResponseObj>(r.get())
                        .ok()
                        .and_then(|r| r.usage);
                }
                "delta" => map.next_value_seed(Text(&mut *self.0))?,
                "type" => p.kind = map.next_value::<Option<KeyStr<'de>>>()?.map(|k| k.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// Where the texts found go, as they are read (no collection in between).
type Sink<'s> = &'s mut dyn FnMut(&str);

/// A string value is generated text; anything else is not.
struct Text<'s>(Sink<'s>);

impl<'de> DeserializeSeed<'de> for Text<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        (self.0)(s);
        Ok(())
    }
    skip_other_values!(());
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// `choices`: how many (when it is an array), their generated text into the sink.
struct Choices<'s>(Sink<'s>);

impl<'de> DeserializeSeed<'de> for Choices<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Choices<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("choices")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<usize>, A::Error> {
        let mut n = 0;
        while seq.next_element_seed(Texts(&mut *self.0))?.is_some() {
            n += 1;
        }
        Ok(Some(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<usize>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<usize>, E> {
        Ok(None)
    }
    skip_other_values!(None);
}

/// The generated text in a choice, a delta, a message, a tool call or its function: the string
/// values of `content`, `text`, `refusal` and `arguments`, at any depth of `delta`, `message`,
/// `tool_calls` and `function`.
struct Texts<'s>(Sink<'s>);

impl<'de> DeserializeSeed<'de> for Texts<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Texts<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<KeyStr<'de>>()? {
            match key.0.as_ref() {
                "content" | "text" | "refusal" | "arguments" => {
                    map.next_value_seed(Text(&mut *self.0))?
                }
                "delta" | "message" | "function" | "tool_calls" => {
                    map.next_value_seed(Texts(&mut *self.0))?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Texts(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    skip_other_values!(());
}

#[derive(Deserialize)]
struct ResponseObj {
    #[serde(default)]
    usage: Option<RawUsage>,
}

/// The bytes to remove to take the member whose value is `value` out of the JSON object `obj`,
/// leaving every other byte as it was: from the end of the previous member's value (its comma
/// and spacing included) to the end of this one; for a first member, from its key to the next
/// key. `None` if `obj` is not shaped as expected (then nothing is removed).
pub fn member_span(obj: &[u8], value: &RawValue) -> Option<Range<usize>> {
    let v = span_in(obj, value);
    if obj.get(v.clone())? != value.get().as_bytes() {
        return None;
    }
    // back from the value: spaces, ':', spaces, the key's closing quote
    let mut i = v.start;
    i = skip_ws_back(obj, i);
    if *obj.get(i.checked_sub(1)?)? != b':' {
        return None;
    }
    i = skip_ws_back(obj, i - 1);
    if *obj.get(i.checked_sub(1)?)? != b'"' {
        return None;
    }
    // the key's opening quote: the previous quote not escaped (keys hold no raw quotes)
    let mut k = i - 1;
    loop {
        k = memchr::memrchr(b'"', obj.get(..k)?)?;
        let slashes = obj
            .get(..k)?
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if slashes % 2 == 0 {
            break;
        }
    }
    let before = skip_ws_back(obj, k);
    match *obj.get(before.checked_sub(1)?)? {
        // a member before it: take its comma and what follows, up to this value's end
        b',' => Some(before - 1..v.end),
        // the first member: take it and the comma after it, up to the next key
        b'{' => {
            let after = skip_ws(obj, v.end);
            match *obj.get(after)? {
                b',' => Some(k..skip_ws(obj, after + 1)),
                b'}' => Some(k..v.end),
                _ => None,
            }
        }
        _ => None,
    }
}

fn skip_ws_back(b: &[u8], mut i: usize) -> usize {
    while i > 0 && b.get(i - 1).is_some_and(u8::is_ascii_whitespace) {
        i -= 1;
    }
    i
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The top-level `usage` of a whole JSON body (the last non-null one), read with a borrowed view
/// whatever the spacing and key order. `None` when the body is not one whole JSON object (a body
/// longer than the kept window, say): the caller may then look for it by other means.
pub fn json_body_usage(body: &[u8]) -> Option<Option<Usage>> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Usage>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Usage>, A::Error> {
            let mut usage = None;
            while let Some(key) = map.next_key::<KeyStr<'de>>()? {
                if key.0 == "usage" {
                    if let Some(u) = map.next_value::<Option<RawUsage>>()? {
                        usage = Some(Usage::from(u));
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(usage)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let u = de::Deserializer::deserialize_map(&mut de, V).ok()?;
    de.end().ok()?;
    Some(u)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn payload_view_reads_any_format() {
        let a =
            Payload::parse(br#"{"usage":{"prompt_tokens":3,"completion_tokens":2},"choices":[]}"#)
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
}
