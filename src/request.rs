//! A borrowed view of an API request body, and the one rewrite tailor makes to it.
//!
//! The body is OpenAI's, not ours: we read a handful of top-level fields as borrowed raw JSON
//! (validating the whole document on the way) and remember where `model` and `stream_options`
//! sit, so [`RequestView::rewrite`] can splice in the upstream model id and `include_usage` while
//! every other byte, including fields we have never heard of, stays exactly as the client sent it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProxyError;

/// The API endpoints tailor routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
}

impl Endpoint {
    /// The endpoint for a request path (after `/v1`).
    pub fn from_suffix(suffix: &str) -> Option<Endpoint> {
        match suffix {
            "/chat/completions" => Some(Endpoint::Chat),
            "/completions" => Some(Endpoint::Completions),
            "/embeddings" => Some(Endpoint::Embeddings),
            "/responses" => Some(Endpoint::Responses),
            _ => None,
        }
    }

    /// The path after `/v1` (or after the Azure deployment).
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
        }
    }

    /// The endpoint for its [`Endpoint::as_str`] name.
    pub fn from_name(name: &str) -> Option<Endpoint> {
        [
            Endpoint::Chat,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::Responses,
        ]
        .into_iter()
        .find(|e| e.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
        }
    }

    /// The field that carries the prompt.
    fn prompt_field(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings | Endpoint::Responses => "input",
        }
    }

    /// Whether streaming responses carry usage only when `stream_options.include_usage` is set.
    fn usage_needs_stream_options(self) -> bool {
        matches!(self, Endpoint::Chat | Endpoint::Completions)
    }
}

/// One top-level field: its key and its raw value (borrowed from the body; see [`span_in`]).
struct Field<'a> {
    key: Cow<'a, str>,
    value: &'a RawValue,
}

/// Reads a JSON object's top-level fields as borrowed raw values (validating every byte).
fn object_fields(json: &[u8]) -> Result<Vec<Field<'_>>, serde_json::Error> {
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
struct KeyStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// Deepest nesting of arrays and objects tailor forwards (serde_json's own parse limit).
pub const MAX_JSON_DEPTH: usize = 128;

/// Rejects bodies nested deeper than [`MAX_JSON_DEPTH`]. Capturing raw values does not bound
/// nesting, and an upstream (or a later parse) should never see a body that would exhaust its
/// stack. String contents are skipped with memchr, so the cost is close to a memory scan.
fn check_depth(body: &[u8]) -> Result<(), ProxyError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // skip the string: to the next unescaped quote
                i += 1;
                while let Some(p) = memchr::memchr2(b'"', b'\\', &body[i..]) {
                    if body[i + p] == b'\\' {
                        i += p + 2;
                    } else {
                        i += p;
                        break;
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
        i += 1;
    }
    Ok(())
}

/// Byte range of `raw` inside `body` (raw values borrow from the body).
fn span_in(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

/// Message texts by role group, extracted only when a route needs them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PromptText {
    /// System and developer messages (and Responses `instructions`), joined by newlines.
    pub system: String,
    /// User messages (or the plain prompt / input), joined by newlines.
    pub user: String,
}

/// A system prompt an arm adds to the request: before the client's messages, or instead of the
/// client's system and developer messages.
#[derive(Debug, Clone, Copy)]
pub struct SystemPrompt<'a> {
    pub text: &'a str,
    pub replace: bool,
}

/// What the router and the forwarder need from a request body.
pub struct RequestView<'a> {
    body: &'a [u8],
    pub endpoint: Endpoint,
    /// The `model` the client asked for.
    pub model: Cow<'a, str>,
    model_span: Range<usize>,
    pub stream: bool,
    stream_options: Option<&'a RawValue>,
    /// The body's `user` field.
    pub user: Option<Cow<'a, str>>,
    metadata: Option<&'a RawValue>,
    prompt: Option<&'a RawValue>,
    instructions: Option<&'a RawValue>,
    tools: Option<&'a RawValue>,
    functions: Option<&'a RawValue>,
    text: OnceLock<PromptText>,
}

fn missing(param: &'static str) -> ProxyError {
    ProxyError::InvalidField {
        param,
        code: "missing_required_parameter",
        message: format!("Missing required parameter: '{param}'."),
    }
}

