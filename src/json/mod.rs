//! Borrowed readers of untrusted JSON, shared by the request and usage readers: top-level fields as
//! raw values, keys that borrow unless escaped, the nesting check, and where a value sits; and
//! [`scan`], the cursor the per-response usage readers walk a body with.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProxyError;

pub mod scan;
#[cfg(test)]
pub mod testgen;

/// One JSON value's text, borrowed from a document read whole: what serde_json's `&RawValue`
/// holds, without the second parse its constructors take: made by [`object_fields`], or from a
/// `&RawValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The value as written (no whitespace around it).
    pub fn get(self) -> &'a str {
        self.0
    }

    /// serde_json's raw value (already read whole).
    pub fn of(raw: &'a RawValue) -> Raw<'a> {
        Raw(raw.get())
    }

    /// The members of this value when it is an object (its text is known: no UTF-8 check, and
    /// no error message to build for one that is not).
    pub fn fields(self) -> Option<Vec<Field<'a>>> {
        fields_by_cursor(self.0).ok()
    }

    /// The value is `null`.
    pub fn is_null(self) -> bool {
        self.0 == "null"
    }
}

/// One top-level field: its key and its raw value (borrowed from the body; see [`span_in`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Field<'a> {
    pub key: Cow<'a, str>,
    pub value: Raw<'a>,
}

/// Reads a JSON object's top-level fields as borrowed raw values (validating every byte), as
/// serde_json reads a map of `Cow<str>` keys to `&RawValue`s: the same inputs accepted (see
/// [`scan`]), the same fields, and serde_json's own error for an input it rejects.
pub fn object_fields(json: &[u8]) -> Result<Vec<Field<'_>>, serde_json::Error> {
    // an input that is not UTF-8 is never accepted (keys and raw values must be text)
    let by_cursor = simdutf8::basic::from_utf8(json)
        .ok()
        .and_then(|text| fields_by_cursor(text).ok());
    match by_cursor {
        Some(fields) => Ok(fields),
        None => fields_by_serde(json),
    }
}

/// [`object_fields`] with the cursor: a long string value is a SIMD search, not a parse.
fn fields_by_cursor(text: &str) -> scan::Result<Vec<Field<'_>>> {
    let mut c = scan::Cursor::from_text(text);
    let mut obj = c.object()?;
    let mut out = Vec::with_capacity(16);
    while let Some(key) = obj.key_text(&mut c)? {
        out.push(Field {
            key,
            value: Raw(c.raw_text()?),
        });
    }
    c.end()?;
    Ok(out)
}

/// [`object_fields`] with serde_json: for the error it gives, and the oracle of the cursor's.
fn fields_by_serde(json: &[u8]) -> Result<Vec<Field<'_>>, serde_json::Error> {
    struct FieldsVisitor;
    impl<'de> Visitor<'de> for FieldsVisitor {
        type Value = Vec<Field<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(16);
            while let Some(key) = map.next_key::<KeyStr<'de>>()? {
                let value: &'de RawValue = map.next_value()?;
                out.push(Field {
                    key: key.0,
                    value: Raw::of(value),
                });
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let fields = de::Deserializer::deserialize_map(&mut de, FieldsVisitor)?;
    de.end()?;
    Ok(fields)
}

/// A key borrowed from the input when it has no escapes.
#[derive(Deserialize)]
pub struct KeyStr<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// Deepest nesting of arrays and objects tailor forwards (serde_json's own parse limit).
pub const MAX_JSON_DEPTH: usize = 128;

