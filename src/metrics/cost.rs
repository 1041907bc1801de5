//! Money counters (`tailor_cost_usd_total`, `tailor_estimated_cost_usd_total`): integer
//! picodollars inside, USD on the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::usage::price::PICO_PER_USD;

/// `v` rounded to `places` decimals (fewer for values too large to hold them): the f64 nearest
/// that decimal, which prints as it (`0.16139095`, not `0.1613909500000001`). Gauges computed in
/// floating point (shares, savings, break-even) go through it, so they read as exactly as the
/// counters, which are integers scaled once.
pub fn decimal(v: f64, places: i32) -> f64 {
    if !v.is_finite() {
        return v;
    }
    // up to 15 significant digits survive the round trip through an f64 and its shortest print
    let mut places = places.clamp(0, 15);
    while places > 0 && v.abs() * 10f64.powi(places) >= 1e15 {
        places -= 1;
    }
    let scale = 10f64.powi(places);
    (v * scale).round() / scale
}

/// Decimals of USD gauges: nano-dollars.
pub const USD_PLACES: i32 = 9;

/// A cost counter: summed as integer picodollars, exported in USD, so the exported value
/// is the exact sum rounded once (a float counter would accumulate rounding error per request).
/// One u64 of picodollars holds up to $18.4M per series per process lifetime.
/// (route, model, client)
type SeriesKey = (Arc<str>, Arc<str>, Arc<str>);

pub struct CostCounter {
    desc: Desc,
    series: DashMap<SeriesKey, Arc<AtomicU64>>,
}

impl CostCounter {
    pub fn new(name: &str, help: &str) -> Result<CostCounter, prometheus::Error> {
        Ok(CostCounter {
            desc: Desc::new(
                name.into(),
                help.into(),
                vec!["route".into(), "model".into(), "client".into()],
                Default::default(),
            )?,
            series: DashMap::new(),
        })
    }

    pub fn handle(&self, route: &str, model: &str, client: &str) -> Arc<AtomicU64> {
        self.series
            .entry((route.into(), model.into(), client.into()))
            .or_default()
            .clone()
    }

    /// The current total for a series, in picodollars (tests compare exactly).
    pub fn pico(&self, route: &str, model: &str, client: &str) -> u64 {
        self.series
            .get(&(Arc::from(route), Arc::from(model), Arc::from(client)))
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }
}

/// Exports a [`CostCounter`] (registered once).
pub struct CostCollector(pub Arc<CostCounter>);

impl Collector for CostCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut mf = MetricFamily::default();
        mf.set_name(self.0.desc.fq_name.clone());
        mf.set_help(self.0.desc.help.clone());
        mf.set_field_type(MetricType::COUNTER);
        let mut metrics: Vec<proto::Metric> = self
            .0
            .series
            .iter()
            .map(|e| {
                let (route, model, client) = e.key();
                let label = |n: &str, v: &str| {
                    let mut l = proto::LabelPair::default();
                    l.set_name(n.to_owned());
                    l.set_value(v.to_owned());
                    l
                };
                let mut c = proto::Counter::default();
                c.set_value(e.value().load(Ordering::Relaxed) as f64 / PICO_PER_USD);
                let mut m = proto::Metric::from_label(vec![
                    label("client", client),
                    label("model", model),
                    label("route", route),
                ]);
                m.set_counter(c);
                m
            })
            .collect();
        metrics.sort_by(|a, b| {
            a.get_label()
                .iter()
                .map(|l| l.value())
                .cmp(b.get_label().iter().map(|l| l.value()))
        });
        mf.set_metric(metrics);
        vec![mf]
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn gauges_print_their_decimals_not_float_noise() {
        for (v, places, want) in [
            (0.1613909500000001, 9, "0.16139095"),
            ((0.010 - 0.006) * 1_000.0, 9, "4"),
            (1.0 / 3.0, 6, "0.333333"),
            (2.0 / 3.0, 6, "0.666667"),
            (-0.30000000000000004, 9, "-0.3"),
            (123_456_789.123_456_78, 9, "123456789.123457"),
            (5_000.0 / 12_000.0 * 86_400.0, 3, "36000"),
        ] {
            assert_eq!(decimal(v, places).to_string(), want, "{v}");
        }
        assert!(decimal(f64::INFINITY, 9).is_infinite());
    }
}
