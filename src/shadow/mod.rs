//! Shadow traffic: a sampled copy of a route's requests also goes to another model. The client
//! gets only the primary answer and never waits for the copy: it runs in its own task, at most
//! `server.shadow_max_concurrency` at a time (a copy that finds no slot is dropped and counted),
//! and its tokens and cost go to their own series. When both have ended, the pair is compared:
//! latency, output tokens, cost, and whether the answers agree (same text, or the same JSON value).
//! With `shadow.judge`, a model also says which answer is better ([`judge`]).

pub mod judge;

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::Route;
use crate::economics::Traffic;
use crate::forward::client::HttpClient;
use crate::forward::upstream;
use crate::metrics::Measure;
use crate::request::{RequestView, SystemPrompt};
use crate::state::{LiveState, Shared};
use crate::telemetry::TraceHeaders;
use crate::usage::event::{Finished, Subscriber};
use crate::usage::price::{Price, PICO_PER_USD};
use crate::usage::sse::{self, SseScanner};
use crate::usage::{find_in_json, Usage};

/// Largest answer kept on either side of a pair for the comparison.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What the client of the primary request got, sent when the primary is recorded.
struct PrimaryResult {
    /// Answered successfully and completely.
    ok: bool,
    latency: Duration,
    output_tokens: u64,
    cost_pico: u128,
    /// The body as the client received it.
    body: Vec<Bytes>,
}

/// The primary's end of a pair: subscribed to the primary request's end.
pub struct PairTx(Mutex<Option<oneshot::Sender<PrimaryResult>>>);

impl Subscriber for PairTx {
    fn wants_answer(&self) -> bool {
        true
    }

    fn finished(&self, f: &Finished<'_>) {
        let Some(tx) = self.0.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        // the shadow task may have given up waiting; nothing to do then
        let _ = tx.send(PrimaryResult {
            ok: f.answered && !f.answer_truncated,
            latency: f.elapsed,
            output_tokens: f.usage.output,
            cost_pico: f.cost_pico,
            body: f.answer.to_vec(),
        });
    }
}

/// Starts a shadow copy of this request if the route has a shadow, the draw falls within its
/// percent and a slot is free. Returns the primary's end of the pair, for the primary's meter.
pub fn launch(
    shared: &Arc<Shared>,
    live: &Arc<LiveState>,
    route: &Route,
    view: &RequestView<'_>,
    parts: &http::request::Parts,
    trace: Option<&TraceHeaders>,
    request_id: &str,
) -> Option<PairTx> {
    let s = route.shadow.as_ref()?;
    // percent in hundredths: 0.01 % resolution
    if shared.next_random() % 10_000 >= (s.percent * 100.0).round() as u64 {
        return None;
    }
    let Ok(permit) = shared.shadow_slots.clone().try_acquire_owned() else {
        shared
            .metrics
            .shadow_dropped
            .with_label_values(&[&route.name])
            .inc();
        return None;
    };
    let cfg = &live.config;
    let model = &cfg.models[s.model];
    let upstream = &cfg.upstreams[model.upstream];
    let prompt = route.prompt_for(s.model).map(|p| SystemPrompt {
        text: &p.text,
        replace: p.replace,
    });
    // a stream is asked for its usage, which tailor reads itself here
    let body = view.rewrite(&model.id, view.stream, prompt);
    let req = match upstream::request(
        upstream,
        model,
        view.endpoint,
        parts.uri.query(),
        &parts.headers,
        // the primary's trace headers: a shadow copy has no span of its own
        trace,
        body,
    ) {
        Ok(r) => r.map(http_body_util::Full::new),
        Err(e) => {
            tracing::debug!(request_id, error = %e, "shadow request not built");
            return None;
        }
    };
    let (tx, rx) = oneshot::channel();
    let client = live.clients.get(model.upstream).clone();
    let judge = s
        .judge
        .as_ref()
        .map(|j| judge::JudgeCtx::new(live.clone(), j, view));
    let ctx = Pair {
        judge,
        id: request_id.to_owned(),
        route: route.name.as_str().into(),
        model: model.name.as_str().into(),
        price: model.price,
        limit: upstream.timeouts.total,
        shared: shared.clone(),
    };
    tokio::spawn(async move {
        let _permit = permit;
        ctx.run(client, req, rx).await;
    });
    Some(PairTx(Mutex::new(Some(tx))))
}

