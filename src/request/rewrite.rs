//! The one rewrite tailor makes to a request body: the upstream model id, `include_usage` when
//! tailor must meter a stream, and an arm's system prompt, spliced in by byte range. Every other
//! byte, including fields we have never heard of, stays exactly as the client sent it.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::ops::Range;

use bytes::Bytes;

use super::endpoint::Endpoint;
use super::prompt::is_system_message;
use super::view::RequestView;
use crate::json::scan::Cursor;
use crate::json::{span_in, KeyStr};

/// client's system and developer messages.
#[derive(Debug, Clone, Copy)]
pub struct SystemPrompt<'a> {
    pub text: &'a str,
    pub replace: bool,
}

impl RequestView<'_> {
    /// The body for the upstream: `model` replaced by `upstream_model`; when `inject_usage`,
    /// `stream_options.include_usage` set to true; with a `prompt`, the arm's system prompt added
    /// (chat: a system message first in `messages`; Responses: `instructions`; completions and
    /// embeddings have no system prompt and are left alone). All other bytes are kept.
    pub fn rewrite(
        &self,
        upstream_model: &str,
        inject_usage: bool,
        prompt: Option<SystemPrompt<'_>>,
    ) -> Bytes {
        let body = self.body;
        let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::with_capacity(3);
        let mut model_json = Vec::with_capacity(upstream_model.len() + 2);
        // serializing a &str into a Vec cannot fail
        let _ = serde_json::to_writer(&mut model_json, upstream_model);
        edits.push((self.model_span.clone(), model_json));
        if inject_usage {
            edits.push(self.include_usage_edit());
        }
        if let Some(edit) = prompt.and_then(|p| self.prompt_edit(p)) {
            edits.push(edit);
        }
        edits.sort_by_key(|(r, _)| r.start);
        let mut out = Vec::with_capacity(body.len() + 48);
        let mut at = 0;
        for (r, text) in edits {
            out.extend_from_slice(body.get(at..r.start).unwrap_or_default());
            out.extend_from_slice(&text);
            at = r.end;
        }
        out.extend_from_slice(body.get(at..).unwrap_or_default());
        Bytes::from(out)
    }

    /// The edit that adds an arm's system prompt, if the endpoint has one.
    fn prompt_edit(&self, p: SystemPrompt<'_>) -> Option<(Range<usize>, Vec<u8>)> {
        let body = self.body;
        let text = serde_json::to_string(p.text).ok()?;
        match self.endpoint {
            Endpoint::Chat => {
                let messages = self.prompt.filter(|m| m.get().starts_with('['))?;
                let span = span_in(body, messages);
                let system = format!(r#"{{"role":"system","content":{text}}}"#);
                if !p.replace {
                    let empty = messages.get()[1..].trim_start().starts_with(']');
                    let sep = if empty { "" } else { "," };
                    let at = span.start + 1;
                    return Some((at..at, format!("{system}{sep}").into_bytes()));
                }
                // replace: the client's system and developer messages go, the rest stay as sent
                let mut c = Cursor::from_text(messages.get());
                let mut items = c.array().ok()?;
                let mut out = format!("[{system}").into_bytes();
                while items.next(&mut c).ok()? {
                    let item = c.raw_text().ok()?;
                    if !is_system_message(item) {
                        out.push(b',');
                        out.extend_from_slice(item.as_bytes());
                    }
                }
                out.push(b']');
                Some((span, out))
            }
            Endpoint::Responses => match self.instructions.filter(|i| !i.is_null()) {
                Some(i) if !p.replace => {
                    let old: KeyStr<'_> = serde_json::from_str(i.get()).ok()?;
                    let joined = serde_json::to_string(&format!("{}\n\n{}", p.text, old.0)).ok()?;
                    Some((span_in(body, i), joined.into_bytes()))
                }
                Some(i) => Some((span_in(body, i), text.into_bytes())),
                None => {
                    let close = body.iter().rposition(|b| *b == b'}')?;
                    Some((
                        close..close,
                        format!(r#","instructions":{text}"#).into_bytes(),
                    ))
                }
            },
            Endpoint::Completions | Endpoint::Embeddings => None,
        }
    }

    /// The edit that makes `stream_options.include_usage` true.
    fn include_usage_edit(&self) -> (Range<usize>, Vec<u8>) {
        let body = self.body;
        if let Some(so) = self.stream_options.filter(|so| so.get().starts_with('{')) {
            if let Some(v) = self.include_usage {
                return (span_in(body, v), b"true".to_vec());
            }
            let empty = so.get()[1..].trim_start().starts_with('}');
            let sep: &[u8] = if empty { b"" } else { b"," };
            let at = span_in(body, so).start + 1;
            return (at..at, [b"\"include_usage\":true".as_slice(), sep].concat());
        }
        if let Some(so) = self.stream_options {
            // `stream_options: null` (or another non-object): replace the value
            return (span_in(body, so), b"{\"include_usage\":true}".to_vec());
        }
        // absent: add it before the closing brace of the body
        let close = body.iter().rposition(|b| *b == b'}').unwrap_or(body.len());
        (
            close..close,
            b",\"stream_options\":{\"include_usage\":true}".to_vec(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> RequestView<'_> {
        RequestView::parse(body.as_bytes(), Endpoint::Chat).unwrap()
    }

    #[test]
    fn rewrite_changes_only_model() {
        let body = r#"{ "messages" : [ {"role":"user","content":"hi \"model\": x"} ],
            "model"  :  "gpt-4o" , "x_future_field": {"a": [1, 2.50, null]}, "temperature":0.7 }"#;
        let v = chat(body);
        assert_eq!(v.model, "gpt-4o");
        let out = v.rewrite("ft:gpt-4o-2024-08-06:acme::x", false, None);
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            body.replace("\"gpt-4o\"", "\"ft:gpt-4o-2024-08-06:acme::x\"")
        );
    }

    #[test]
    fn include_usage_is_injected_in_every_shape() {
        let cases = [
            (
                r#"{"model":"m","messages":[],"stream":true}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{}}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_obfuscation":false}}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage": false}}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{"include_usage": true}}"#,
                true,
            ),
            // spaced, and the key written with an escape
            (
                "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\": {\r\n\t}}",
                "{\"model\":\"X\",\"messages\":[],\"stream\":true,\"stream_options\": {\"include_usage\":true\r\n\t}}",
                true,
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{ "include_obfuscation" : false }}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{"include_usage":true, "include_obfuscation" : false }}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{ "\u0069nclude_usage" :false }}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{ "\u0069nclude_usage" :true }}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":null}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
                true,
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
                r#"{"model":"X","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
                false,
            ),
            (
                r#"{"model":"m","messages":[],"stream":false}"#,
                r#"{"model":"X","messages":[],"stream":false}"#,
                false,
            ),
        ];
        for (input, expected, inject) in cases {
            let v = chat(input);
            assert_eq!(v.needs_usage_injection(), inject, "{input}");
            let out = v.rewrite("X", v.needs_usage_injection(), None);
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
        }
    }

    #[test]
    fn replace_keeps_the_other_messages_as_sent_in_every_format() {
        let messages = serde_json::json!([
            {"role": "system", "content": "old"},
            {"content": "dev", "role": "developer"},
            {"role": "user", "content": ["a \"role\": \"system\"", {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "x", "tool_calls": [{"id": "t", "type": "function"}]}
        ]);
        let body = serde_json::json!({"model": "m", "messages": messages});
        let prompt = SystemPrompt {
            text: "new",
            replace: true,
        };
        for text in [
            body.to_string(),
            serde_json::to_string_pretty(&body).unwrap(),
            serde_json::to_string_pretty(&body)
                .unwrap()
                .replace('\n', "\r\n\t"),
        ] {
            let out = chat(&text).rewrite("X", false, Some(prompt));
            let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let want = serde_json::json!([
                {"role": "system", "content": "new"},
                messages[2],
                messages[3]
            ]);
            assert_eq!(got["messages"], want, "{text}");
        }
        // only roles decide: a content that is not text does not hide one, a repeated role is
        // the system's when any of them is, and a role that is not text is not the system's
        let hostile = r#"{"model":"m","messages":[
            {"role":"system","content":"\ud800 old"},
            {"role":"developer","content":[{"type":"text","text":1e400}]},
            {"role":"user","role":"system","content":"twice"},
            {"role":"system","role":"user","content":"twice again"},
            {"role":"user","content":"\ud800 kept"},
            {"role":"\ud800","content":"kept too"},
            "a string"]}"#;
        let out = chat(hostile).rewrite("X", false, Some(prompt));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"X","messages":[{"role":"system","content":"new"},{"role":"user","content":"\ud800 kept"},{"role":"\ud800","content":"kept too"},"a string"]}"#
        );
        // a role written with an escape is the role it spells
        let escaped = r#"{"model":"m","messages":[{"role":"\u0073ystem","content":"old"} , {"role":"user","content":"u"}]}"#;
        let out = chat(escaped).rewrite("X", false, Some(prompt));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"X","messages":[{"role":"system","content":"new"},{"role":"user","content":"u"}]}"#
        );
    }
}
