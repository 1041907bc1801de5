//! `tailor_shadow_delta_sum`: sums of shadow − primary per pair, kept as signed integers
//! (microseconds, tokens, picodollars) and exported in seconds, tokens and USD. A float gauge
//! summing 0.1-style differences would print `0.30000000000000004`; an integer sum scaled once
//! prints what it is, like the cost counters.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// The measures of a pair and their integer units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// Microseconds, exported in seconds.
    LatencySeconds,
    OutputTokens,
    /// Picodollars, exported in USD.
    CostUsd,
}

impl Measure {
    fn label(self) -> &'static str {
        match self {
            Measure::LatencySeconds => "latency_seconds",
            Measure::OutputTokens => "output_tokens",
            Measure::CostUsd => "cost_usd",
        }
    }

    /// Units per exported unit.
    fn scale(self) -> f64 {
        match self {
            Measure::LatencySeconds => 1e6,
            Measure::OutputTokens => 1.0,
            Measure::CostUsd => crate::usage::price::PICO_PER_USD,
        }
    }
}

/// (route, model, measure)
type Key = (Arc<str>, Arc<str>, Measure);

/// The sums, registered once; cloned handles share them.
#[derive(Clone)]
pub struct DeltaSums {
    desc: Arc<Desc>,
    series: Arc<DashMap<Key, AtomicI64>>,
}

impl DeltaSums {
    pub fn new() -> Result<DeltaSums, prometheus::Error> {
        Ok(DeltaSums {
            desc: Arc::new(Desc::new(
                "tailor_shadow_delta_sum".into(),
                "Sum over pairs of shadow minus primary: latency_seconds, output_tokens, cost_usd"
                    .into(),
                vec!["route".into(), "model".into(), "measure".into()],
                Default::default(),
            )?),
            series: Arc::new(DashMap::new()),
        })
    }

    /// Adds one pair's difference, in the measure's integer unit.
    pub fn add(&self, route: &str, model: &str, measure: Measure, units: i64) {
        self.series
            .entry((route.into(), model.into(), measure))
            .or_default()
            .fetch_add(units, Ordering::Relaxed);
    }
}

impl Collector for DeltaSums {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut rows: Vec<(Key, i64)> = self
            .series
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        let label = |n: &str, v: &str| {
            let mut l = proto::LabelPair::default();
            l.set_name(n.to_owned());
            l.set_value(v.to_owned());
            l
        };
        let metrics = rows
            .into_iter()
            .map(|((route, model, measure), units)| {
                let mut g = proto::Gauge::default();
                g.set_value(units as f64 / measure.scale());
                let mut m = proto::Metric::from_label(vec![
                    label("measure", measure.label()),
                    label("model", &model),
                    label("route", &route),
                ]);
                m.set_gauge(g);
                m
            })
            .collect();
        let mut mf = MetricFamily::default();
        mf.set_name(self.desc.fq_name.clone());
        mf.set_help(self.desc.help.clone());
        mf.set_field_type(MetricType::GAUGE);
        mf.set_metric(metrics);
        vec![mf]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_and_print_without_float_noise() {
        let d = DeltaSums::new().unwrap();
        let r = prometheus::Registry::new();
        r.register(Box::new(d.clone())).unwrap();
        // 0.1 s + 0.2 s, and $0.1 + $0.2: in floats, 0.30000000000000004
        for units in [100_000, 200_000] {
            d.add("r", "m", Measure::LatencySeconds, units);
        }
        for pico in [100_000_000_000, 200_000_000_000] {
            d.add("r", "m", Measure::CostUsd, pico);
        }
        d.add("r", "m", Measure::OutputTokens, -7);
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            r#"tailor_shadow_delta_sum{measure="latency_seconds",model="m",route="r"} 0.3"#,
            r#"tailor_shadow_delta_sum{measure="cost_usd",model="m",route="r"} 0.3"#,
            r#"tailor_shadow_delta_sum{measure="output_tokens",model="m",route="r"} -7"#,
            "# TYPE tailor_shadow_delta_sum gauge",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want} in\n{text}");
        }
    }
}