/// Rejects bodies nested deeper than [`MAX_JSON_DEPTH`]. Capturing raw values does not bound
/// nesting, and an upstream (or a later parse) should never see a body that would exhaust its
/// stack. String contents are skipped with memchr, so the cost is close to a memory scan. Any
/// bytes are safe here: a body cut inside a string or an escape ends the scan (the parse that
/// follows rejects it).
pub fn check_depth(body: &[u8]) -> Result<(), ProxyError> {
    // each level opens with a `[` or `{` (0x5B, 0x7B: the only bytes that are `{` with bit 5
    // set): a body with no more of them than the limit, in strings or not, is within it. Counted
    // in byte-wide lanes (255 bytes cannot overflow one), this spares nearly every body the
    // byte-by-byte walk below.
    let openers: usize = body
        .chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{'))))
        .sum();
    if openers <= MAX_JSON_DEPTH {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'"' => {
                // skip the string: to the next unescaped quote (or the end of the body)
                loop {
                    let rest = body.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(p) if rest.get(p) == Some(&b'\\') => i += p + 2,
                        Some(p) => {
                            i += p + 1;
                            break;
                        }
                        None => return Ok(()),
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ProxyError::InvalidJson(format!(
                        "JSON nesting deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Byte range of `raw` inside `body` (raw values borrow from the body).
pub fn span_in(body: &[u8], raw: Raw<'_>) -> Range<usize> {
    span_of(body, raw.get().as_bytes())
}

/// Byte range of `part` inside `body`, when `part` is borrowed from it (check the bytes there
/// before relying on it).
pub fn span_of(body: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    start..start + part.len()
}

/// Visitor methods that accept and drop any value the visitor does not care about (the serde
/// oracles of the equivalence tests).
#[cfg(test)]
macro_rules! skip_other_values {
    ($value:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}
#[cfg(test)]
pub(crate) use skip_other_values;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::testgen::{edits, key, mutate, renderings, tree, Json};
    use super::*;

    /// A reading's fields as (key, value, where the value sits in `bytes`).
    type Placed<'a> = Vec<(Cow<'a, str>, &'a str, Range<usize>)>;

    fn placed<'a>(bytes: &[u8], fields: Vec<Field<'a>>) -> Placed<'a> {
        let at = |f: &Field<'_>| span_in(bytes, f.value);
        fields
            .into_iter()
            .map(|f| {
                let r = at(&f);
                (f.key, f.value.get(), r)
            })
            .collect()
    }

    /// The cursor's reading of `bytes` against serde_json's: the same fields borrowed from the
    /// same places, or both refuse; `object_fields` gives serde_json's error.
    fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        let by_cursor = std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| fields_by_cursor(t).ok())
            .map(|f| placed(bytes, f));
        let by_serde = fields_by_serde(bytes).map(|f| placed(bytes, f));
        let lossy = String::from_utf8_lossy(bytes);
        prop_assert_eq!(&by_cursor, &by_serde.as_ref().ok().cloned(), "{:?}", lossy);
        // a value's own members (metadata, stream_options) read as serde_json reads them
        for f in fields_by_serde(bytes).into_iter().flatten() {
            let inner = f.value.get().as_bytes();
            let by_serde = fields_by_serde(inner).ok().map(|g| placed(inner, g));
            prop_assert_eq!(f.value.fields().map(|g| placed(inner, g)), by_serde);
        }
        let got = object_fields(bytes).map(|f| placed(bytes, f));
        match (got, by_serde) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(
                false,
                "{:?}: {:?} against {:?}",
                lossy,
                a.is_ok(),
                b.is_ok()
            ),
        }
        Ok(())
    }

    fn object() -> impl Strategy<Value = Json> {
        prop::collection::vec((key(), tree()), 0..6).prop_map(Json::Obj)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn fields_read_as_serde_json_reads_them(
            j in prop_oneof![4 => object(), 1 => tree()],
            noise in prop::collection::vec(any::<u8>(), 0..64),
            e in edits(),
        ) {
            for mut bytes in renderings(&j, &noise) {
                agree(&bytes)?;
                mutate(&mut bytes, &e);
                agree(&bytes)?;
            }
        }

        #[test]
        fn fields_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
            agree(&bytes)?;
        }
    }

    #[test]
    fn fields_of_long_values_and_refused_bodies() {
        let long = format!(
            r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "{}\n{}"}}]}}"#,
            "a".repeat(200_000),
            "\\u00e9".repeat(100)
        );
        for body in [
            long.as_bytes(),
            b"{",
            b"",
            b"[]",
            b"{\"a\":1,}",
            b"{\"a\":1} x",
            b"{\"\xff\":1}",
            b"{\"a\":\"\xc3\xa9\"}",
            b"{\"a\":\"\xc3\"}",
            b"{\"\\ud800\":1}",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":1e400}",
            b"{\"a\":1,\"a\":2}",
        ] {
            agree(body).unwrap();
        }
        assert_eq!(object_fields(long.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn depth_check_never_panics_on_cut_strings_and_escapes() {
        for body in [
            &b"{\"model\":\"\\"[..],
            b"\"\\",
            b"\"",
            b"\\",
            b"{\"a\":\"x\\\"",
            b"[[[\"\\u00",
            b"",
        ] {
            assert!(check_depth(body).is_ok(), "{body:?}");
        }
        let deep = "[".repeat(MAX_JSON_DEPTH + 1);
        assert!(check_depth(deep.as_bytes()).is_err());
        let quoted = format!("\"{}\"", "[".repeat(MAX_JSON_DEPTH + 1));
        assert!(check_depth(quoted.as_bytes()).is_ok());
        // the count of openers decides alone only at or under the limit
        let at_limit = "[".repeat(MAX_JSON_DEPTH) + &"]".repeat(MAX_JSON_DEPTH);
        assert!(check_depth(at_limit.as_bytes()).is_ok());
        let mixed = "[{\"a\":".repeat(MAX_JSON_DEPTH / 2 + 1);
        assert!(check_depth(mixed.as_bytes()).is_err());
        let wide = format!("[{}{{}}]", "[],{},".repeat(MAX_JSON_DEPTH));
        assert!(check_depth(wide.as_bytes()).is_ok());
    }
}
