//! One simulated answer: deterministic token counts, and the non-streaming JSON bodies (chat,
//! completions, responses, embeddings), pretty-printed as OpenAI writes them.

use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{json, Value};

use super::format::Format;
use super::wire::{header_num, now};
use crate::classify::stable_hash;

/// One simulated answer.
pub struct Sim {
    pub(super) model: String,
    pub(super) words: Vec<String>,
    pub(super) finish: &'static str,
    pub(super) prompt_tokens: u64,
    pub(super) cached: u64,
    pub(super) reasoning: u64,
    pub(super) tool: Option<String>,
    pub(super) created: u64,
    pub(super) id: String,
    /// How the answer is written (`x-mock-format`).
    pub(super) fmt: Format,
    /// Extra bytes in the first streamed word (`x-mock-big-event`), to test event size limits.
    pub(super) big_event: Option<usize>,
}

/// Follows a system message that asks for "exactly one word: A if ..., B if ..." (a judge's
/// instructions) as a model would: one of the words, picked by a hash of the rest of the request,
/// so the same request gets the same word.
fn one_word_choice(req: &Value) -> Option<String> {
    let msgs = req["messages"].as_array()?;
    let system = msgs.iter().find(|m| m["role"] == "system")?["content"].as_str()?;
    let (_, rest) = system.split_once("exactly one word:")?;
    let words: Vec<&str> = rest
        .split(|c: char| !c.is_ascii_alphabetic())
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[1] == "if" && w[0].len() > 1 && w[0].chars().all(|c| c.is_ascii_uppercase()))
        .map(|w| w[0])
        .collect();
    if words.is_empty() {
        return None;
    }
    let others: String = msgs
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| m["content"].to_string())
        .collect();
    let i = stable_hash(&[others.as_bytes()]) % words.len() as u64;
    Some(words[i as usize].to_owned())
}