fn invalid_type(param: &'static str, expected: &str) -> ProxyError {
    ProxyError::InvalidField {
        param,
        code: "invalid_type",
        message: format!("Invalid type for '{param}': expected {expected}."),
    }
}

fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
}

impl<'a> RequestView<'a> {
    /// Parses the body of a request to `endpoint`. Fails with the error OpenAI would give.
    pub fn parse(body: &'a [u8], endpoint: Endpoint) -> Result<RequestView<'a>, ProxyError> {
        check_depth(body)?;
        let fields = object_fields(body).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
        let mut model = None;
        let mut stream = None;
        let mut view = RequestView {
            body,
            endpoint,
            model: Cow::Borrowed(""),
            model_span: 0..0,
            stream: false,
            stream_options: None,
            user: None,
            metadata: None,
            prompt: None,
            instructions: None,
            tools: None,
            functions: None,
            text: OnceLock::new(),
        };
        let prompt_field = endpoint.prompt_field();
        for f in fields {
            // Keys tailor acts on must appear once: with duplicates, tailor and the upstream
            // could read different values (route on one model, bill another).
            let once = |slot: &Option<&RawValue>, name: &'static str| {
                if slot.is_some() {
                    Err(ProxyError::InvalidField {
                        param: name,
                        code: "duplicate_parameter",
                        message: format!("Parameter '{name}' appears more than once."),
                    })
                } else {
                    Ok(())
                }
            };
            match f.key.as_ref() {
                "model" => {
                    once(&model, "model")?;
                    model = Some(f.value);
                }
                "stream" => {
                    once(&stream, "stream")?;
                    stream = Some(f.value);
                }
                "stream_options" => {
                    once(&view.stream_options, "stream_options")?;
                    view.stream_options = Some(f.value);
                }
                "user" if !is_null(f.value) => {
                    let s: KeyStr<'a> = serde_json::from_str(f.value.get())
                        .map_err(|_| invalid_type("user", "a string"))?;
                    view.user = Some(s.0);
                }
                "metadata" => view.metadata = Some(f.value),
                "instructions" if endpoint == Endpoint::Responses => {
                    view.instructions = Some(f.value)
                }
                "tools" => view.tools = Some(f.value),
                "functions" => view.functions = Some(f.value),
                k if k == prompt_field => view.prompt = Some(f.value),
                _ => {}
            }
        }
        let model = model
            .filter(|m| !is_null(m))
            .ok_or_else(|| ProxyError::InvalidField {
                param: "model",
                code: "missing_required_parameter",
                message: "you must provide a model parameter".to_owned(),
            })?;
        let name: KeyStr<'a> =
            serde_json::from_str(model.get()).map_err(|_| invalid_type("model", "a string"))?;
        view.model = name.0;
        view.model_span = span_in(body, model);
        if let Some(s) = stream.filter(|s| !is_null(s)) {
            view.stream =
                serde_json::from_str(s.get()).map_err(|_| invalid_type("stream", "a boolean"))?;
        }
        match (endpoint, view.prompt) {
            (Endpoint::Responses, _) => {} // `input` is optional with stored prompts
            (_, None) => return Err(missing(prompt_field)),
            (Endpoint::Chat, Some(m)) if !m.get().starts_with('[') => {
                return Err(invalid_type("messages", "an array"));
            }
            _ => {}
        }
        Ok(view)
    }

    /// Whether the client asked for streamed usage itself (`stream_options.include_usage: true`).
    pub fn client_wants_stream_usage(&self) -> bool {
        self.stream_options
            .and_then(|so| object_fields(so.get().as_bytes()).ok())
            .and_then(|fs| fs.into_iter().find(|f| f.key == "include_usage"))
            .is_some_and(|f| f.value.get() == "true")
    }

    /// Whether tailor must turn on `include_usage` upstream to meter this request.
    pub fn needs_usage_injection(&self) -> bool {
        self.stream
            && self.endpoint.usage_needs_stream_options()
            && !self.client_wants_stream_usage()
    }

