//! Streamed answers: OpenAI's SSE framing for chat, completions and responses, paced, and broken
//! on request (reset, truncation, stall) for the fault tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::Either;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::answer::Sim;
use super::wire::{common_headers, header_num, ChannelBody, MockBody};

impl Sim {
    /// The SSE events of a streamed answer, as OpenAI frames them.
    fn events(&self, endpoint: &str, include_usage: bool) -> (Vec<String>, Vec<String>) {
        let f = self.fmt;
        let data = |v: Value| f.event(None, &v);
        let usage_field = |v: &mut Value| {
            if include_usage {
                v["usage"] = Value::Null;
            }
        };
        let mut head = Vec::new();
        let mut body = Vec::new();
        match endpoint {
            "/chat/completions" => {
                let chunk = |delta: Value, finish: Value| {
                    let mut c = json!({"id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "service_tier": "default", "system_fingerprint": "fp_tailor_mock",
                        "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}]});
                    usage_field(&mut c);
                    data(c)
                };
                match &self.tool {
                    Some(name) => {
                        head.push(chunk(json!({"role": "assistant", "content": Value::Null, "tool_calls": [{"index": 0, "id": format!("call_{}", self.id), "type": "function", "function": {"name": name, "arguments": ""}}], "refusal": Value::Null}), Value::Null));
                        let args = self.tool_args();
                        let mut rest = args.as_str();
                        while !rest.is_empty() {
                            let mut cut = rest.len().min(8);
                            while !rest.is_char_boundary(cut) {
                                cut += 1;
                            }
                            body.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": &rest[..cut]}}]}), Value::Null));
                            rest = &rest[cut..];
                        }
                        body.push(chunk(json!({}), json!("tool_calls")));
                    }
                    None => {
                        head.push(chunk(
                            json!({"role": "assistant", "content": "", "refusal": Value::Null}),
                            Value::Null,
                        ));
                        for (i, w) in self.words.iter().enumerate() {
                            let piece = match (i, self.big_event) {
                                (0, Some(n)) => format!("{w}{}", "x".repeat(n)),
                                (0, None) => w.clone(),
                                _ => format!(" {w}"),
                            };
                            body.push(chunk(json!({"content": piece}), Value::Null));
                        }
                        body.push(chunk(json!({}), json!(self.finish)));
                    }
                }
                if include_usage {
                    body.push(data(json!({"id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "service_tier": "default", "system_fingerprint": "fp_tailor_mock", "choices": [], "usage": self.chat_usage()})));
                }
                body.push(f.done());
            }
            "/completions" => {
                for (i, w) in self.words.iter().enumerate() {
                    let piece = if i == 0 { w.clone() } else { format!(" {w}") };
                    let last = i + 1 == self.words.len();
                    let mut c = json!({"id": format!("cmpl-{}", self.id), "object": "text_completion", "created": self.created, "model": self.model,
                        "choices": [{"text": piece, "index": 0, "logprobs": Value::Null, "finish_reason": if last { json!(self.finish) } else { Value::Null }}]});
                    usage_field(&mut c);
                    body.push(data(c));
                }
                if include_usage {
                    body.push(data(json!({"id": format!("cmpl-{}", self.id), "object": "text_completion", "created": self.created, "model": self.model, "choices": [], "usage": self.chat_usage()})));
                }
                body.push(f.done());
            }
            _ => {
                let mut seq = 0u64;
                let mut ev = |kind: &str, mut v: Value| {
                    v["type"] = json!(kind);
                    v["sequence_number"] = json!(seq);
                    seq += 1;
                    f.event(Some(kind), &v)
                };
                let item_id = format!("msg_{}", self.id);
                head.push(ev(
                    "response.created",
                    json!({"response": self.response_object("in_progress", false)}),
                ));
                head.push(ev(
                    "response.in_progress",
                    json!({"response": self.response_object("in_progress", false)}),
                ));
                head.push(ev("response.output_item.added", json!({"output_index": 0, "item": {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}})));
                head.push(ev("response.content_part.added", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})));
                for (i, w) in self.words.iter().enumerate() {
                    let piece = if i == 0 { w.clone() } else { format!(" {w}") };
                    body.push(ev("response.output_text.delta", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []})));
                }
                body.push(ev("response.output_text.done", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": self.text(), "logprobs": []})));
                body.push(ev("response.content_part.done", json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": self.text(), "annotations": [], "logprobs": []}})));
                body.push(ev("response.output_item.done", json!({"output_index": 0, "item": {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": self.text(), "annotations": [], "logprobs": []}]}})));
                body.push(ev(
                    "response.completed",
                    json!({"response": self.response_object("completed", true)}),
                ));
            }
        }
        (head, body)
    }

    /// The streamed answer; `cancelled` counts streams whose reader went away early.
    pub fn stream(
        &self,
        endpoint: &str,
        req: &Value,
        h: &HeaderMap,
        rid: &str,
        cancelled: Arc<AtomicU64>,
    ) -> Response<MockBody> {
        let include_usage = req["stream_options"]["include_usage"] == true;
        let (head, body) = self.events(endpoint, include_usage);
        let delay = header_num(h, "x-mock-chunk-delay-ms").map(Duration::from_millis);
        let fail_after = header_num(h, "x-mock-fail-after");
        let truncate_after = header_num(h, "x-mock-truncate-after");
        let stall_after = header_num(h, "x-mock-stall-after");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for e in head {
                if tx.send(Ok(Bytes::from(e))).await.is_err() {
                    return;
                }
            }
            for (i, e) in body.into_iter().enumerate() {
                // pacing is between chunks: the first token comes at once, as time to first token
                // is what a proxy adds to
                if let (Some(d), true) = (delay, i > 0) {
                    tokio::time::sleep(d).await;
                }
                if fail_after == Some(i as u64) {
                    // let what was sent reach the wire first, as a real mid-stream reset would
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let _ = tx
                        .send(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "mock: reset mid-stream",
                        )))
                        .await;
                    return;
                }
                if truncate_after == Some(i as u64) {
                    return;
                }
                if stall_after == Some(i as u64) {
                    // silent, connection open, until the reader goes away
                    tx.closed().await;
                    cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if tx.send(Ok(Bytes::from(e))).await.is_err() {
                    cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        });
        let mut r = Response::new(Either::Right(ChannelBody(rx)));
        common_headers(r.headers_mut(), "text/event-stream; charset=utf-8", rid);
        r
    }
}
