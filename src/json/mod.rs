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

/// One top-level field: its key and its raw value (borrowed from the body; see [`span_in`]).
pub struct Field<'a> {
    pub key: Cow<'a, str>,
    pub value: &'a RawValue,
}

/// Reads a JSON object's top-level fields as borrowed raw values (validating every byte).
pub fn object_fields(json: &[u8]) -> Result<Vec<Field<'_>>, serde_json::Error> {
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
                out.push(Field { key: key.0, value });
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
pub fn span_in(body: &[u8], raw: &RawValue) -> Range<usize> {
    span_of(body, raw.get().as_bytes())
}

/// Byte range of `part` inside `body`, when `part` is borrowed from it (check the bytes there
/// before relying on it).
pub fn span_of(body: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    start..start + part.len()
}

pub fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
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
    use super::*;

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
    }
}