struct Pair {
    judge: Option<judge::JudgeCtx>,
    id: String,
    route: Arc<str>,
    model: Arc<str>,
    price: Price,
    limit: Duration,
    shared: Arc<Shared>,
}

/// What the shadow request gave.
struct ShadowResult {
    ok: bool,
    usage: Usage,
    cost_pico: u128,
    latency: Duration,
    answer: Option<String>,
}

impl Pair {
    async fn run(
        self,
        client: HttpClient,
        req: http::Request<http_body_util::Full<Bytes>>,
        rx: oneshot::Receiver<PrimaryResult>,
    ) {
        let started = Instant::now();
        let got = tokio::time::timeout(self.limit, async {
            let resp = client.request(req).await.ok()?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((status, body))
        })
        .await
        .ok()
        .flatten();
        let latency = started.elapsed();
        let shadow = match got {
            Some((status, body)) if status.is_success() => {
                let (usage, answer) = read_answer(&body);
                let usage = usage.unwrap_or_default();
                ShadowResult {
                    ok: answer.is_some(),
                    cost_pico: self.price.cost_pico(&usage),
                    usage,
                    latency,
                    answer,
                }
            }
            _ => ShadowResult {
                ok: false,
                usage: Usage::default(),
                cost_pico: 0,
                latency,
                answer: None,
            },
        };
        self.record(&shadow);
        // the primary always reports (its meter reports when dropped, too)
        let primary = tokio::time::timeout(Duration::from_secs(3_600), rx)
            .await
            .ok()
            .and_then(Result::ok);
        let primary = self.compare(&shadow, primary);
        if let (Some(j), Some(a), Some(b)) = (&self.judge, primary, &shadow.answer) {
            j.judge(&self.shared, &self.route, &self.model, &a, b).await;
        }
    }

    fn record(&self, s: &ShadowResult) {
        let m = &self.shared.metrics;
        let labels = [&*self.route, &*self.model];
        let outcome = if s.ok { "ok" } else { "upstream_error" };
        m.shadow_requests
            .with_label_values(&[labels[0], labels[1], outcome])
            .inc();
        for (kind, n) in [
            ("input", s.usage.input.saturating_sub(s.usage.cached)),
            ("cached_input", s.usage.cached),
            ("output", s.usage.output),
        ] {
            m.shadow_tokens
                .with_label_values(&[labels[0], labels[1], kind])
                .inc_by(n);
        }
        self.shared
            .keep
            .ledger
            .arm(&self.route, &self.model, Traffic::Shadow)
            .record(s.ok, s.ok, &s.usage, s.cost_pico, s.latency);
    }

    /// Compares and counts a pair; returns the primary's answer text, for the judge.
    fn compare(&self, s: &ShadowResult, primary: Option<PrimaryResult>) -> Option<String> {
        let m = &self.shared.metrics;
        let primary = primary.filter(|p| p.ok);
        let primary_answer = primary.as_ref().and_then(|p| {
            let body: Vec<u8> = p.body.concat();
            read_answer(&body).1
        });
        let result = match (&primary_answer, &s.answer) {
            (None, _) => "primary_error",
            (_, None) => "shadow_error",
            (Some(a), Some(b)) if same_answer(a, b) => "agree",
            _ => "differ",
        };
        m.shadow_comparisons
            .with_label_values(&[&self.route, &self.model, result])
            .inc();
        // shadow − primary as integers (µs, tokens, picodollars): summed exactly, and scaled
        // once for the log line, so neither prints float noise
        let deltas = match (&primary, s.ok) {
            (Some(p), true) => {
                let diff = |a: u128, b: u128| {
                    i64::try_from(a as i128 - b as i128).unwrap_or(if a > b {
                        i64::MAX
                    } else {
                        i64::MIN
                    })
                };
                let d = [
                    (
                        Measure::LatencySeconds,
                        diff(s.latency.as_micros(), p.latency.as_micros()),
                    ),
                    (
                        Measure::OutputTokens,
                        diff(s.usage.output.into(), p.output_tokens.into()),
                    ),
                    (Measure::CostUsd, diff(s.cost_pico, p.cost_pico)),
                ];
                for (measure, units) in d {
                    m.shadow_delta.add(&self.route, &self.model, measure, units);
                }
                Some(d.map(|(_, units)| units))
            }
            _ => None,
        };
        tracing::info!(
            target: "tailor::shadow",
            shadow_pair = %self.id,
            route = %self.route,
            model = %self.model,
            result,
            input_tokens = s.usage.input,
            output_tokens = s.usage.output,
            cost_usd = s.cost_pico as f64 / PICO_PER_USD,
            duration_ms = s.latency.as_micros() as f64 / 1e3,
            latency_delta_ms = deltas.map(|[us, _, _]| us as f64 / 1e3),
            output_tokens_delta = deltas.map(|[_, tokens, _]| tokens),
            cost_delta_usd = deltas.map(|[_, _, pico]| pico as f64 / PICO_PER_USD),
        );
        primary_answer
    }
}

