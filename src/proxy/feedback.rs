//! `POST /v1/feedback`: a quality score for an answer, by its `x-tailor-request-id`, on any
//! replica. The id says (and its HMAC proves) which route and model answered; the score is
//! counted there: `tailor_feedback_total`, `tailor_feedback_score_total` and its squares.
//!
//! Once per id: with `shared_state.redis`, the first score for an id counts across the fleet and
//! a repeat answers `"counted": false`. Without a shared store a repeated id counts again
//! (replicas cannot tell a repeat).

use bytes::Bytes;
use serde::Deserialize;

use crate::economics::{Ledger, Traffic};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::state::LiveState;

/// Largest feedback body read.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct Feedback {
    request_id: Option<String>,
    score: Option<Score>,
}

/// A score as sent: a number from 0 to 1, or `true` / `false` (1 / 0).
#[derive(Deserialize)]
#[serde(untagged)]
enum Score {
    Number(f64),
    Bool(bool),
}

fn invalid(param: &'static str, code: &'static str, message: &str) -> ProxyError {
    ProxyError::InvalidField {
        param,
        code,
        message: message.to_owned(),
    }
}

/// Counts one score; the JSON answer names the route and model it was counted for, and whether
/// it counted (false: a repeat).
pub async fn record(
    live: &LiveState,
    metrics: &Metrics,
    ledger: &Ledger,
    body: &[u8],
) -> Result<Bytes, ProxyError> {
    let f: Feedback =
        serde_json::from_slice(body).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
    let id = f.request_id.ok_or_else(|| {
        invalid(
            "request_id",
            "missing_required_parameter",
            "Missing required parameter: 'request_id'.",
        )
    })?;
    let score = match f.score {
        Some(Score::Number(s)) if (0.0..=1.0).contains(&s) => s,
        Some(Score::Bool(b)) => f64::from(u8::from(b)),
        Some(Score::Number(_)) => {
            return Err(invalid(
                "score",
                "invalid_value",
                "'score' must be a number from 0 to 1, or true / false.",
            ))
        }
        None => {
            return Err(invalid(
                "score",
                "missing_required_parameter",
                "Missing required parameter: 'score'.",
            ))
        }
    };
    let unknown = || {
        invalid(
            "request_id",
            "invalid_request_id",
            "'request_id' is not the x-tailor-request-id of an answer from this deployment.",
        )
    };
    let (route, model) = live.ids.verify(&id).ok_or_else(unknown)?;
    // labels come from the config only: a route or model it no longer has is refused
    let known = live.config.routes.iter().any(|r| {
        r.name == route && {
            let mut models = r
                .arms
                .iter()
                .map(|a| a.model)
                .chain(r.fallback.iter().copied());
            models.any(|m| live.config.models[m].name == model)
        }
    });
    if !known {
        return Err(unknown());
    }
    let shared = live.config.shared_state.redis.is_some();
    if !live.budgets.feedback_once(shared, &id).await? {
        return Ok(Bytes::from(
            serde_json::json!({ "route": route, "model": model, "counted": false }).to_string(),
        ));
    }
    let l = [route.as_str(), model.as_str()];
    metrics.feedback.with_label_values(&l).inc();
    metrics.feedback_score.with_label_values(&l).inc_by(score);
    metrics
        .feedback_score_sq
        .with_label_values(&l)
        .inc_by(score * score);
    // and on this replica's ledger, for the confidence in /economics
    ledger
        .arm(
            &route.as_str().into(),
            &model.as_str().into(),
            Traffic::Primary,
        )
        .record_feedback(score);
    Ok(Bytes::from(
        serde_json::json!({ "route": route, "model": model, "counted": true }).to_string(),
    ))
}
