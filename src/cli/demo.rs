//! `tailor demo`: tailor with the shipped routes.yaml in front of the built-in simulated OpenAI
//! (no API key needed), optionally with a realistic traffic mix sent to itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tailor::config::{Auth, Config, Secret, UpstreamKind};
use tailor::mock;
use tailor::reload::Adjust;

use super::common::runtime;
use super::serve::{load_adjusted, serve, Overrides};

pub fn run(path: PathBuf, o: Overrides, mock_listen: SocketAddr, rate: Option<f64>) -> Result<()> {
    runtime(Some(1))?.block_on(async move {
        let sim = mock::start(mock_listen, false)
            .await
            .context("starting the simulated OpenAI server")?;
        let sim_addr = sim.addr;
        let adjust: Adjust = Arc::new(move |c: &mut Config| {
            o.apply(c);
            for u in &mut c.upstreams {
                u.url = match u.kind {
                    UpstreamKind::Openai => format!("http://{sim_addr}/v1"),
                    UpstreamKind::Azure => format!("http://{sim_addr}"),
                };
                // the simulator, like OpenAI, answers 401 without a key: every upstream gets one
                // (passthrough forwards the caller's, which the demo's examples send)
                match &mut u.auth {
                    Auth::Key { key, .. } => {
                        key.get_or_insert_with(|| Secret::new("sk-demo".into()));
                    }
                    Auth::None => {
                        u.auth = Auth::Key {
                            env: "(demo)".into(),
                            key: Some(Secret::new("sk-demo".into())),
                        }
                    }
                    Auth::Passthrough => {}
                }
            }
        });
        let cfg = load_adjusted(&path, &adjust)?;
        let example_model = cfg
            .listed_models
            .iter()
            .find(|m| m.starts_with("gpt"))
            .cloned()
            .unwrap_or_else(|| "gpt-4o".into());
        serve(cfg, path, adjust, |api, admin| {
            out!(
                r#"
Demo: every upstream points at the simulated OpenAI on http://{sim_addr}/v1 (no API key needed).

Try:
  curl -s http://{api}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"{example_model}","messages":[{{"role":"user","content":"Hello"}}]}}' -i

  # the official SDK: pip install openai
  python3 -c 'from openai import OpenAI; c = OpenAI(base_url="http://{api}/v1", api_key="unused"); \
print(c.chat.completions.create(model="{example_model}", messages=[{{"role":"user","content":"Hi"}}]).choices[0].message.content)'

  curl -s http://{admin}/metrics | grep ^tailor_

Status page (routes, spend, cost per request per arm, the fine-tune verdict): http://{admin}/
Ctrl-C to stop."#
            );
            if let Some(rate) = rate.filter(|r| *r > 0.0) {
                out!("Sending demo traffic: {rate} requests/s (support A/B, summaries with a shadow, default).");
                out!("Access lines are off while the demo sends traffic, so this stays readable: watch the status page.");
                tokio::spawn(traffic(api, rate));
            }
        })
        .await
    })
}

/// The demo's traffic: `per_second` requests to tailor at `api`, a mix a support team might
/// send: questions on the `support` A/B route (sticky users, varied answer lengths), summaries on
/// the route with a shadow, and a few to the default route. Runs until the process ends.
async fn traffic(api: SocketAddr, per_second: f64) {
    const QUESTIONS: [&str; 6] = [
        "Where is my order 4821? It was supposed to arrive on Monday.",
        "My blender stopped working after 8 months, what can I do?",
        "Can I return a jacket I bought three weeks ago? It does not fit.",
        "How long does standard delivery take to Lyon?",
        "I was charged twice for order 7710, please help.",
        "Do you ship to Canada, and how much does it cost?",
    ];
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.1)));
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift: a fixed, reproducible mix
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    loop {
        tick.tick().await;
        let r = next();
        let q = QUESTIONS[(r % QUESTIONS.len() as u64) as usize];
        let words = 40 + (r >> 8) % 120;
        let (model, team, content) = match (r >> 20) % 10 {
            0..=6 => ("gpt-4o", Some("support"), q.to_owned()),
            7 | 8 => (
                "gpt-4o-summary",
                None,
                format!(
                    "Summarize this support conversation in two sentences: {q} / {}",
                    QUESTIONS[((r >> 24) % 6) as usize]
                ),
            ),
            _ => ("gpt-4o", None, format!("Translate to French: {q}")),
        };
        let body = json!({"model": model, "user": format!("cust-{}", (r >> 32) % 500),
            "messages": [{"role": "user", "content": content}]});
        let mut req = Request::post(format!("http://{api}/v1/chat/completions"))
            .header(CONTENT_TYPE, "application/json")
            .header("x-mock-words", words.to_string());
        if let Some(t) = team {
            req = req.header("x-team", t);
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else {
            continue;
        };
        let c = client.clone();
        tokio::spawn(async move {
            if let Ok(resp) = c.request(req).await {
                let _ = resp.into_body().collect().await;
            }
        });
    }
}
