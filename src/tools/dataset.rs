//! `tailor dataset check`: validates a fine-tuning file the way OpenAI's upload does (chat format,
//! one example per line), and prices it.
//!
//! Tokens are counted with the model's tokenizer (o200k_base for GPT-4o and its fine-tunes) and
//! OpenAI's chat rules ([`crate::tokens::chat`]): per example, its messages with their overheads,
//! its function tools, and the 3 tokens that prime a reply. OpenAI does not publish how it frames
//! a training example; these are the rules its API bills a request with.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::tokens::chat;
use crate::tokens::Encoding;

/// Roles the chat fine-tuning format accepts.
const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "function"];
/// Keys a message may carry.
const MESSAGE_KEYS: [&str; 8] = [
    "role",
    "content",
    "name",
    "weight",
    "tool_calls",
    "tool_call_id",
    "function_call",
    "refusal",
];
/// Keys an example may carry.
const EXAMPLE_KEYS: [&str; 4] = ["messages", "tools", "functions", "parallel_tool_calls"];
/// OpenAI requires at least this many examples.
pub const MIN_EXAMPLES: usize = 10;
/// gpt-4o fine-tuning's context: longer examples are truncated by the upload.
pub const MAX_EXAMPLE_TOKENS: u64 = 65_536;

#[derive(Debug, Serialize)]
pub struct Report {
    /// The tokenizer the counts used (`o200k_base`, `cl100k_base`).
    pub encoding: &'static str,
    /// The model name was not known: the encoding is an assumption.
    pub encoding_assumed: bool,
    pub examples: usize,
    /// (line number, message) of every line the upload would reject.
    pub errors: Vec<(usize, String)>,
    pub warnings: Vec<String>,
    pub total_tokens: u64,
    pub min_tokens: u64,
    pub max_tokens: u64,
    pub mean_tokens: f64,
    /// Lines identical (as JSON values) to an earlier line: (line, first line).
    pub duplicates: Vec<(usize, usize)>,
    pub epochs: u32,
    pub training_price_usd_per_1m: Option<f64>,
    /// total_tokens × epochs × price.
    pub estimated_training_cost_usd: Option<f64>,
}

