//! The wire formats of other OpenAI-compatible servers, asked for with `x-mock-format` (several
//! may be combined, comma-separated). The default is OpenAI's own: bodies pretty-printed, SSE
//! events compact, `data: ` with its space, `\n` line ends.
//!
//! | value         | effect |
//! |---------------|--------|
//! | `spaced`      | JSON as Python's `json.dumps` writes it: `{"a": 1, "b": [1, 2]}`, non-ASCII as `\u` escapes |
//! | `crlf`        | SSE lines end with `\r\n` |
//! | `cr`          | SSE lines end with `\r` alone (the SSE specification's third line end; over `crlf`) |
//! | `nospace`     | `data:` and `event:` without the space after the colon |
//! | `noevent`     | Responses streams without `event:` lines |
//! | `usage-first` | `usage` is the first key of bodies and chunks |
//! | `comments`    | an SSE comment (`: keep-alive`) before every event |
//! | `unicode`     | the reply text holds non-ASCII characters |

use std::io;

use http::HeaderMap;
use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use serde_json::Value;

/// The formats one request asked for.
#[derive(Debug, Default, Clone, Copy)]
pub struct Format {
    pub spaced: bool,
    pub crlf: bool,
    pub cr: bool,
    pub nospace: bool,
    pub noevent: bool,
    pub usage_first: bool,
    pub comments: bool,
    pub unicode: bool,
}

/// Every format name `x-mock-format` takes.
pub const NAMES: [&str; 8] = [
    "spaced",
    "crlf",
    "cr",
    "nospace",
    "noevent",
    "usage-first",
    "comments",
    "unicode",
];

impl Format {
    pub fn from_headers(h: &HeaderMap) -> Format {
        let mut f = Format::default();
        let names = h
            .get_all("x-mock-format")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for name in names {
            match name {
                "spaced" => f.spaced = true,
                "crlf" => f.crlf = true,
                "cr" => f.cr = true,
                "nospace" => f.nospace = true,
                "noevent" => f.noevent = true,
                "usage-first" => f.usage_first = true,
                "comments" => f.comments = true,
                "unicode" => f.unicode = true,
                _ => {}
            }
        }
        f
    }

    /// A whole JSON body: pretty-printed as OpenAI does (or as `spaced` says).
    pub fn body(&self, v: &Value) -> Vec<u8> {
        self.json(v, true)
    }

    /// One SSE event carrying `v` (with an `event:` line for Responses events).
    pub fn event(&self, name: Option<&str>, v: &Value) -> String {
        let data = String::from_utf8(self.json(v, false)).unwrap_or_default();
        self.frame(name, &data)
    }

    /// `data: [DONE]`.
    pub fn done(&self) -> String {
        self.frame(None, "[DONE]")
    }

    fn frame(&self, name: Option<&str>, data: &str) -> String {
        let nl = match (self.cr, self.crlf) {
            (true, _) => "\r",
            (false, true) => "\r\n",
            (false, false) => "\n",
        };
        let sp = if self.nospace { "" } else { " " };
        let mut s = String::with_capacity(data.len() + 64);
        if self.comments {
            s.push_str(": keep-alive");
            s.push_str(nl);
            s.push_str(nl);
        }
        if let Some(n) = name.filter(|_| !self.noevent) {
            s.push_str("event:");
            s.push_str(sp);
            s.push_str(n);
            s.push_str(nl);
        }
        s.push_str("data:");
        s.push_str(sp);
        s.push_str(data);
        s.push_str(nl);
        s.push_str(nl);
        s
    }

    fn json(&self, v: &Value, pretty: bool) -> Vec<u8> {
        let write = |v: &Value| -> Vec<u8> {
            if self.spaced {
                to_vec(v, Spaced)
            } else if pretty {
                to_vec(v, PrettyFormatter::new())
            } else {
                to_vec(v, CompactFormatter)
            }
        };
        let Some((obj, usage)) = v
            .as_object()
            .and_then(|o| Some((o, o.get("usage")?)))
            .filter(|_| self.usage_first)
        else {
            return write(v);
        };
        let mut rest = obj.clone();
        rest.remove("usage");
        let (colon, comma): (&[u8], &[u8]) = if self.spaced || pretty {
            (b": ", b", ")
        } else {
            (b":", b",")
        };
        let mut out = b"{\"usage\"".to_vec();
        out.extend_from_slice(colon);
        out.extend_from_slice(&write(usage));
        let rest = write(&Value::Object(rest));
        // the rest's own braces: `{...}` or `{}`
        let inner = rest
            .get(1..rest.len().saturating_sub(1))
            .unwrap_or_default();
        if !inner.trim_ascii().is_empty() {
            out.extend_from_slice(comma);
            out.extend_from_slice(inner.trim_ascii());
        }
        out.push(b'}');
        out
    }
}

fn to_vec<F: Formatter>(v: &Value, f: F) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, f);
    // serializing a Value into a Vec cannot fail
    let _ = v.serialize(&mut ser);
    out
}

/// `", "` before every element but the first.
fn separator<W: ?Sized + io::Write>(w: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

/// Python's `json.dumps` defaults: `", "` and `": "` separators, non-ASCII escaped as `\uXXXX`.
struct Spaced;

impl Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_write_valid_json_and_frames() {
        let v = json!({"choices": [{"delta": {"content": "café"}}], "usage": null, "id": "x"});
        let f = Format {
            spaced: true,
            usage_first: true,
            ..Default::default()
        };
        let s = String::from_utf8(f.json(&v, false)).unwrap();
        assert!(
            s.starts_with(r#"{"usage": null, "choices": [{"delta": {"content": "caf\u00e9"}}]"#),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
        let e = Format {
            crlf: true,
            nospace: true,
            comments: true,
            ..Default::default()
        }
        .event(Some("response.completed"), &json!({"a": 1}));
        assert_eq!(
            e,
            ": keep-alive\r\n\r\nevent:response.completed\r\ndata:{\"a\":1}\r\n\r\n"
        );
        let pretty_first = Format {
            usage_first: true,
            ..Default::default()
        }
        .body(&json!({"a": 1, "usage": {"b": 2}}));
        assert_eq!(
            serde_json::from_slice::<Value>(&pretty_first).unwrap(),
            json!({"a": 1, "usage": {"b": 2}})
        );
        assert!(pretty_first.starts_with(b"{\"usage\": {"));
        let cr = Format {
            cr: true,
            crlf: true,
            ..Default::default()
        };
        assert_eq!(
            cr.event(Some("e"), &json!({"a": 1})),
            "event: e\rdata: {\"a\":1}\r\r"
        );
    }
}
