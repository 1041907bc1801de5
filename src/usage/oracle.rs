//! The serde readers that the JSON cursor replaced, kept as the oracle the equivalence tests
//! compare the new readers with (byte for byte the code that shipped before).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{RawUsage, Usage};
use crate::json::{skip_other_values, KeyStr};

/// What the old reader found in a payload.
#[derive(Default)]
pub struct Payload<'a> {
    pub top_usage: Option<&'a RawValue>,
    response_usage: Option<RawUsage>,
    pub choices: Option<usize>,
    pub text_bytes: u64,
    pub kind: Option<Cow<'a, str>>,
}

impl<'a> Payload<'a> {
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

    pub fn usage(&self) -> Option<Usage> {
        let top = self
            .top_usage
            .filter(|u| u.get() != "null")
            .and_then(|u| serde_json::from_str::<RawUsage>(u.get()).ok());
        top.or(self.response_usage.clone()).map(Usage::from)
    }

    pub(super) fn response_usage(&self) -> Option<Usage> {
        self.response_usage.clone().map(Usage::from)
    }
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

/// The old `sse::Event::parse`: (name, data); its lines end at `\r\n`, `\n` or `\r` (the SSE
/// specification), where the old one knew the first two only.
pub fn event(event: &[u8]) -> (Option<&[u8]>, Option<Cow<'_, [u8]>>) {
    let mut name = None;
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = event.get(i) {
        let end = match (b, event.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r' | b'\n', _) => 1,
            _ => 0,
        };
        if end > 0 {
            lines.push(event.get(start..i).unwrap_or_default());
            start = i + end;
        }
        i += end.max(1);
    }
    lines.push(event.get(start..).unwrap_or_default());
    for line in lines {
        let field = |prefix: &[u8]| {
            line.strip_prefix(prefix)
                .map(|v| v.strip_prefix(b" ").unwrap_or(v))
        };
        if let Some(v) = field(b"data:") {
            data = Some(match data {
                None => Cow::Borrowed(v),
                Some(prev) => {
                    let mut joined = prev.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(v);
                    Cow::Owned(joined)
                }
            });
        } else if let Some(v) = field(b"event:") {
            name = Some(v);
        }
    }
    (name, data)
}
