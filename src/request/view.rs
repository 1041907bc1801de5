//! [`RequestView`]: what the router and the forwarder need from a request body, read as borrowed
//! raw JSON (validating the whole document on the way), with the error OpenAI would give for a
//! body it rejects.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use super::endpoint::Endpoint;
use super::prompt::{collect_content, collect_prompt, PromptText};
use crate::error::ProxyError;
use crate::json::{check_depth, object_fields, span_in, KeyStr, Raw};

/// What the router and the forwarder need from a request body.
pub struct RequestView<'a> {
    pub(super) body: &'a [u8],
    pub endpoint: Endpoint,
    /// The `model` the client asked for.
    pub model: Cow<'a, str>,
    pub(super) model_span: Range<usize>,
    pub stream: bool,
    pub(super) stream_options: Option<Raw<'a>>,
    /// `stream_options.include_usage`, read once with the body (sent at most once).
    pub(super) include_usage: Option<Raw<'a>>,
    /// The body's `user` field.
    pub user: Option<Cow<'a, str>>,
    pub(super) metadata: Option<Raw<'a>>,
    pub(super) prompt: Option<Raw<'a>>,
    pub(super) instructions: Option<Raw<'a>>,
    pub(super) tools: Option<Raw<'a>>,
    pub(super) functions: Option<Raw<'a>>,
    pub(super) text: OnceLock<PromptText<'a>>,
    /// The answer's token cap the client set (`max_completion_tokens`, `max_tokens` or
    /// `max_output_tokens`), for budget reservations. Not validated: the upstream does that.
    pub max_output_tokens: Option<u64>,
}

fn missing(param: &'static str) -> ProxyError {
    ProxyError::InvalidField {
        param,
        code: "missing_required_parameter",
        message: format!("Missing required parameter: '{param}'."),
    }
}

/// A key tailor acts on, sent more than once: tailor and the upstream could read different values
/// (route on one model, bill another), so the request is refused.
pub(crate) fn duplicate(param: &'static str) -> ProxyError {
    ProxyError::InvalidField {
        param,
        code: "duplicate_parameter",
        message: format!("Parameter '{param}' appears more than once."),
    }
}

fn invalid_type(param: &'static str, expected: &str) -> ProxyError {
    ProxyError::InvalidField {
        param,
        code: "invalid_type",
        message: format!("Invalid type for '{param}': expected {expected}."),
    }
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
            include_usage: None,
            user: None,
            metadata: None,
            prompt: None,
            instructions: None,
            tools: None,
            functions: None,
            text: OnceLock::new(),
            max_output_tokens: None,
        };
        let prompt_field = endpoint.prompt_field();
        let once = |slot: &Option<Raw<'_>>, name: &'static str| match slot {
            Some(_) => Err(duplicate(name)),
            None => Ok(()),
        };
        for f in fields {
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
                "user" if !f.value.is_null() => {
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
                "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                    if let Ok(n) = serde_json::from_str::<u64>(f.value.get()) {
                        view.max_output_tokens =
                            Some(view.max_output_tokens.map_or(n, |m| m.min(n)));
                    }
                }
                k if k == prompt_field => view.prompt = Some(f.value),
                _ => {}
            }
        }
        let model = model
            .filter(|m| !m.is_null())
            .ok_or_else(|| ProxyError::InvalidField {
                param: "model",
                code: "missing_required_parameter",
                message: "you must provide a model parameter".to_owned(),
            })?;
        let name: KeyStr<'a> =
            serde_json::from_str(model.get()).map_err(|_| invalid_type("model", "a string"))?;
        view.model = name.0;
        view.model_span = span_in(body, model);
        if let Some(s) = stream.filter(|s| !s.is_null()) {
            view.stream =
                serde_json::from_str(s.get()).map_err(|_| invalid_type("stream", "a boolean"))?;
        }
        // `include_usage` decides whether tailor asks for the usage it meters
        let options = view.stream_options.and_then(|so| so.fields());
        for f in options.into_iter().flatten() {
            if f.key == "include_usage" {
                once(&view.include_usage, "stream_options.include_usage")?;
                view.include_usage = Some(f.value);
            }
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
        self.include_usage.is_some_and(|v| v.get() == "true")
    }

    /// Whether tailor must turn on `include_usage` upstream to meter this request.
    pub fn needs_usage_injection(&self) -> bool {
        self.stream
            && self.endpoint.usage_needs_stream_options()
            && !self.client_wants_stream_usage()
    }

    /// The value of a `metadata` key, if it is a string. A key sent twice counts as its last
    /// value, the one OpenAI (and serde_json's map, which the capture file uses) keeps.
    pub fn metadata(&self, key: &str) -> Option<Cow<'a, str>> {
        let m = self.metadata?;
        let fields = m.fields()?;
        let f = fields.into_iter().rev().find(|f| f.key == key)?;
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
            .filter(|v| !v.is_null())
            .map(|v| v.get().len())
            .sum();
        bytes.div_ceil(4) as u64
    }

    /// System and user texts of the prompt, extracted once on first use.
    pub fn text(&self) -> &PromptText<'a> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::MAX_JSON_DEPTH;

    fn chat(body: &str) -> RequestView<'_> {
        RequestView::parse(body.as_bytes(), Endpoint::Chat).unwrap()
    }

    #[test]
    fn bad_bodies_get_openai_errors() {
        let cases: [(&str, &str); 11] = [
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
            // an upstream that keeps the last one would send no usage to meter
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#,
                "invalid_field",
            ),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":false, "\u0069nclude_usage":false}}"#,
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
        let e = RequestView::parse(cases[10].0.as_bytes(), Endpoint::Chat).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("Parameter 'stream_options.include_usage' appears more than once.")
        );
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
        let twice = chat(
            r#"{"model":"m","messages":[],"metadata":{"feature":"billing","f\u0065ature":"support"}}"#,
        );
        assert_eq!(twice.metadata("feature").as_deref(), Some("support"));
        assert_eq!(twice.metadata_value().unwrap()["feature"], "support");
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