/// Checks one example; its tokens, or why the upload would reject it.
fn check_example(enc: Encoding, v: &Value) -> Result<u64, String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    if let Some(k) = obj.keys().find(|k| !EXAMPLE_KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key `{k}`"));
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` missing or not an array")?;
    if messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    let mut assistants = 0;
    for (i, m) in messages.iter().enumerate() {
        let m = m
            .as_object()
            .ok_or(format!("messages[{i}] is not an object"))?;
        if let Some(k) = m.keys().find(|k| !MESSAGE_KEYS.contains(&k.as_str())) {
            return Err(format!("messages[{i}]: unknown key `{k}`"));
        }
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or(format!("messages[{i}]: `role` missing"))?;
        if !ROLES.contains(&role) {
            return Err(format!(
                "messages[{i}]: role `{role}` is not one of {ROLES:?}"
            ));
        }
        let content = m.get("content").unwrap_or(&Value::Null);
        let has_calls = m.get("tool_calls").is_some() || m.get("function_call").is_some();
        match content {
            Value::String(_) | Value::Array(_) => {}
            Value::Null if role == "assistant" && has_calls => {}
            _ => {
                return Err(format!(
                    "messages[{i}]: `content` must be a string (or null with tool calls)"
                ))
            }
        }
        if let Some(w) = m.get("weight") {
            if role != "assistant" || !matches!(w.as_u64(), Some(0 | 1)) {
                return Err(format!(
                    "messages[{i}]: `weight` is 0 or 1, on assistant messages only"
                ));
            }
        }
        if role == "assistant" {
            assistants += 1;
        }
    }
    if assistants == 0 {
        return Err("no assistant message".into());
    }
    let mut tools: &[Value] = &[];
    for key in ["tools", "functions"] {
        if let Some(t) = obj.get(key) {
            tools = t
                .as_array()
                .ok_or(format!("`{key}` is not an array"))?
                .as_slice();
        }
    }
    Ok(chat::chat_prompt_tokens(enc, messages, tools))
}

/// Checks a whole file's text for fine-tuning `model`. `training_price` in USD per 1M
/// training tokens.
pub fn check(text: &str, model: &str, epochs: u32, training_price: Option<f64>) -> Report {
    let (enc, known) = Encoding::for_model(model);
    let mut r = Report {
        encoding: enc.name(),
        encoding_assumed: !known,
        examples: 0,
        errors: Vec::new(),
        warnings: Vec::new(),
        total_tokens: 0,
        min_tokens: u64::MAX,
        max_tokens: 0,
        mean_tokens: 0.0,
        duplicates: Vec::new(),
        epochs,
        training_price_usd_per_1m: training_price,
        estimated_training_cost_usd: None,
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            r.errors.push((n, "empty line".into()));
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                r.errors.push((n, format!("not JSON: {e}")));
                continue;
            }
        };
        match check_example(enc, &v) {
            Ok(t) => {
                r.examples += 1;
                r.total_tokens += t;
                r.min_tokens = r.min_tokens.min(t);
                r.max_tokens = r.max_tokens.max(t);
                if t > MAX_EXAMPLE_TOKENS {
                    r.warnings.push(format!(
                        "line {n}: {t} tokens, over the {MAX_EXAMPLE_TOKENS}-token context: the upload truncates it"
                    ));
                }
                // serde_json's map is ordered by key: equal values print equal
                let key = v.to_string();
                match seen.get(&key) {
                    Some(first) => r.duplicates.push((n, *first)),
                    None => {
                        seen.insert(key, n);
                    }
                }
            }
            Err(e) => r.errors.push((n, e)),
        }
    }
    if r.examples == 0 {
        r.min_tokens = 0;
    } else {
        r.mean_tokens = r.total_tokens as f64 / r.examples as f64;
    }
    if r.examples < MIN_EXAMPLES {
        r.warnings.push(format!(
            "{} valid examples: OpenAI requires at least {MIN_EXAMPLES}",
            r.examples
        ));
    }
    r.estimated_training_cost_usd =
        training_price.map(|p| r.total_tokens as f64 * f64::from(epochs) * p / 1e6);
    r
}

impl Report {
    /// The report as text for a person.
    pub fn render(&self, file: &str) -> String {
        let mut s = String::new();
        let verdict = if self.errors.is_empty() {
            "OK"
        } else {
            "INVALID"
        };
        let _ = writeln!(
            s,
            "{file}: {verdict}: {} valid examples, {} invalid lines",
            self.examples,
            self.errors.len()
        );
        for (n, e) in self.errors.iter().take(50) {
            let _ = writeln!(s, "  line {n}: {e}");
        }
        let assumed = if self.encoding_assumed {
            ", assumed: the model is not one tailor knows"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "tokens ({}{assumed}; OpenAI's chat overheads): {} in all; per example min {} / mean {:.0} / max {}",
            self.encoding, self.total_tokens, self.min_tokens, self.mean_tokens, self.max_tokens
        );
        match (
            self.estimated_training_cost_usd,
            self.training_price_usd_per_1m,
        ) {
            (Some(c), Some(p)) => {
                let _ = writeln!(
                    s,
                    "estimated training cost: ${c:.2} ({} tokens x {} epochs at ${p}/1M)",
                    self.total_tokens, self.epochs
                );
            }
            _ => {
                let _ = writeln!(s, "estimated training cost: unknown (no training price for this model in the table)");
            }
        }
        if self.duplicates.is_empty() {
            let _ = writeln!(s, "duplicates: none");
        } else {
            let _ = writeln!(s, "duplicates: {}", self.duplicates.len());
            for (n, first) in self.duplicates.iter().take(20) {
                let _ = writeln!(s, "  line {n} repeats line {first}");
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_like_the_upload() {
        let good = r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#;
        let tool = r#"{"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{}"}}]}],"tools":[{"type":"function","function":{"name":"w"}}]}"#;
        let text = [
            good,
            tool,
            good,
            r#"{"messages":[{"role":"user","content":"no answer"}]}"#,
            r#"{"messages":[{"role":"robot","content":"x"},{"role":"assistant","content":"y"}]}"#,
            "not json",
            r#"{"messages":[],"extra":1}"#,
        ]
        .join("\n");
        let r = check(&text, "gpt-4o-2024-08-06", 3, Some(25.0));
        assert_eq!(r.examples, 3);
        let lines: Vec<usize> = r.errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [4, 5, 6, 7]);
        assert!(r.errors[0].1.contains("no assistant"));
        assert!(r.errors[1].1.contains("robot"));
        assert!(r.errors[3].1.contains("extra"));
        assert_eq!(r.duplicates, [(3, 1)]);
        // good, in o200k_base: (3 + "system" 1 + "be brief" 2) + (3 + "user" 1 + "hi" 1)
        // + (3 + "assistant" 1 + "hello" 1) + 3 to prime the reply
        assert_eq!(r.min_tokens, 19);
        assert_eq!((r.encoding, r.encoding_assumed), ("o200k_base", false));
        let cost = r.estimated_training_cost_usd.unwrap();
        assert!((cost - r.total_tokens as f64 * 3.0 * 25.0 / 1e6).abs() < 1e-12);
        assert!(r.warnings.iter().any(|w| w.contains("at least 10")));
    }

    /// The cookbook's chat example as a training line: 124 tokens in o200k_base, 129 in
    /// cl100k_base, as OpenAI's API counted them.
    #[test]
    fn tokens_are_openais_counts() {
        let mut messages = crate::tokens::chat::cookbook_messages();
        messages.push(serde_json::json!({"role": "assistant", "content": "This late change means we don't have time to do everything for the client."}));
        let line = serde_json::json!({ "messages": messages });
        let answer = 3
            + Encoding::O200kBase.count("assistant")
            + Encoding::O200kBase.count(
                "This late change means we don't have time to do everything for the client.",
            );
        let r = check(&line.to_string(), "gpt-4o-mini-2024-07-18", 1, None);
        assert_eq!(r.total_tokens, 124 + answer);
        let answer = 3
            + Encoding::Cl100kBase.count("assistant")
            + Encoding::Cl100kBase.count(
                "This late change means we don't have time to do everything for the client.",
            );
        let r = check(&line.to_string(), "gpt-3.5-turbo-0125", 1, None);
        assert_eq!(r.total_tokens, 129 + answer);
        assert_eq!(r.encoding, "cl100k_base");
        let r = check(&line.to_string(), "my-own-model", 1, None);
        assert!(r.encoding_assumed);
        assert!(r.render("f").contains("o200k_base, assumed"));
    }
}
