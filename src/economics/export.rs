//! The ledger on `/metrics`: `tailor_arm_*` counters per (route, model, traffic), one-to-one with
//! [`Counts`](super::Counts), and `tailor_start_time_seconds`. Prometheus sums them over replicas
//! and restarts (`fleet.rs` reads them back), so the fleet's figures are the same
//! arithmetic as one replica's.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::ledger::{Key, Ledger, LATENCY_MS};
use crate::usage::price::PICO_PER_USD;

/// The exported names, as `fleet.rs` reads them back.
pub const REQUESTS: &str = "tailor_arm_requests_total";
pub const ERRORS: &str = "tailor_arm_errors_total";
pub const ANSWERED: &str = "tailor_arm_answered_total";
pub const TOKENS: &str = "tailor_arm_tokens_total";
pub const COST: &str = "tailor_arm_cost_usd_total";
pub const ANSWERED_COST: &str = "tailor_arm_answered_cost_usd_total";
pub const ANSWERED_COST_SQ: &str = "tailor_arm_answered_cost_usd_squared_total";
pub const DURATION: &str = "tailor_arm_duration_seconds";
pub const START: &str = "tailor_start_time_seconds";

const HELP: [(&str, &str); 9] = [
    (
        REQUESTS,
        "Requests per arm (route, model, traffic = primary | shadow), for the economics",
    ),
    (ERRORS, "Requests per arm the upstream or tailor failed"),
    (
        ANSWERED,
        "Requests per arm answered completely: the basis of cost per request",
    ),
    (
        TOKENS,
        "Tokens per arm by type: input (uncached prompt), cached_input, output",
    ),
    (
        COST,
        "Spend per arm, USD (shadow copies included, with traffic=\"shadow\")",
    ),
    (
        ANSWERED_COST,
        "Spend on the requests in tailor_arm_answered_total, USD",
    ),
    (
        ANSWERED_COST_SQ,
        "Sum of the squared cost of answered requests, USD²: the variance of cost per request",
    ),
    (
        DURATION,
        "Time from request received to response end, per arm",
    ),
    (
        START,
        "Unix time this process started: a change means a restart",
    ),
];

/// Exports a [`Ledger`] (registered once per process).
pub struct LedgerCollector {
    ledger: Arc<Ledger>,
    descs: Vec<Desc>,
}

impl LedgerCollector {
    pub fn new(ledger: Arc<Ledger>) -> Result<LedgerCollector, prometheus::Error> {
        let descs = HELP
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    (*name).into(),
                    (*help).into(),
                    Vec::new(),
                    Default::default(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(LedgerCollector { ledger, descs })
    }
}

fn pair(n: &str, v: &str) -> proto::LabelPair {
    let mut l = proto::LabelPair::default();
    l.set_name(n.to_owned());
    l.set_value(v.to_owned());
    l
}

fn labels(k: &Key, extra: Option<(&str, &str)>) -> Vec<proto::LabelPair> {
    let mut v = vec![
        pair("model", &k.1),
        pair("route", &k.0),
        pair("traffic", k.2.as_str()),
    ];
    if let Some((n, x)) = extra {
        v.push(pair(n, x));
    }
    v
}

fn counter(l: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = proto::Metric::from_label(l);
    m.set_counter(c);
    m
}

fn family(name: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_owned());
    let help = HELP.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h);
    mf.set_help(help.to_owned());
    mf.set_field_type(kind);
    mf.set_metric(metrics);
    mf
}

impl Collector for LedgerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut arms = Vec::new();
        self.ledger
            .each(|k, s| arms.push((k.clone(), s.snapshot(), s.latency_sum_seconds())));
        arms.sort_by(|a, b| {
            (&a.0 .0, &a.0 .1, a.0 .2.as_str()).cmp(&(&b.0 .0, &b.0 .1, b.0 .2.as_str()))
        });
        let each = |f: &dyn Fn(&Key, &super::Counts) -> f64| -> Vec<proto::Metric> {
            arms.iter()
                .map(|(k, c, _)| counter(labels(k, None), f(k, c)))
                .collect()
        };
        let usd = |pico: u64| pico as f64 / PICO_PER_USD;
        let mut out = vec![
            family(
                REQUESTS,
                MetricType::COUNTER,
                each(&|_, c| c.requests as f64),
            ),
            family(ERRORS, MetricType::COUNTER, each(&|_, c| c.errors as f64)),
            family(
                ANSWERED,
                MetricType::COUNTER,
                each(&|_, c| c.answered as f64),
            ),
            family(COST, MetricType::COUNTER, each(&|_, c| usd(c.cost_pico))),
            family(
                ANSWERED_COST,
                MetricType::COUNTER,
                each(&|_, c| usd(c.answered_cost_pico)),
            ),
            family(
                ANSWERED_COST_SQ,
                MetricType::COUNTER,
                each(&|_, c| c.answered_cost_sq_usd),
            ),
        ];
        let mut tokens = Vec::new();
        for (k, c, _) in &arms {
            for (t, v) in [
                ("input", c.input.saturating_sub(c.cached)),
                ("cached_input", c.cached),
                ("output", c.output),
            ] {
                tokens.push(counter(labels(k, Some(("type", t))), v as f64));
            }
        }
        out.push(family(TOKENS, MetricType::COUNTER, tokens));
        let hist = arms
            .iter()
            .map(|(k, c, sum)| {
                let mut h = proto::Histogram::default();
                let mut seen = 0;
                let buckets = LATENCY_MS
                    .iter()
                    .zip(&c.latency)
                    .map(|(ms, n)| {
                        seen += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*ms as f64 / 1_000.0);
                        b.set_cumulative_count(seen);
                        b
                    })
                    .collect();
                h.set_bucket(buckets);
                h.set_sample_count(c.latency.iter().sum());
                h.set_sample_sum(*sum);
                let mut m = proto::Metric::from_label(labels(k, None));
                m.set_histogram(h);
                m
            })
            .collect();
        out.push(family(DURATION, MetricType::HISTOGRAM, hist));
        let mut g = proto::Gauge::default();
        g.set_value(self.ledger.started_unix);
        let mut m = proto::Metric::default();
        m.set_gauge(g);
        out.push(family(START, MetricType::GAUGE, vec![m]));
        out
    }
}
