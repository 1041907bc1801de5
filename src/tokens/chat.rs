//! Prompt tokens as OpenAI counts them, after the cookbook "How to count tokens with tiktoken":
//! every message costs 3 tokens (`<|start|>{role}\n{content}<|end|>`) plus the tokens of each of
//! its string values, 1 more when it has a `name`; every reply is primed with 3 more
//! (`<|start|>assistant<|message|>`). Function tools cost what the cookbook's
//! `num_tokens_for_tools` says: per function 7 (o200k_base) or 10 (cl100k_base), its
//! `name:description` line, 3 for the properties, 3 and a `key:type:description` line per
//! property, enums at 3 per item minus 3, and 12 for the whole list.
//!
//! The cookbook covers string contents, names and function tools. What it does not cover is
//! counted as close as the bytes allow and said so: content parts count their text (images
//! count 0: they are billed by size, not text), a tool call counts its name and arguments, and
//! Responses `input` items count as messages (OpenAI publishes no overheads for them).

use serde_json::Value;

use super::Encoding;
use crate::request::Endpoint;

/// Framing of every message.
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Added when a message has a `name`.
pub const TOKENS_PER_NAME: u64 = 1;
/// `<|start|>assistant<|message|>`, once per request.
pub const REPLY_PRIMING: u64 = 3;

/// The cookbook's per-encoding constants for function tools.
struct ToolCosts {
    func_init: u64,
    prop_init: u64,
    prop_key: u64,
    /// Negative in the cookbook (-3): subtracted once per enum, always after its items' 3s.
    enum_init_minus: u64,
    enum_item: u64,
    func_end: u64,
}

fn tool_costs(enc: Encoding) -> ToolCosts {
    ToolCosts {
        func_init: match enc {
            Encoding::O200kBase => 7,
            Encoding::Cl100kBase => 10,
        },
        prop_init: 3,
        prop_key: 3,
        enum_init_minus: 3,
        enum_item: 3,
        func_end: 12,
    }
}

