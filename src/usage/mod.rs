//! Reading token usage from upstream responses, and what it costs.
//!
//! - [`find_in_json`]: the `usage` object of a non-streaming JSON body (chat, completions,
//!   embeddings, responses), found without parsing the rest of the body.
//! - [`sse::SseScanner`]: cuts an SSE byte stream into events across chunk boundaries, picks the
//!   usage out of the usage chunk (chat/completions) or `response.completed` (Responses API), and
//!   can drop the usage-only chunk the client did not ask for.
//! - [`body::MeteredBody`]: the response body wrapper that sees every frame and ends the request.
//! - [`meter::RequestMeter`]: records each request exactly once (counters, cost, access line).
//! - [`event`]: the "request finished" event that side paths subscribe to.
//! - [`payload`]: one SSE data payload (or a JSON body's top level) read with a borrowed view: the
//!   JSON cursor of [`crate::json::scan`], which reads exactly as serde_json would.
//! - [`price`]: the built-in price table and exact cost arithmetic.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

pub mod body;
#[cfg(test)]
mod equivalence;
pub mod event;
pub mod meter;
#[cfg(test)]
mod oracle;
pub mod payload;
pub mod price;
pub mod sse;

use serde::Deserialize;

/// Token usage of one request, normalised across OpenAI's two naming schemes.
/// `input` includes `cached`; `output` includes `reasoning`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// The `usage` object as OpenAI sends it: `prompt_tokens`/`completion_tokens` (chat, completions,
/// embeddings) or `input_tokens`/`output_tokens` (Responses API). Unknown fields are ignored.
/// `payload::raw_usage` reads this shape by hand, exactly as serde's derive does: a change here is
/// a change there (the equivalence tests compare the two).
#[derive(Debug, Clone, Deserialize, Default)]
struct RawUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<InputDetails>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Clone, Deserialize, Default)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Usage {
        Usage {
            input: r.prompt_tokens.unwrap_or(0),
            cached: r
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output: r.completion_tokens.unwrap_or(0),
            reasoning: r
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Parses a `usage` object given as JSON text.
pub fn parse_usage_object(json: &[u8]) -> Option<Usage> {
    let mut de = serde_json::Deserializer::from_slice(json);
    RawUsage::deserialize(&mut de).ok().map(Usage::from)
}

/// The top-level `usage` of a JSON response body, read with a borrowed view (any spacing,
/// key order or escapes; the last non-null `usage` wins).
///
/// When the body is not one whole JSON document (only the last window of a very long body is
/// kept), the last `"usage"` key with an object value is taken: inside JSON strings a quote is
/// always escaped, so a literal `"usage"` followed by `:` can only be a key, and OpenAI puts the
/// top-level usage last.
pub fn find_in_json(body: &[u8]) -> Option<Usage> {
    if let Some(u) = payload::json_body_usage(body) {
        return u;
    }
    let finder = memchr::memmem::Finder::new(b"\"usage\"");
    let mut best = None;
    for pos in finder.find_iter(body) {
        if let Some(start) = object_after_key(body, pos + 7) {
            best = Some(start);
        }
    }
    let start = best?;
    let mut de = serde_json::Deserializer::from_slice(body.get(start..)?).into_iter::<RawUsage>();
    de.next()?.ok().map(Usage::from)
}

/// After a key ending at `i`: skips whitespace, a colon, whitespace; returns where a `{` starts.
fn object_after_key(b: &[u8], mut i: usize) -> Option<usize> {
    while b.get(i)?.is_ascii_whitespace() {
        i += 1;
    }
    if *b.get(i)? != b':' {
        return None;
    }
    i += 1;
    while b.get(i)?.is_ascii_whitespace() {
        i += 1;
    }
    (*b.get(i)? == b'{').then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_usage_with_details() {
        let body = br#"{
  "id": "chatcmpl-1",
  "choices": [{"message": {"content": "the \"usage\": {\"prompt_tokens\": 999} is text"}}],
  "usage": {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 128, "accepted_prediction_tokens": 0}
  },
  "system_fingerprint": "fp_x"
}"#;
        assert_eq!(
            find_in_json(body),
            Some(Usage {
                input: 1200,
                cached: 1024,
                output: 300,
                reasoning: 128
            })
        );
    }

    #[test]
    fn responses_usage_and_nested_null() {
        let body = br#"{"id":"resp_1","usage":null,"output":[{"usage":{"input_tokens":1}}],"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":10},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":5},"total_tokens":70}}"#;
        assert_eq!(
            find_in_json(body),
            Some(Usage {
                input: 50,
                cached: 10,
                output: 20,
                reasoning: 5
            })
        );
    }

    #[test]
    fn embeddings_usage_and_missing_usage() {
        let body = br#"{"object":"list","data":[],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(
            find_in_json(body),
            Some(Usage {
                input: 8,
                cached: 0,
                output: 0,
                reasoning: 0
            })
        );
        assert_eq!(find_in_json(br#"{"error":{"message":"x"}}"#), None);
        assert_eq!(find_in_json(br#"{"usage": nul"#), None);
        assert_eq!(find_in_json(br#"{"usage": {"prompt_tokens": 5"#), None);
    }
}
