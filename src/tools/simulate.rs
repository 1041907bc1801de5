//! `tailor simulate`: recorded traffic (capture metadata files) replayed through a candidate
//! config's classifier, offline: no upstream is called. Per route and arm: request share, tokens,
//! projected cost per day and month, against what the same traffic actually cost.
//!
//! Each metadata line carries what routing needs (model asked, endpoint, user, metadata,
//! non-secret headers, stream); the dataset line at the same position in the companion file
//! (`x.meta.jsonl` → `x.jsonl`) gives the messages and tools, for system/content/tools/size rules.
//! Tokens are the recorded usage; the input changes by the difference between the candidate
//! arm's system prompt (counted with the candidate model's tokenizer, as the system message it is
//! sent as) and the one the request was recorded with (as recorded). A line without usage is
//! counted from its messages and answer with the candidate model's tokenizer. Draws for
//! non-sticky splits come from a hash of the request id, so a run is reproducible.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{json, Value};

use crate::classify;
use crate::config::Config;
use crate::request::{Endpoint, RequestView};
use crate::tokens::chat;
use crate::usage::price::PICO_PER_USD;
use crate::usage::Usage;

#[derive(Debug, Serialize, Default)]
pub struct ArmProjection {
    pub route: String,
    pub model: String,
    pub requests: u64,
    /// Of all replayed requests.
    pub share: f64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    /// At the candidate model's price, for the replayed requests.
    pub projected_cost_usd: f64,
    pub projected_usd_per_day: f64,
    pub projected_usd_per_month: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct Projection {
    pub requests: u64,
    /// Lines that could not be replayed (unparseable, or no route matches in the candidate).
    pub skipped: u64,
    pub unrouted: u64,
    /// Seconds between the first and the last recorded request.
    pub span_seconds: f64,
    pub arms: Vec<ArmProjection>,
    pub actual_cost_usd: f64,
    pub actual_usd_per_day: f64,
    pub projected_cost_usd: f64,
    pub projected_usd_per_day: f64,
    pub projected_usd_per_month: f64,
}

/// FNV-1a of the request id: the draw for a non-sticky split.
fn draw_of(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Replays `meta_lines` (with `data_lines` at the same positions, when present) through `cfg`.
pub fn simulate(cfg: &Config, meta_lines: &[&str], data_lines: &[&str]) -> Projection {
    let mut p = Projection::default();
    let mut arms: BTreeMap<(usize, usize), ArmProjection> = BTreeMap::new();
    let (mut first, mut last) = (f64::MAX, f64::MIN);
    for (i, line) in meta_lines.iter().enumerate() {
        let Ok(meta) = serde_json::from_str::<Value>(line) else {
            p.skipped += 1;
            continue;
        };
        let req = &meta["request"];
        let endpoint = req["endpoint"]
            .as_str()
            .and_then(Endpoint::from_name)
            .unwrap_or(Endpoint::Chat);
        let data: Value = data_lines
            .get(i)
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        let mut messages = data["messages"].as_array().cloned().unwrap_or_default();
        let answer = if messages.last().is_some_and(|m| m["role"] == "assistant") {
            messages.pop()
        } else {
            None
        };
        let mut body =
            json!({"model": req["model"], "messages": messages, "stream": req["stream"]});
        for k in ["user", "metadata"] {
            if !req[k].is_null() {
                body[k] = req[k].clone();
            }
        }
        if let Some(t) = data.get("tools") {
            body["tools"] = t.clone();
        }
        let Ok(bytes) = serde_json::to_vec(&body) else {
            p.skipped += 1;
            continue;
        };
        let Ok(view) = RequestView::parse(&bytes, endpoint) else {
            p.skipped += 1;
            continue;
        };
        let mut headers = HeaderMap::new();
        for (k, v) in req["headers"].as_object().into_iter().flatten() {
            if let (Ok(k), Some(Ok(v))) = (
                HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(k, v);
            }
        }
        let id = meta["request_id"].as_str().unwrap_or_default();
        let Some(d) = classify::classify(cfg, &view, &headers, draw_of(id), &|_| true) else {
            p.unrouted += 1;
            continue;
        };
        let recorded = &meta["usage"];
        let enc = cfg.models[d.model].encoding();
        let new_prompt = cfg.routes[d.route]
            .prompt_for(d.model)
            .map_or(0, |pr| chat::system_prompt_tokens(enc, &pr.text));
        // recorded usage is the upstream's; a line without it (a capture from another tool) is
        // counted from its messages, the arm prompt it was recorded with not among them
        let input = match recorded["input_tokens"].as_u64() {
            Some(n) => {
                let old_prompt = req["arm_prompt_tokens"].as_u64().unwrap_or(0);
                (n + new_prompt).saturating_sub(old_prompt)
            }
            None => chat::request_prompt_tokens(enc, endpoint, &bytes).unwrap_or(0) + new_prompt,
        };
        let output = recorded["output_tokens"].as_u64().unwrap_or_else(|| {
            answer.as_ref().map_or(0, |a| {
                // the answer's tokens, without the framing of a message in a prompt
                chat::message_tokens(enc, a)
                    .saturating_sub(chat::TOKENS_PER_MESSAGE + enc.count("assistant"))
            })
        });
        let u = Usage {
            input,
            cached: recorded["cached_tokens"].as_u64().unwrap_or(0).min(input),
            output,
            reasoning: 0,
        };
        let cost = cfg.models[d.model].price.cost_pico(&u) as f64 / PICO_PER_USD;
        let a = arms
            .entry((d.route, d.model))
            .or_insert_with(|| ArmProjection {
                route: cfg.routes[d.route].name.clone(),
                model: cfg.models[d.model].name.clone(),
                ..ArmProjection::default()
            });
        a.requests += 1;
        a.input_tokens += u.input;
        a.cached_tokens += u.cached;
        a.output_tokens += u.output;
        a.projected_cost_usd += cost;
        p.requests += 1;
        p.projected_cost_usd += cost;
        p.actual_cost_usd += meta["cost_usd"].as_f64().unwrap_or(0.0);
        if let Some(t) = meta["time"].as_f64() {
            first = first.min(t);
            last = last.max(t);
        }
    }
    p.span_seconds = if last > first { last - first } else { 0.0 };
    // a day's worth: scaled from the recorded span (at least one second)
    let per_day = 86_400.0 / p.span_seconds.max(1.0);
    p.actual_usd_per_day = p.actual_cost_usd * per_day;
    p.projected_usd_per_day = p.projected_cost_usd * per_day;
    p.projected_usd_per_month = p.projected_usd_per_day * 30.0;
    p.arms = arms
        .into_values()
        .map(|mut a| {
            a.share = a.requests as f64 / p.requests.max(1) as f64;
            a.projected_usd_per_day = a.projected_cost_usd * per_day;
            a.projected_usd_per_month = a.projected_usd_per_day * 30.0;
            a
        })
        .collect();
    p
}

impl Projection {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} requests replayed over {:.0} s of recorded traffic ({} unrouted, {} unreadable)\n",
            self.requests, self.span_seconds, self.unrouted, self.skipped
        );
        let _ = writeln!(
            s,
            "{:<16} {:<16} {:>8} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "route",
            "model",
            "requests",
            "share",
            "input tok",
            "cached tok",
            "output tok",
            "$/day",
            "$/month"
        );
        for a in &self.arms {
            let _ = writeln!(
                s,
                "{:<16} {:<16} {:>8} {:>6.1}% {:>12} {:>12} {:>12} {:>12.4} {:>12.2}",
                a.route,
                a.model,
                a.requests,
                a.share * 100.0,
                a.input_tokens,
                a.cached_tokens,
                a.output_tokens,
                a.projected_usd_per_day,
                a.projected_usd_per_month
            );
        }
        let _ = writeln!(
            s,
            "\nprojected: ${:.4} for these requests, ${:.4}/day, ${:.2}/month\nactual:    ${:.4} for these requests, ${:.4}/day",
            self.projected_cost_usd,
            self.projected_usd_per_day,
            self.projected_usd_per_month,
            self.actual_cost_usd,
            self.actual_usd_per_day
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Encoding;

    /// A recorded line without usage is counted from its messages and answer with the candidate
    /// model's tokenizer: cl100k_base for gpt-4, o200k_base for gpt-4o.
    #[test]
    fn a_line_without_usage_is_counted_with_the_candidates_tokenizer() {
        let data = r#"{"messages":[{"role":"user","content":"hello there"},{"role":"assistant","content":"お誕生日おめでとう"}]}"#;
        let meta = r#"{"request":{"endpoint":"chat","model":"m","stream":false,"headers":{}},"request_id":"r1","time":1}"#;
        // the cookbook's example: 8 tokens in o200k_base, 9 in cl100k_base
        for (id, enc, answer) in [
            ("gpt-4o-2024-08-06", Encoding::O200kBase, 8),
            ("gpt-4-0613", Encoding::Cl100kBase, 9),
        ] {
            let y = format!("upstreams:\n  u: {{ url: \"http://127.0.0.1:1/v1\" }}\nmodels:\n  m: {{ upstream: u, id: {id}, price: {{ input: 1, output: 1 }} }}\nroutes:\n  - {{ name: r, split: [{{ model: m }}] }}\n");
            let cfg = Config::from_yaml(&y, &|_| None).unwrap();
            let p = simulate(&cfg, &[meta], &[data]);
            assert_eq!(p.requests, 1, "{id}");
            // 3 + "user" 1 + "hello there" 2, 3 to prime the reply (the same in both)
            assert_eq!(p.arms[0].input_tokens, 9, "{id}");
            assert_eq!(p.arms[0].output_tokens, answer, "{id}");
            assert_eq!(enc.count("お誕生日おめでとう"), answer);
        }
    }
}
