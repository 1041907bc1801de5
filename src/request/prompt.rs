//! The texts of a prompt (system and user messages), read in one pass when a route's `system` or
//! `content` condition needs them: strings are borrowed from the body unless they hold escapes,
//! and everything else is skipped.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::{skip_other_values, KeyStr};

/// Message texts by role group, extracted only when a route needs them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PromptText {
    /// System and developer messages (and Responses `instructions`), joined by newlines.
    pub system: String,
    /// User messages (or the plain prompt / input), joined by newlines.
    pub user: String,
}

/// Appends the texts of a messages array / prompt / input to the right group, reading it once:
/// string values are borrowed from the body unless they hold escapes, and nothing else is kept.
/// The body was already validated, so a shape we do not know is skipped, never an error.
pub fn collect_prompt(v: &RawValue, t: &mut PromptText) {
    let mut de = serde_json::Deserializer::from_str(v.get());
    let _ = de::DeserializeSeed::deserialize(PromptSeed(t), &mut de);
}

/// Appends a content value (a string, or an array of parts whose `text` fields are taken).
pub fn collect_content(v: &RawValue, dst: &mut String) {
    let mut de = serde_json::Deserializer::from_str(v.get());
    if let Ok(t) = Texts::deserialize(&mut de) {
        for s in t.texts {
            push_line(dst, &s);
        }
    }
}

/// The whole prompt: a string, or an array of messages (or of strings).
struct PromptSeed<'t>(&'t mut PromptText);

impl<'de> de::DeserializeSeed<'de> for PromptSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PromptSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a prompt")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        push_line(&mut self.0.user, s);
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Texts<'de>>()? {
            // a plain string (completions prompt, embeddings input) has no role: user text
            let dst = match item.role.as_deref() {
                Some("system" | "developer") => &mut self.0.system,
                Some("user") | None => &mut self.0.user,
                Some(_) => continue,
            };
            for s in item.texts {
                push_line(dst, &s);
            }
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(())
    }
    skip_other_values!(());
}

/// The texts of a JSON value, read in one pass: a string is itself; an array, its elements' texts;
/// an object (a message or a content part), its `content` and `text` texts, and its `role`. Strings
/// are borrowed from the body unless they hold escapes; everything else is skipped.
#[derive(Default)]
pub struct Texts<'a> {
    pub role: Option<Cow<'a, str>>,
    pub texts: Vec<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Texts<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Texts<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("prompt text")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Texts<'de>, E> {
                Ok(Texts {
                    role: None,
                    texts: vec![Cow::Borrowed(s)],
                })
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Texts<'de>, E> {
                Ok(Texts {
                    role: None,
                    texts: vec![Cow::Owned(s.to_owned())],
                })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Texts<'de>, A::Error> {
                let mut out = Texts::default();
                while let Some(part) = seq.next_element::<Texts<'de>>()? {
                    out.texts.extend(part.texts);
                }
                Ok(out)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Texts<'de>, A::Error> {
                let mut out = Texts::default();
                while let Some(key) = map.next_key::<KeyStr<'de>>()? {
                    match key.0.as_ref() {
                        "role" => out.role = Some(map.next_value::<KeyStr<'de>>()?.0),
                        "content" | "text" => {
                            out.texts.extend(map.next_value::<Texts<'de>>()?.texts)
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
            skip_other_values!(Texts::default());
        }
        d.deserialize_any(V)
    }
}

fn push_line(dst: &mut String, s: &str) {
    if !dst.is_empty() {
        dst.push('\n');
    }
    dst.push_str(s);
}