impl Sim {
    pub fn new(req: &Value, endpoint: &str, model: &str, h: &HeaderMap) -> Sim {
        let prompt_field = match endpoint {
            "/chat/completions" => &req["messages"],
            "/completions" => &req["prompt"],
            _ => &req["input"],
        };
        let mut prompt_bytes = prompt_field.to_string().len() as u64;
        if let Some(i) = req["instructions"].as_str() {
            prompt_bytes += i.len() as u64;
        }
        let prompt_tokens = prompt_bytes.div_ceil(4).max(1);
        let cached = if prompt_tokens >= 1024 {
            prompt_tokens * 3 / 4 / 128 * 128
        } else {
            0
        };
        let want = header_num(h, "x-mock-words").unwrap_or(12) as usize;
        let max = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| req[*k].as_u64())
            .map(|m| m as usize);
        let n = max.map_or(want, |m| want.min(m));
        let finish = if n < want { "length" } else { "stop" };
        let fmt = Format::from_headers(h);
        let opening = if fmt.unicode {
            "Voilà, 🚀"
        } else {
            "This is"
        };
        let mut words: Vec<String> = format!("{opening} a simulated reply from {model}.")
            .split(' ')
            .map(str::to_owned)
            .collect();
        while words.len() < n {
            words.push(format!("word{}", words.len()));
        }
        words.truncate(n);
        if let Some(choice) = one_word_choice(req) {
            words = vec![choice];
        }
        let tools = req["tools"].as_array().filter(|t| !t.is_empty());
        let tool = if req["tool_choice"] == "none" {
            None
        } else {
            tools
                .and_then(|t| t[0]["function"]["name"].as_str().or(t[0]["name"].as_str()))
                .map(str::to_owned)
        };
        let reasoning = if model.starts_with('o') {
            2 * words.len() as u64
        } else {
            0
        };
        let id: String = format!(
            "{:x}",
            stable_hash(&[
                model.as_bytes(),
                &prompt_bytes.to_le_bytes(),
                &now().to_le_bytes()
            ])
        );
        Sim {
            model: model.to_owned(),
            words,
            finish,
            prompt_tokens,
            cached,
            reasoning,
            tool,
            created: now(),
            id,
            fmt,
            big_event: header_num(h, "x-mock-big-event")
                .and_then(|n| usize::try_from(n).ok())
                .map(|n| n.min(64 << 20)),
        }
    }

    pub(super) fn completion_tokens(&self) -> u64 {
        self.words.len() as u64 + self.reasoning
    }

    pub(super) fn text(&self) -> String {
        self.words.join(" ")
    }

    pub(super) fn tool_args(&self) -> String {
        json!({"query": self.text()}).to_string()
    }

    pub(super) fn chat_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens(),
            "total_tokens": self.prompt_tokens + self.completion_tokens(),
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }

    pub(super) fn responses_usage(&self) -> Value {
        json!({
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": self.cached, "cache_write_tokens": 0},
            "output_tokens": self.completion_tokens(),
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.prompt_tokens + self.completion_tokens()
        })
    }

    pub(super) fn response_object(&self, status: &str, with_output: bool) -> Value {
        let output = if with_output {
            json!([{"type": "message", "id": format!("msg_{}", self.id), "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": self.text(), "annotations": [], "logprobs": []}]}])
        } else {
            json!([])
        };
        let mut v = json!({
            "id": format!("resp_{}", self.id), "object": "response", "created_at": self.created, "status": status,
            "error": Value::Null, "incomplete_details": Value::Null, "instructions": Value::Null, "model": self.model,
            "output": output, "parallel_tool_calls": true, "temperature": 1.0, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "metadata": {}
        });
        // the schema has no null usage: an unfinished response carries none
        if status == "completed" {
            v["usage"] = self.responses_usage();
        }
        v
    }

    /// A non-streaming answer, pretty-printed as OpenAI does.
    pub fn complete(&self, endpoint: &str, _req: &Value) -> Bytes {
        let v = match endpoint {
            "/chat/completions" => {
                let (message, finish) = match &self.tool {
                    Some(name) => (
                        json!({"role": "assistant", "content": Value::Null, "refusal": Value::Null, "annotations": [],
                               "tool_calls": [{"id": format!("call_{}", self.id), "type": "function", "function": {"name": name, "arguments": self.tool_args()}}]}),
                        "tool_calls",
                    ),
                    None => (
                        json!({"role": "assistant", "content": self.text(), "refusal": Value::Null, "annotations": []}),
                        self.finish,
                    ),
                };
                json!({
                    "id": format!("chatcmpl-{}", self.id), "object": "chat.completion", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "message": message, "logprobs": Value::Null, "finish_reason": finish}],
                    "usage": self.chat_usage(), "service_tier": "default", "system_fingerprint": "fp_tailor_mock"
                })
            }
            "/completions" => json!({
                "id": format!("cmpl-{}", self.id), "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"text": self.text(), "index": 0, "logprobs": Value::Null, "finish_reason": self.finish}],
                "usage": self.chat_usage(), "system_fingerprint": "fp_tailor_mock"
            }),
            _ => self.response_object("completed", true),
        };
        Bytes::from(self.fmt.body(&v))
    }

    pub fn embeddings(&self, req: &Value) -> Bytes {
        let inputs: Vec<String> = match &req["input"] {
            Value::Array(a) => a.iter().map(|x| x.to_string()).collect(),
            other => vec![other.to_string()],
        };
        let dims = req["dimensions"].as_u64().unwrap_or(16).clamp(1, 4096) as usize;
        let b64 = req["encoding_format"] == "base64";
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let mut x = stable_hash(&[text.as_bytes()]);
                let v: Vec<f32> = (0..dims)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                    })
                    .collect();
                let embedding = if b64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let v = json!({"object": "list", "data": data, "model": self.model, "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}});
        Bytes::from(self.fmt.body(&v))
    }
}
