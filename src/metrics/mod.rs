//! Every metric, registered once into one registry at start-up.
//!
//! Label values come only from bounded sets: route and model names from the config, HTTP status
//! codes, and the `&'static str` kinds of enums. Never the client's `model` string, a user, a key,
//! a path or an error message.
//!
//! Per (route, model) handles are resolved once per config snapshot ([`RouteModelMeter`]), so the
//! request path only does atomic adds. Money counters are in [`cost`] (with [`decimal`], the
//! rounding of float gauges to fixed decimals); the shadow pairs' integer sums in [`delta`];
//! counters kept one copy per thread slot, so the workers never write the same cache line, in
//! [`shard`] (the economics ledger's).

pub mod cost;
pub mod delta;
pub mod judge;
pub mod limits;
pub mod shard;
pub mod telemetry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use self::cost::{decimal, CostCollector, CostCounter, USD_PLACES};
pub use self::delta::{DeltaSums, Measure};
use crate::usage::Usage;

const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
const TTFT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// All of tailor's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub tokens: IntCounterVec,
    pub reasoning: IntCounterVec,
    pub cost: Arc<CostCounter>,
    pub estimated_tokens: IntCounterVec,
    pub estimated_cost: Arc<CostCounter>,
    pub duration: HistogramVec,
    pub ttft: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub upstream_errors: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub unrouted: IntCounter,
    pub rejected: IntCounterVec,
    pub model_healthy: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub arm_weight: GaugeVec,
    pub model_info: IntGaugeVec,
    pub route_budget: GaugeVec,
    pub shadow_requests: IntCounterVec,
    pub shadow_tokens: IntCounterVec,
    pub shadow_dropped: IntCounterVec,
    pub capture_dropped: IntCounterVec,
    /// Quality feedback per (route, model): count, sum of scores, sum of squared scores.
    pub feedback: IntCounterVec,
    pub feedback_score: CounterVec,
    pub feedback_score_sq: CounterVec,
    pub shadow_comparisons: IntCounterVec,
    /// Sums of shadow − primary per pair (latency s, output tokens, cost USD): mean = sum / pairs.
    pub shadow_delta: DeltaSums,
    /// Set at scrape from this replica's economics report: the fine-tune verdicts.
    pub finetune: FinetuneGauges,
    pub judge: judge::JudgeMetrics,
    pub limits: limits::LimitMetrics,
    pub telemetry: telemetry::TelemetryMetrics,
}

