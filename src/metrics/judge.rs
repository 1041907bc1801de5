//! The shadow judge's metrics: its verdicts on each primary/shadow pair, and its own traffic and
//! spend, in series of their own (never in the route's `tailor_cost_usd_total`).

use prometheus::{CounterVec, IntCounterVec, Opts, Registry};

pub struct JudgeMetrics {
    /// Pairs judged, by route, shadow model and verdict: the shadow's answer was better, the
    /// same, or worse than the primary's (unclear: the judge answered none of those words).
    pub judgements: IntCounterVec,
    /// The judge's requests by route, judge model and outcome (ok | error).
    pub requests: IntCounterVec,
    /// The judge's tokens by type (input, cached_input, output) and its spend in USD.
    pub tokens: IntCounterVec,
    pub cost: CounterVec,
}

impl JudgeMetrics {
    pub fn new(r: &Registry) -> Result<JudgeMetrics, prometheus::Error> {
        let judgements = IntCounterVec::new(
            Opts::new(
                "tailor_shadow_judgements_total",
                "Primary/shadow pairs judged by the route's judge model: verdict = better | same | worse (the shadow's answer against the primary's) | unclear",
            ),
            &["route", "model", "verdict"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "tailor_judge_requests_total",
                "Requests tailor sent to a shadow judge, by route, judge model and outcome (ok | error)",
            ),
            &["route", "model", "outcome"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "tailor_judge_tokens_total",
                "A shadow judge's tokens by type (input, cached_input, output): not in tailor_tokens_total",
            ),
            &["route", "model", "type"],
        )?;
        let cost = CounterVec::new(
            Opts::new(
                "tailor_judge_cost_usd_total",
                "A shadow judge's spend, USD: not in tailor_cost_usd_total",
            ),
            &["route", "model"],
        )?;
        r.register(Box::new(judgements.clone()))?;
        r.register(Box::new(requests.clone()))?;
        r.register(Box::new(tokens.clone()))?;
        r.register(Box::new(cost.clone()))?;
        Ok(JudgeMetrics {
            judgements,
            requests,
            tokens,
            cost,
        })
    }
}
