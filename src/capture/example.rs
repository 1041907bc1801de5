//! A captured request and its answer → one fine-tuning line: the request's messages, then the
//! assistant message the client received (reassembled from a stream's deltas), redacted.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use bytes::Bytes;
use regex::Regex;
use serde_json::{json, Map, Value};

use crate::usage::sse;

/// Tool calls per answer at most: an upstream's `index` must not make tailor allocate.
const MAX_TOOL_CALLS: usize = 128;

/// The dataset line for a request and the frames the client was sent, or None when it must not
/// be captured (not a chat request, an answer cut at `length`, an incomplete stream, an
/// unreadable body).
pub fn example(request: &[u8], response: &[Bytes], rules: &[Regex]) -> Option<Vec<u8>> {
    let req: Value = serde_json::from_slice(request).ok()?;
    let mut messages = req.get("messages")?.as_array()?.clone();
    let body: Vec<u8> = response.concat();
    let (assistant, finish) = if body.trim_ascii_start().starts_with(b"{") {
        from_json(&body)?
    } else {
        from_stream(&body)?
    };
    if finish.as_deref() == Some("length") {
        return None;
    }
    messages.push(assistant);
    let mut line = Map::new();
    for m in &mut messages {
        redact(m, rules);
    }
    line.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req
        .get("tools")
        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
    {
        line.insert("tools".into(), tools.clone());
    }
    let mut out = serde_json::to_vec(&Value::Object(line)).ok()?;
    out.push(b'\n');
    Some(out)
}

/// The assistant message and finish reason of a chat completion.
fn from_json(body: &[u8]) -> Option<(Value, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let choice = v.get("choices")?.get(0)?;
    let msg = choice.get("message")?;
    let mut out = Map::new();
    out.insert("role".into(), json!("assistant"));
    out.insert(
        "content".into(),
        msg.get("content").cloned().unwrap_or(Value::Null),
    );
    if let Some(calls) = msg
        .get("tool_calls")
        .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
    {
        out.insert("tool_calls".into(), calls.clone());
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((Value::Object(out), finish))
}

/// The assistant message of a streamed chat completion, reassembled from its deltas: content,
/// and tool calls (id, name and arguments joined per index). None if the stream did not end with
/// `[DONE]`.
fn from_stream(body: &[u8]) -> Option<(Value, Option<String>)> {
    let mut content: Option<String> = None;
    let mut calls: Vec<Map<String, Value>> = Vec::new();
    let mut finish = None;
    let mut done = false;
    for data in sse::events(body).filter_map(|e| e.data) {
        if data.as_ref() == b"[DONE]" {
            done = true;
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&data) else {
            continue;
        };
        if v.get("error").is_some() {
            return None;
        }
        // `n > 1` streams interleave their choices: only the first is the example
        let first = |c: &&Value| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0;
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(first))
        else {
            continue;
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            finish = Some(f.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            continue;
        };
        if let Some(c) = delta.get("content").and_then(Value::as_str) {
            content.get_or_insert_with(String::new).push_str(c);
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let i = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let i = usize::try_from(i).ok().filter(|i| *i < MAX_TOOL_CALLS)?;
            while calls.len() <= i {
                calls.push(Map::new());
            }
            let call = calls.get_mut(i)?;
            for key in ["id", "type"] {
                if let Some(s) = tc.get(key).and_then(Value::as_str) {
                    call.insert(key.into(), json!(s));
                }
            }
            let f = call
                .entry("function")
                .or_insert_with(|| json!({"name": "", "arguments": ""}));
            for key in ["name", "arguments"] {
                if let Some(s) = tc
                    .get("function")
                    .and_then(|f| f.get(key))
                    .and_then(Value::as_str)
                {
                    let prev = f.get(key).and_then(Value::as_str).unwrap_or_default();
                    f[key] = json!(format!("{prev}{s}"));
                }
            }
        }
    }
    if !done {
        return None;
    }
    let mut out = Map::new();
    out.insert("role".into(), json!("assistant"));
    out.insert("content".into(), content.map_or(Value::Null, Value::String));
    if !calls.is_empty() {
        let calls = calls
            .into_iter()
            .map(|mut c| {
                c.entry("type").or_insert_with(|| json!("function"));
                Value::Object(c)
            })
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    Some((Value::Object(out), finish))
}

/// Replaces every match of `rules` in every string of `v` with `[REDACTED]`.
fn redact(v: &mut Value, rules: &[Regex]) {
    match v {
        Value::String(s) => {
            for r in rules {
                if r.is_match(s) {
                    *s = r.replace_all(s, "[REDACTED]").into_owned();
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, rules)),
        Value::Object(o) => o.values_mut().for_each(|x| redact(x, rules)),
        _ => {}
    }
}