/// The break-even verdict of each route that compares a fine-tune with its base model.
pub struct FinetuneGauges {
    pub savings_per_1k: GaugeVec,
    pub savings: GaugeVec,
    pub net: GaugeVec,
    pub breakeven_requests: GaugeVec,
    pub breakeven_seconds: GaugeVec,
    pub training_cost: GaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>, prometheus::Error> {
        let registry = Registry::new();
        fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
        let m = Metrics {
            requests: reg(
                &registry,
                counter(
                    "tailor_requests_total",
                    "Requests answered, by route, model, client, endpoint (chat, completions, embeddings, responses; passthrough: files, batches, fine_tuning, moderations, images, audio, other), HTTP status and how they ended",
                    &["route", "model", "client", "endpoint", "code", "outcome"],
                )?,
            )?,
            tokens: reg(
                &registry,
                counter(
                    "tailor_tokens_total",
                    "Tokens by type: input (uncached prompt), cached_input, output",
                    &["route", "model", "client", "type"],
                )?,
            )?,
            reasoning: reg(
                &registry,
                counter(
                    "tailor_reasoning_tokens_total",
                    "Reasoning tokens (already counted in output)",
                    &["route", "model"],
                )?,
            )?,
            cost: {
                let c = Arc::new(CostCounter::new(
                    "tailor_cost_usd_total",
                    "Cost in USD at the configured prices",
                )?);
                registry.register(Box::new(CostCollector(c.clone())))?;
                c
            },
            estimated_tokens: reg(
                &registry,
                counter(
                    "tailor_estimated_tokens_total",
                    "Tokens tailor estimated because the upstream reported none (hang-up, broken stream): already in tailor_tokens_total",
                    &["route", "model", "type"],
                )?,
            )?,
            estimated_cost: {
                let c = Arc::new(CostCounter::new(
                    "tailor_estimated_cost_usd_total",
                    "The part of tailor_cost_usd_total that comes from estimated tokens",
                )?);
                registry.register(Box::new(CostCollector(c.clone())))?;
                c
            },
            duration: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tailor_request_duration_seconds",
                        "Time from request received to response end",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["route", "model"],
                )?,
            )?,
            ttft: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tailor_time_to_first_token_seconds",
                        "Streams: time from request received to first upstream body bytes",
                    )
                    .buckets(TTFT_BUCKETS.to_vec()),
                    &["route", "model"],
                )?,
            )?,
            in_flight: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("tailor_in_flight_requests", "Requests being served"),
                    &["route"],
                )?,
            )?,
            upstream_errors: reg(
                &registry,
                counter(
                    "tailor_upstream_errors_total",
                    "Upstream failures by kind",
                    &["route", "model", "kind"],
                )?,
            )?,
            fallbacks: reg(
                &registry,
                counter(
                    "tailor_fallbacks_total",
                    "Requests moved to a fallback model, by reason",
                    &["route", "from", "to", "reason"],
                )?,
            )?,
            unrouted: reg(
                &registry,
                IntCounter::new(
                    "tailor_unrouted_requests_total",
                    "Requests that matched no route",
                )?,
            )?,
            rejected: reg(
                &registry,
                counter(
                    "tailor_rejected_requests_total",
                    "Requests refused before routing (bad input), by reason",
                    &["reason"],
                )?,
            )?,
            model_healthy: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "tailor_model_healthy",
                        "1 while a model is in rotation, 0 during its cool-down",
                    ),
                    &["model"],
                )?,
            )?,
            config_reloads: reg(
                &registry,
                counter(
                    "tailor_config_reloads_total",
                    "Config reloads, by result (ok, error)",
                    &["result"],
                )?,
            )?,
            arm_weight: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "tailor_route_arm_weight",
                        "Configured traffic share of each arm of a route's split (0..1), from the live config",
                    ),
                    &["route", "model"],
                )?,
            )?,
            model_info: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("tailor_model_info", "1 per configured model; kind = fine_tune | base"),
                    &["model", "kind"],
                )?,
            )?,
            route_budget: reg(
                &registry,
                GaugeVec::new(
                    Opts::new("tailor_route_budget_usd_per_hour", "A route's spend alert threshold (routes.yaml budget_usd_per_hour)"),
                    &["route"],
                )?,
            )?,
            shadow_requests: reg(
                &registry,
                counter(
                    "tailor_shadow_requests_total",
                    "Shadow requests (copies no client waits for), by route, model and how they ended",
                    &["route", "model", "outcome"],
                )?,
            )?,
            shadow_tokens: reg(
                &registry,
                counter(
                    "tailor_shadow_tokens_total",
                    "Tokens of shadow requests by type (input, cached_input, output): not in tailor_tokens_total",
                    &["route", "model", "type"],
                )?,
            )?,
            shadow_dropped: reg(
                &registry,
                counter(
                    "tailor_shadow_dropped_total",
                    "Shadow copies not sent because server.shadow_max_concurrency were in flight",
                    &["route"],
                )?,
            )?,
            feedback: reg(
                &registry,
                counter(
                    "tailor_feedback_total",
                    "Quality scores posted to /v1/feedback, by the route and model that answered",
                    &["route", "model"],
                )?,
            )?,
            feedback_score: reg(
                &registry,
                CounterVec::new(
                    Opts::new(
                        "tailor_feedback_score_total",
                        "Sum of the feedback scores (0..1): mean = this / tailor_feedback_total",
                    ),
                    &["route", "model"],
                )?,
            )?,
            feedback_score_sq: reg(
                &registry,
                CounterVec::new(
                    Opts::new(
                        "tailor_feedback_score_squared_total",
                        "Sum of the squared feedback scores: with the count and sum, the variance",
                    ),
                    &["route", "model"],
                )?,
            )?,
            capture_dropped: reg(
                &registry,
                counter(
                    "tailor_capture_dropped_total",
                    "Sampled answers not captured because the route's capture queue was full",
                    &["route"],
                )?,
            )?,
            shadow_comparisons: reg(
                &registry,
                counter(
                    "tailor_shadow_comparisons_total",
                    "Primary/shadow pairs by result: agree, differ, shadow_error, primary_error",
                    &["route", "model", "result"],
                )?,
            )?,
            shadow_delta: reg(&registry, DeltaSums::new()?)?,
            judge: judge::JudgeMetrics::new(&registry)?,
            limits: limits::LimitMetrics::new(&registry)?,
            telemetry: telemetry::TelemetryMetrics::new(&registry)?,
            finetune: FinetuneGauges {
                savings_per_1k: reg(
                    &registry,
                    gauge(
                        "tailor_finetune_savings_usd_per_1k_requests",
                        "Base model cost per 1,000 requests minus the fine-tune's (negative: a loss)",
                        &["route", "model"],
                    )?,
                )?,
                savings: reg(
                    &registry,
                    gauge(
                        "tailor_finetune_savings_usd",
                        "What the fine-tune's requests since start saved against the base model",
                        &["route", "model"],
                    )?,
                )?,
                net: reg(
                    &registry,
                    gauge(
                        "tailor_finetune_net_usd",
                        "Savings since start minus the training cost",
                        &["route", "model"],
                    )?,
                )?,
                breakeven_requests: reg(
                    &registry,
                    gauge(
                        "tailor_finetune_breakeven_requests",
                        "Fine-tune requests that recover the training cost (absent while it saves nothing)",
                        &["route", "model"],
                    )?,
                )?,
                breakeven_seconds: reg(
                    &registry,
                    gauge(
                        "tailor_finetune_breakeven_seconds",
                        "Time until the training cost is recovered at the route's current request rate",
                        &["route", "model"],
                    )?,
                )?,
                training_cost: reg(
                    &registry,
                    gauge(
                        "tailor_model_training_cost_usd",
                        "A fine-tune's declared one-off training cost",
                        &["model"],
                    )?,
                )?,
            },
            registry,
        };
        let build = IntGaugeVec::new(
            Opts::new("tailor_build_info", "Build information"),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m.registry.register(Box::new(build))?;
        Ok(Arc::new(m))
    }

    /// Resolves the handles for one (route, model, client), creating its series at zero.
    pub fn meter(self: &Arc<Self>, route: &str, model: &str, client: &str) -> RouteModelMeter {
        let rm = [route, model];
        let tok = |t: &str| self.tokens.with_label_values(&[route, model, client, t]);
        RouteModelMeter {
            route: route.into(),
            model: model.into(),
            client: client.into(),
            input: tok("input"),
            cached: tok("cached_input"),
            output: tok("output"),
            reasoning: self.reasoning.with_label_values(&rm),
            cost_pico: self.cost.handle(route, model, client),
            estimated_input: self
                .estimated_tokens
                .with_label_values(&[route, model, "input"]),
            estimated_output: self
                .estimated_tokens
                .with_label_values(&[route, model, "output"]),
            estimated_cost_pico: self.estimated_cost.handle(route, model, client),
            duration: self.duration.with_label_values(&rm),
            ttft: self.ttft.with_label_values(&rm),
            in_flight: self.in_flight.with_label_values(&[route]),
            answered: OnceLock::new(),
            metrics: self.clone(),
        }
    }

    /// Publishes what the dashboards and alerts need from the config: arm shares, model kinds,
    /// route budgets (replacing those of an older config).
    pub fn publish_config(&self, config: &crate::config::Config) {
        self.model_info.reset();
        for m in &config.models {
            // Model::kind is the economics' rule too: dashboards and /economics agree
            self.model_info
                .with_label_values(&[&m.name, m.kind().label()])
                .set(1);
        }
        self.route_budget.reset();
        for r in &config.routes {
            if let Some(b) = r.budget_usd_per_hour {
                self.route_budget
                    .with_label_values(&[&r.name])
                    .set(decimal(b, USD_PLACES));
            }
        }
        self.finetune.training_cost.reset();
        for m in &config.models {
            if let Some(c) = m.training_cost_usd() {
                self.finetune
                    .training_cost
                    .with_label_values(&[&m.name])
                    .set(decimal(c, USD_PLACES));
            }
        }
        // feedback series exist at zero for every model that can answer a route
        for r in &config.routes {
            let models = r
                .arms
                .iter()
                .map(|a| a.model)
                .chain(r.fallback.iter().copied());
            for mi in models.chain(r.shadow.as_ref().map(|s| s.model)) {
                let l = [r.name.as_str(), config.models[mi].name.as_str()];
                self.feedback.with_label_values(&l);
                self.feedback_score.with_label_values(&l);
                self.feedback_score_sq.with_label_values(&l);
            }
        }
        self.arm_weight.reset();
        for r in &config.routes {
            for a in &r.arms {
                let share = decimal(f64::from(a.weight) / r.total_weight as f64, 6);
                self.arm_weight
                    .with_label_values(&[&r.name, &config.models[a.model].name])
                    .set(share);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    /// Adds a collector of another module (the economics ledger) to the one registry.
    pub fn register(
        &self,
        c: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(c)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // encoding into a Vec only fails on malformed families, which we never build
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The resolved metric handles of one (route, model) pair.
#[derive(Clone)]
pub struct RouteModelMeter {
    pub route: Arc<str>,
    pub model: Arc<str>,
    pub client: Arc<str>,
    input: IntCounter,
    cached: IntCounter,
    output: IntCounter,
    reasoning: IntCounter,
    cost_pico: Arc<AtomicU64>,
    estimated_input: IntCounter,
    estimated_output: IntCounter,
    estimated_cost_pico: Arc<AtomicU64>,
    pub duration: Histogram,
    pub ttft: Histogram,
    pub in_flight: IntGauge,
    /// `tailor_requests_total` of the usual end (200, ok) on the first endpoint counted,
    /// resolved once: a lookup hashes six labels under a lock that every worker writes.
    answered: OnceLock<(&'static str, IntCounter)>,
    metrics: Arc<Metrics>,
}

impl RouteModelMeter {
    /// Adds one request's usage and its cost (in picodollars).
    pub fn record_usage(&self, u: &Usage, cost_pico: u128) {
        self.input.inc_by(u.input.saturating_sub(u.cached));
        self.cached.inc_by(u.cached);
        self.output.inc_by(u.output);
        self.reasoning.inc_by(u.reasoning);
        self.cost_pico.fetch_add(
            u64::try_from(cost_pico).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Marks one request's usage (already added by [`Self::record_usage`]) as tailor's estimate.
    pub fn record_estimate(&self, u: &Usage, cost_pico: u128) {
        self.estimated_input.inc_by(u.input);
        self.estimated_output.inc_by(u.output);
        self.estimated_cost_pico.fetch_add(
            u64::try_from(cost_pico).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts one answered request with its endpoint, status code and how it ended.
    pub fn record_request(
        &self,
        endpoint: &'static str,
        code: http::StatusCode,
        outcome: &'static str,
    ) {
        if code == http::StatusCode::OK && outcome == "ok" {
            let (e, counter) = self
                .answered
                .get_or_init(|| (endpoint, self.requests(endpoint, code, outcome)));
            if *e == endpoint {
                counter.inc();
                return;
            }
        }
        self.requests(endpoint, code, outcome).inc();
    }

    fn requests(&self, endpoint: &str, code: http::StatusCode, outcome: &str) -> IntCounter {
        self.metrics.requests.with_label_values(&[
            &self.route,
            &self.model,
            &self.client,
            endpoint,
            code.as_str(),
            outcome,
        ])
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[&self.route, &self.model, kind])
            .inc();
    }
}

#[cfg(test)]
mod tests;
