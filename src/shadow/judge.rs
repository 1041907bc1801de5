//! A shadow pair judged by a model (`shadow.judge`): the request and both answers go to the
//! judge, which says whether the shadow's answer is better than, the same as, or worse than the
//! primary's. Its verdicts are `tailor_shadow_judgements_total`; its own requests, tokens and
//! spend are `tailor_judge_*`, never the route's.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

use super::{read_answer, MAX_ANSWER_BYTES};
use crate::config::Judge;
use crate::request::{Endpoint, RequestView};
use crate::state::{LiveState, Shared};
use crate::usage::price::PICO_PER_USD;

/// What the judge is asked about one pair, captured when the shadow copy starts.
pub struct JudgeCtx {
    live: Arc<LiveState>,
    model: usize,
    prompt: Arc<str>,
    /// The request's system and user texts.
    request: String,
}

/// The verdict word in a judge's answer: the first of BETTER, SAME, WORSE it contains.
pub fn verdict(answer: &str) -> &'static str {
    let up = answer.to_ascii_uppercase();
    [("BETTER", "better"), ("SAME", "same"), ("WORSE", "worse")]
        .iter()
        .filter_map(|(w, v)| up.find(w).map(|i| (i, *v)))
        .min()
        .map_or("unclear", |(_, v)| v)
}

impl JudgeCtx {
    pub fn new(live: Arc<LiveState>, j: &Judge, view: &RequestView<'_>) -> JudgeCtx {
        let t = view.text();
        let mut request = String::new();
        if !t.system.is_empty() {
            request.push_str("System:\n");
            request.push_str(&t.system);
            request.push_str("\n\n");
        }
        request.push_str("User:\n");
        request.push_str(&t.user);
        JudgeCtx {
            live,
            model: j.model,
            prompt: j.prompt.clone(),
            request,
        }
    }

    /// Asks the judge about one pair and counts its verdict; `shadow_model` names the pair.
    pub async fn judge(
        &self,
        shared: &Shared,
        route: &str,
        shadow_model: &str,
        primary: &str,
        shadow: &str,
    ) {
        let cfg = &self.live.config;
        let model = &cfg.models[self.model];
        let upstream = &cfg.upstreams[model.upstream];
        let body = serde_json::json!({
            "model": model.id,
            "messages": [
                {"role": "system", "content": &*self.prompt},
                {"role": "user", "content": format!(
                    "The request:\n{}\n\nAnswer A:\n{primary}\n\nAnswer B:\n{shadow}",
                    self.request
                )},
            ],
            "temperature": 0,
            "max_completion_tokens": 16,
        });
        let m = &shared.metrics.judge;
        let labels = [route, model.name.as_str()];
        let got = async {
            let req = crate::forward::upstream::request(
                upstream,
                model,
                Endpoint::Chat,
                None,
                &HeaderMap::new(),
                None,
                serde_json::to_vec(&body).ok()?.into(),
            )
            .ok()?
            .map(http_body_util::Full::new);
            let client = self.live.clients.get(model.upstream).clone();
            let resp =
                tokio::time::timeout(upstream.timeouts.total.max(Duration::from_secs(1)), async {
                    let resp = client.request(req).await.ok()?;
                    if !resp.status().is_success() {
                        return None;
                    }
                    Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                        .collect()
                        .await
                        .ok()
                        .map(|b| b.to_bytes())
                })
                .await
                .ok()??;
            Some(read_answer(&resp))
        }
        .await;
        let Some((usage, Some(answer))) = got else {
            m.requests
                .with_label_values(&[labels[0], labels[1], "error"])
                .inc();
            return;
        };
        m.requests
            .with_label_values(&[labels[0], labels[1], "ok"])
            .inc();
        if let Some(u) = usage {
            for (kind, n) in [
                ("input", u.input.saturating_sub(u.cached)),
                ("cached_input", u.cached),
                ("output", u.output),
            ] {
                m.tokens
                    .with_label_values(&[labels[0], labels[1], kind])
                    .inc_by(n);
            }
            m.cost
                .with_label_values(&labels)
                .inc_by(model.price.cost_pico(&u) as f64 / PICO_PER_USD);
        }
        let v = verdict(&answer);
        m.judgements
            .with_label_values(&[route, shadow_model, v])
            .inc();
        tracing::debug!(target: "tailor::shadow", route, model = shadow_model, verdict = v, "shadow pair judged");
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn the_first_verdict_word_counts() {
        assert_eq!(verdict("BETTER"), "better");
        assert_eq!(verdict("  same.\n"), "same");
        assert_eq!(verdict("Worse, not better"), "worse");
        assert_eq!(verdict("I cannot tell"), "unclear");
    }
}