/// Text tokens of a content value: a string, or the text of its parts.
fn content_tokens(enc: Encoding, v: &Value) -> u64 {
    match v {
        Value::String(s) => enc.count(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => enc.count(s),
                Value::Object(o) => ["text", "refusal", "output"]
                    .iter()
                    .filter_map(|k| o.get(*k).and_then(Value::as_str))
                    .map(|s| enc.count(s))
                    .sum(),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// A tool call's or legacy function call's name and arguments.
fn call_tokens(enc: Encoding, call: &Value) -> u64 {
    let f = call.get("function").unwrap_or(call);
    ["name", "arguments"]
        .iter()
        .filter_map(|k| f.get(*k).and_then(Value::as_str))
        .map(|s| enc.count(s))
        .sum()
}

/// One message: 3, its string values (role, content, name, ...), 1 for a name.
pub fn message_tokens(enc: Encoding, m: &Value) -> u64 {
    let Some(m) = m.as_object() else {
        return 0;
    };
    let mut n = TOKENS_PER_MESSAGE;
    for (k, v) in m {
        n += match (k.as_str(), v) {
            ("name", Value::String(s)) => enc.count(s) + TOKENS_PER_NAME,
            ("content", v) => content_tokens(enc, v),
            ("tool_calls", Value::Array(calls)) => calls.iter().map(|c| call_tokens(enc, c)).sum(),
            ("function_call", c) => call_tokens(enc, c),
            // a fine-tuning weight is not text the model sees
            ("weight", _) => 0,
            (_, Value::String(s)) => enc.count(s),
            _ => 0,
        };
    }
    n
}

/// Messages without the reply priming (a training example has no reply to prime).
pub fn messages_tokens(enc: Encoding, messages: &[Value]) -> u64 {
    messages.iter().map(|m| message_tokens(enc, m)).sum()
}

/// Function tools (`tools` of chat, `functions` of the legacy API, Responses' flat tools), as
/// the cookbook's `num_tokens_for_tools` counts them; 0 for no tools.
pub fn tools_tokens(enc: Encoding, tools: &[Value]) -> u64 {
    if tools.is_empty() {
        return 0;
    }
    let c = tool_costs(enc);
    let mut n = 0;
    for t in tools {
        let f = t.get("function").unwrap_or(t);
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        let desc = f
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        n += c.func_init + enc.count(&format!("{name}:{}", strip_dot(desc)));
        let props = f
            .get("parameters")
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        let Some(props) = props.filter(|p| !p.is_empty()) else {
            continue;
        };
        n += c.prop_init;
        for (key, p) in props {
            n += c.prop_key;
            if let Some(items) = p.get("enum").and_then(Value::as_array) {
                for item in items {
                    n += c.enum_item + item.as_str().map_or(0, |s| enc.count(s));
                }
                n = n.saturating_sub(c.enum_init_minus);
            }
            let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
            let d = p
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            n += enc.count(&format!("{key}:{ty}:{}", strip_dot(d)));
        }
    }
    n + c.func_end
}

fn strip_dot(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

/// A chat request's prompt: messages, tools, and the reply priming.
pub fn chat_prompt_tokens(enc: Encoding, messages: &[Value], tools: &[Value]) -> u64 {
    messages_tokens(enc, messages) + tools_tokens(enc, tools) + REPLY_PRIMING
}

/// An arm's system prompt as the system message it is sent as.
pub fn system_prompt_tokens(enc: Encoding, text: &str) -> u64 {
    TOKENS_PER_MESSAGE + enc.count("system") + enc.count(text)
}

/// A `prompt` or embeddings `input`: a string, strings, or token arrays (counted as they are).
fn plain_input_tokens(enc: Encoding, v: &Value) -> u64 {
    match v {
        Value::String(s) => enc.count(s),
        Value::Array(items) if items.iter().all(Value::is_number) => items.len() as u64,
        Value::Array(items) => items.iter().map(|i| plain_input_tokens(enc, i)).sum(),
        _ => 0,
    }
}

fn array<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The prompt tokens of a request body as sent upstream (`None`: not a JSON object).
pub fn request_prompt_tokens(enc: Encoding, endpoint: Endpoint, body: &[u8]) -> Option<u64> {
    let body: Value = serde_json::from_slice(body).ok()?;
    body.as_object()?;
    let tools = match array(&body, "tools") {
        [] => array(&body, "functions"),
        t => t,
    };
    // Responses' non-function tools (web search, file search) have no published cost
    let function_tools: Vec<Value> = tools
        .iter()
        .filter(|t| t.get("type").is_none_or(|ty| ty == "function"))
        .cloned()
        .collect();
    Some(match endpoint {
        Endpoint::Chat => chat_prompt_tokens(enc, array(&body, "messages"), &function_tools),
        Endpoint::Completions => body.get("prompt").map_or(0, |p| plain_input_tokens(enc, p)),
        Endpoint::Embeddings => body.get("input").map_or(0, |p| plain_input_tokens(enc, p)),
        Endpoint::Responses => {
            let mut n = tools_tokens(enc, &function_tools) + REPLY_PRIMING;
            if let Some(i) = body.get("instructions").and_then(Value::as_str) {
                n += TOKENS_PER_MESSAGE + enc.count("system") + enc.count(i);
            }
            match body.get("input") {
                Some(Value::String(s)) => {
                    n += TOKENS_PER_MESSAGE + enc.count("user") + enc.count(s);
                }
                Some(Value::Array(items)) => n += messages_tokens(enc, items),
                _ => {}
            }
            n
        }
    })
}

/// The cookbook's `example_messages` (section 6), shared by the tests that check OpenAI's
/// published counts (here and `dataset check`'s).
#[cfg(test)]
pub(crate) fn cookbook_messages() -> Vec<Value> {
    serde_json::json!([
        {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
        {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
        {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The cookbook's section 7 example: one weather tool, two messages.
    fn cookbook_tools() -> (Vec<Value>, Vec<Value>) {
        let tools = json!([{
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                        "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["location"]
                }
            }
        }]);
        let messages = json!([
            {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
            {"role": "user", "content": "What's the weather like in San Francisco?"}
        ]);
        (
            messages.as_array().cloned().unwrap(),
            tools.as_array().cloned().unwrap(),
        )
    }

    #[test]
    fn cookbook_chat_examples_count_as_published() {
        // "124 prompt tokens counted by the OpenAI API" for gpt-4o and gpt-4o-mini, 129 for
        // gpt-4 and gpt-3.5-turbo
        let m = cookbook_messages();
        assert_eq!(chat_prompt_tokens(Encoding::O200kBase, &m, &[]), 124);
        assert_eq!(chat_prompt_tokens(Encoding::Cl100kBase, &m, &[]), 129);
    }

    #[test]
    fn cookbook_tool_examples_count_as_published() {
        // "101 prompt tokens counted by the OpenAI API" for gpt-4o / -mini, 105 for gpt-4 / 3.5
        let (m, t) = cookbook_tools();
        assert_eq!(chat_prompt_tokens(Encoding::O200kBase, &m, &t), 101);
        assert_eq!(chat_prompt_tokens(Encoding::Cl100kBase, &m, &t), 105);
    }

    #[test]
    fn request_bodies_count_like_their_parts() {
        let e = Encoding::O200kBase;
        let body = json!({"model": "gpt-4o", "messages": cookbook_messages(), "stream": true});
        let bytes = serde_json::to_vec(&body).unwrap();
        assert_eq!(request_prompt_tokens(e, Endpoint::Chat, &bytes), Some(124));
        let (m, t) = cookbook_tools();
        let body = json!({"model": "gpt-4o", "messages": m, "tools": t});
        let bytes = serde_json::to_vec(&body).unwrap();
        assert_eq!(request_prompt_tokens(e, Endpoint::Chat, &bytes), Some(101));
        // content parts count their text, like the same string
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]});
        let plain = json!({"messages": [{"role": "user", "content": "hello world"}]});
        let (a, b) = (
            request_prompt_tokens(e, Endpoint::Chat, parts.to_string().as_bytes()),
            request_prompt_tokens(e, Endpoint::Chat, plain.to_string().as_bytes()),
        );
        assert_eq!(a, b);
        // 3 + "user" 1 + "hello world" 2 + 3 priming
        assert_eq!(a, Some(9));
        let emb = json!({"input": ["hello world", "hello world"]});
        assert_eq!(
            request_prompt_tokens(e, Endpoint::Embeddings, emb.to_string().as_bytes()),
            Some(4)
        );
        let ids = json!({"prompt": [1, 2, 3]});
        assert_eq!(
            request_prompt_tokens(e, Endpoint::Completions, ids.to_string().as_bytes()),
            Some(3)
        );
        let resp = json!({"input": "hello world"});
        assert_eq!(
            request_prompt_tokens(e, Endpoint::Responses, resp.to_string().as_bytes()),
            Some(9)
        );
        assert_eq!(request_prompt_tokens(e, Endpoint::Chat, b"[1]"), None);
        assert_eq!(request_prompt_tokens(e, Endpoint::Chat, b"{"), None);
    }

    #[test]
    fn tool_calls_count_their_name_and_arguments() {
        let e = Encoding::O200kBase;
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Paris\"}"}}
        ]});
        let n = message_tokens(e, &call);
        let expected = 3
            + e.count("assistant")
            + e.count("get_current_weather")
            + e.count("{\"location\":\"Paris\"}");
        assert_eq!(n, expected);
        // a weight is not text
        let w = json!({"role": "assistant", "content": "hi", "weight": 0});
        assert_eq!(
            message_tokens(e, &w),
            3 + e.count("assistant") + e.count("hi")
        );
    }
}
