//! The cursor's prompt reader against the serde reader it replaced (kept here as the oracle, the
//! code that shipped before), on prompts written as different clients write them.

use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;
use crate::json::testgen::{key, leaf, plain, renderings, string, tree, Json};
use crate::json::{skip_other_values, KeyStr, Raw};

/// The old reader: the prompt's texts as owned strings.
fn oracle(v: &RawValue) -> (String, String) {
    let mut t = (String::new(), String::new());
    let mut de = serde_json::Deserializer::from_str(v.get());
    let _ = de::DeserializeSeed::deserialize(PromptSeed(&mut t), &mut de);
    t
}

fn oracle_content(v: &RawValue) -> String {
    let mut dst = String::new();
    let mut de = serde_json::Deserializer::from_str(v.get());
    if let Ok(t) = Texts::deserialize(&mut de) {
        for s in t.texts {
            line(&mut dst, &s);
        }
    }
    dst
}

fn line(dst: &mut String, s: &str) {
    if !dst.is_empty() {
        dst.push('\n');
    }
    dst.push_str(s);
}

struct PromptSeed<'t>(&'t mut (String, String));

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
        line(&mut self.0 .1, s);
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Texts<'de>>()? {
            let dst = match item.role.as_deref() {
                Some("system" | "developer") => &mut self.0 .0,
                Some("user") | None => &mut self.0 .1,
                Some(_) => continue,
            };
            for s in item.texts {
                line(dst, &s);
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

#[derive(Default)]
struct Texts<'a> {
    role: Option<Cow<'a, str>>,
    texts: Vec<Cow<'a, str>>,
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

/// A content value: a string, a list of parts, or anything.
fn content() -> BoxedStrategy<Json> {
    let part = vec(
        prop_oneof![
            Just((plain("type"), Json::Str(plain("text")))),
            string().prop_map(|s| (plain("text"), Json::Str(s))),
            (key(), leaf()),
        ],
        0..3,
    )
    .prop_map(Json::Obj);
    prop_oneof![
        3 => string().prop_map(Json::Str),
        1 => tree(),
        2 => vec(part, 0..3).prop_map(Json::Arr),
    ]
    .boxed()
}

/// A message: roles (one, none, repeated, not a string), contents and other members in any order.
fn message() -> BoxedStrategy<Json> {
    let role = prop_oneof![
        4 => select(vec!["system", "developer", "user", "assistant", "tool"])
            .prop_map(|r| Json::Str(plain(r))),
        1 => leaf(),
    ];
    vec(
        prop_oneof![
            role.prop_map(|r| (plain("role"), r)),
            content().prop_map(|c| (plain("content"), c)),
            content().prop_map(|c| (plain("text"), c)),
            (key(), leaf()),
        ],
        0..4,
    )
    .prop_map(Json::Obj)
    .boxed()
}

fn prompt_value() -> BoxedStrategy<Json> {
    prop_oneof![
        4 => vec(message(), 0..4).prop_map(Json::Arr),
        1 => vec(string().prop_map(Json::Str), 0..3).prop_map(Json::Arr),
        1 => content(),
    ]
    .boxed()
}

fn cursor_reads(v: &RawValue) -> (String, String) {
    let mut t = PromptText::default();
    collect_prompt(Raw::of(v), &mut t);
    (t.system.into_owned(), t.user.into_owned())
}

fn cursor_content(v: &RawValue) -> String {
    let mut dst = Cow::Borrowed("");
    collect_content(Raw::of(v), &mut dst);
    dst.into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_cursor_reads_prompts_as_the_serde_reader_did(
        j in prompt_value(),
        noise in vec(any::<u8>(), 0..32),
    ) {
        for bytes in renderings(&j, &noise) {
            // the prompt reached here as a value of a body serde_json accepted
            let Ok(v) = serde_json::from_slice::<&RawValue>(&bytes) else { continue };
            prop_assert_eq!(cursor_reads(v), oracle(v));
            prop_assert_eq!(cursor_content(v), oracle_content(v));
        }
    }
}

#[test]
fn one_message_is_borrowed_not_copied() {
    let body =
        r#"[{"role":"system","content":"be brief"},{"role":"user","content":"a long question"}]"#;
    let v: &RawValue = serde_json::from_str(body).unwrap();
    let mut t = PromptText::default();
    collect_prompt(Raw::of(v), &mut t);
    assert!(matches!(t.user, Cow::Borrowed("a long question")));
    assert!(matches!(t.system, Cow::Borrowed("be brief")));
    let two = r#"[{"role":"user","content":"a"},{"role":"user","content":["b",{"text":"c\n"}]}]"#;
    let v: &RawValue = serde_json::from_str(two).unwrap();
    let mut t = PromptText::default();
    collect_prompt(Raw::of(v), &mut t);
    assert_eq!(t.user, "a\nb\nc\n");
}