/// Usage and answer text of a whole response body: a JSON completion or an SSE stream.
/// The text is the generated content (chat `content`, Responses output text, completions `text`)
/// followed by any tool call arguments.
fn read_answer(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let trimmed = body.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(trimmed) else {
            return (None, None);
        };
        let mut text = String::new();
        collect_text(&v, &mut text);
        return (find_in_json(body), Some(text));
    }
    // SSE: scan for usage and completeness, then join the deltas
    let mut scan = SseScanner::new(false);
    let _ = scan.feed(Bytes::copy_from_slice(body));
    let _ = scan.finish();
    if !scan.complete() {
        return (scan.usage(), None);
    }
    let mut text = String::new();
    for data in sse::events(body).filter_map(|e| e.data) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) {
            collect_delta(&v, &mut text);
        }
    }
    (scan.usage(), Some(text))
}

/// Texts of a complete JSON answer (chat, completions, Responses).
fn collect_text(v: &serde_json::Value, out: &mut String) {
    for c in v["choices"].as_array().into_iter().flatten() {
        if let Some(s) = c["message"]["content"].as_str() {
            out.push_str(s);
        }
        if let Some(s) = c["text"].as_str() {
            out.push_str(s);
        }
        for t in c["message"]["tool_calls"].as_array().into_iter().flatten() {
            out.push_str(t["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    for item in v["output"].as_array().into_iter().flatten() {
        for part in item["content"].as_array().into_iter().flatten() {
            out.push_str(part["text"].as_str().unwrap_or_default());
        }
        out.push_str(item["arguments"].as_str().unwrap_or_default());
    }
}

/// Texts of one streamed event.
fn collect_delta(v: &serde_json::Value, out: &mut String) {
    for c in v["choices"].as_array().into_iter().flatten() {
        out.push_str(c["delta"]["content"].as_str().unwrap_or_default());
        out.push_str(c["text"].as_str().unwrap_or_default());
        for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            out.push_str(t["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    if v["type"] == "response.output_text.delta" {
        out.push_str(v["delta"].as_str().unwrap_or_default());
    }
}

/// The same text, or, when both are JSON, the same parsed value (key order and spacing aside).
fn same_answer(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a.trim()),
        serde_json::from_str::<serde_json::Value>(b.trim()),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_agree_as_text_or_as_json() {
        assert!(same_answer("hello", "hello"));
        assert!(!same_answer("hello", "hello!"));
        assert!(same_answer(r#"{"a": 1, "b": [2]}"#, r#"{"b":[2],"a":1}"#));
        assert!(!same_answer(r#"{"a": 1}"#, r#"{"a": 2}"#));
    }

    #[test]
    fn answers_are_read_from_json_and_from_streams() {
        let json = br#"{"choices":[{"message":{"role":"assistant","content":"Hi there"}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        let (u, t) = read_answer(json);
        assert_eq!(t.as_deref(), Some("Hi there"));
        assert_eq!(u.map(|u| u.output), Some(2));
        let sse = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\ndata: [DONE]\n\n";
        let (u, t) = read_answer(sse);
        assert_eq!(t.as_deref(), Some("Hi there"));
        assert_eq!(u.map(|u| u.output), Some(2));
        // a stream cut short has no answer
        let cut = &sse[..sse.len() - 14];
        assert_eq!(read_answer(cut).1, None);
    }
}
