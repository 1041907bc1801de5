//! Budgets and rate limits (`limits:`): what each has spent, what is left, what it refused, and
//! the shared store's failures.

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

pub struct LimitMetrics {
    /// Spend in the current window of each dollar budget, and what is left (USD), as last seen
    /// by this replica (with Redis: the fleet's total at that moment).
    pub spent: GaugeVec,
    pub remaining: GaugeVec,
    /// Requests refused, by limit and reason = usd | tokens | requests.
    pub rejections: IntCounterVec,
    /// Operations on the shared store that failed or timed out, by op = reserve | settle | feedback.
    pub store_errors: IntCounterVec,
}

impl LimitMetrics {
    pub fn new(r: &Registry) -> Result<LimitMetrics, prometheus::Error> {
        let spent = GaugeVec::new(
            Opts::new(
                "tailor_limit_spent_usd",
                "Spend in the current window of a dollar budget of limits:, USD",
            ),
            &["limit"],
        )?;
        let remaining = GaugeVec::new(
            Opts::new(
                "tailor_limit_remaining_usd",
                "What is left of a dollar budget in its current window, USD",
            ),
            &["limit"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "tailor_limit_rejections_total",
                "Requests refused by a limit: reason = usd | tokens | requests",
            ),
            &["limit", "reason"],
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "tailor_shared_state_errors_total",
                "Operations on the shared store (Redis) that failed or took longer than shared_state.timeout",
            ),
            &["op"],
        )?;
        r.register(Box::new(spent.clone()))?;
        r.register(Box::new(remaining.clone()))?;
        r.register(Box::new(rejections.clone()))?;
        r.register(Box::new(store_errors.clone()))?;
        for op in ["reserve", "settle", "feedback"] {
            store_errors.with_label_values(&[op]);
        }
        Ok(LimitMetrics {
            spent,
            remaining,
            rejections,
            store_errors,
        })
    }
}