    /// The value of a `metadata` key, if it is a string.
    pub fn metadata(&self, key: &str) -> Option<Cow<'a, str>> {
        let m = self.metadata?;
        let fields = object_fields(m.get().as_bytes()).ok()?;
        let f = fields.into_iter().find(|f| f.key == key)?;
        serde_json::from_str::<KeyStr<'_>>(f.value.get())
            .ok()
            .map(|k| Cow::Owned(k.0.into_owned()))
    }

    /// Whether the request carries tool (or legacy function) definitions.
    pub fn has_tools(&self) -> bool {
        [self.tools, self.functions].into_iter().flatten().any(|v| {
            let s = v.get();
            s.starts_with('[') && s[1..].trim_start() != "]"
        })
    }

    /// The `metadata` object as JSON (for capture files), if any.
    pub fn metadata_value(&self) -> Option<serde_json::Value> {
        self.metadata
            .and_then(|m| serde_json::from_str(m.get()).ok())
    }

    /// Estimated prompt size in tokens: the bytes of the prompt-bearing fields (messages / prompt
    /// / input, Responses `instructions`, and tool definitions) divided by 4, rounded up. No
    /// tokenizer: ~4 bytes per token holds for English JSON; it overestimates escaped and
    /// non-ASCII text. Costs nothing beyond the parse tailor already does.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let bytes: usize = [self.prompt, self.instructions, self.tools, self.functions]
            .into_iter()
            .flatten()
            .filter(|v| !is_null(v))
            .map(|v| v.get().len())
            .sum();
        bytes.div_ceil(4) as u64
    }

    /// System and user texts of the prompt, extracted once on first use.
    pub fn text(&self) -> &PromptText {
        self.text.get_or_init(|| {
            let mut t = PromptText::default();
            if let Some(i) = self.instructions {
                collect_content(i, &mut t.system);
            }
            if let Some(p) = self.prompt {
                collect_prompt(p, &mut t);
            }
            t
        })
    }

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
            out.extend_from_slice(&body[at..r.start]);
            out.extend_from_slice(&text);
            at = r.end;
        }
        out.extend_from_slice(&body[at..]);
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
                let items: Vec<&RawValue> = serde_json::from_str(messages.get()).ok()?;
                let mut out = format!("[{system}").into_bytes();
                for item in items {
                    let role = serde_json::from_str::<Texts<'_>>(item.get())
                        .ok()
                        .and_then(|t| t.role);
                    if !matches!(role.as_deref(), Some("system" | "developer")) {
                        out.push(b',');
                        out.extend_from_slice(item.get().as_bytes());
                    }
                }
                out.push(b']');
                Some((span, out))
            }
            Endpoint::Responses => match self.instructions.filter(|i| !is_null(i)) {
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
            let so_span = span_in(body, so);
            let inner = so.get().as_bytes();
            if let Ok(fields) = object_fields(inner) {
                if let Some(f) = fields.iter().find(|f| f.key == "include_usage") {
                    let r = span_in(inner, f.value);
                    return (
                        so_span.start + r.start..so_span.start + r.end,
                        b"true".to_vec(),
                    );
                }
                let sep: &[u8] = if fields.is_empty() { b"" } else { b"," };
                let at = so_span.start + 1;
                return (at..at, [b"\"include_usage\":true".as_slice(), sep].concat());
            }
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

/// Appends the texts of a messages array / prompt / input to the right group, reading it once:
/// string values are borrowed from the body unless they hold escapes, and nothing else is kept.
/// The body was already validated, so a shape we do not know is skipped, never an error.
fn collect_prompt(v: &RawValue, t: &mut PromptText) {
    let mut de = serde_json::Deserializer::from_str(v.get());
    let _ = de::DeserializeSeed::deserialize(PromptSeed(t), &mut de);
}

/// Appends a content value (a string, or an array of parts whose `text` fields are taken).
fn collect_content(v: &RawValue, dst: &mut String) {
    let mut de = serde_json::Deserializer::from_str(v.get());
    if let Ok(t) = Texts::deserialize(&mut de) {
        for s in t.texts {
            push_line(dst, &s);
        }
    }
}

/// Visitor methods that accept and drop any value the visitor does not care about.
macro_rules! skip_other_values {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
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

fn push_line(dst: &mut String, s: &str) {
    if !dst.is_empty() {
        dst.push('\n');
    }
    dst.push_str(s);
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
    fn bad_bodies_get_openai_errors() {
        let cases: [(&str, &str); 9] = [
            ("not json", "invalid_json"),
            ("[1,2]", "invalid_json"),
            (r#"{"model":"m","messages":[]} trailing"#, "invalid_json"),
            (r#"{"messages":[]}"#, "invalid_field"),
            (r#"{"model":null,"messages":[]}"#, "invalid_field"),
            (r#"{"model":5,"messages":[]}"#, "invalid_field"),
            (r#"{"model":"m"}"#, "invalid_field"),
            (r#"{"model":"m","messages":"hi"}"#, "invalid_field"),
            (
                r#"{"model":"a","model":"b","messages":[]}"#,
                "invalid_field",
            ),
        ];
        for (body, kind) in cases {
            let e = RequestView::parse(body.as_bytes(), Endpoint::Chat)
                .err()
                .unwrap_or_else(|| panic!("{body} parsed"));
            assert_eq!(e.kind(), kind, "{body}");
            assert_eq!(e.status().as_u16(), 400);
        }
        assert!(RequestView::parse(br#"{"model":"e","input":"x"}"#, Endpoint::Embeddings).is_ok());
        assert!(RequestView::parse(br#"{"model":"e"}"#, Endpoint::Embeddings).is_err());
        assert!(RequestView::parse(br#"{"model":"r"}"#, Endpoint::Responses).is_ok());
    }

    #[test]
    fn nesting_depth_is_bounded_outside_strings_only() {
        let deep = |n: usize| {
            format!(
                r#"{{"model":"m","messages":[],"x":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(RequestView::parse(deep(MAX_JSON_DEPTH - 2).as_bytes(), Endpoint::Chat).is_ok());
        let e = RequestView::parse(deep(MAX_JSON_DEPTH).as_bytes(), Endpoint::Chat)
            .err()
            .unwrap();
        assert_eq!(e.kind(), "invalid_json");
        let brackets_in_text = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}\"[{{"}}]}}"#,
            "[{".repeat(500)
        );
        assert!(RequestView::parse(brackets_in_text.as_bytes(), Endpoint::Chat).is_ok());
    }

    #[test]
    fn texts_tools_metadata_and_size() {
        let v = chat(
            r#"{"model":"m","user":"cust-1","metadata":{"feature":"support","n":"2"},
            "messages":[{"role":"system","content":"You are ACME support"},
                        {"role":"developer","content":[{"type":"text","text":"be brief"}]},
                        {"role":"user","content":[{"type":"text","text":"my refund"},{"type":"image_url","image_url":{"url":"x"}}]},
                        {"role":"assistant","content":"ignored"},
                        {"role":"user","content":"second"}],
            "tools":[{"type":"function","function":{"name":"f"}}]}"#,
        );
        assert_eq!(v.text().system, "You are ACME support\nbe brief");
        assert_eq!(v.text().user, "my refund\nsecond");
        assert!(v.has_tools());
        assert_eq!(v.user.as_deref(), Some("cust-1"));
        assert_eq!(v.metadata("feature").as_deref(), Some("support"));
        assert_eq!(v.metadata("missing"), None);
        assert!(v.estimated_prompt_tokens() > 50);
        let none = chat(r#"{"model":"m","messages":[],"tools":[ ],"functions":null}"#);
        assert!(!none.has_tools());
        assert_eq!(none.estimated_prompt_tokens(), 2);
    }

    #[test]
    fn responses_and_completions_texts() {
        let r = RequestView::parse(
            br#"{"model":"m","instructions":"sys","input":[{"role":"user","content":[{"type":"input_text","text":"hello"}]}]}"#,
            Endpoint::Responses,
        )
        .unwrap();
        assert_eq!(
            r.text(),
            &PromptText {
                system: "sys".into(),
                user: "hello".into()
            }
        );
        let c = RequestView::parse(
            br#"{"model":"m","prompt":["a","b"]}"#,
            Endpoint::Completions,
        )
        .unwrap();
        assert_eq!(c.text().user, "a\nb");
        // escaped strings are unescaped; role may follow content; non-text parts are skipped
        let e = chat(
            r#"{"model":"m","messages":[{"content":"say \"hi\"\u00e9","role":"system"},
            {"role":"user","content":[{"type":"image_url","image_url":{"url":"u","text":7}},{"text":"a\/b"}]},
            {"role":"tool","content":"no"},{"role":"user","content":null},{"role":"user"}]}"#,
        );
        assert_eq!(e.text().system, "say \"hi\"\u{e9}");
        assert_eq!(e.text().user, "a/b");
    }
}
