//! The report: a pure function of the config and a snapshot (this replica's ledger, or the
//! fleet's from Prometheus: the same arithmetic), so the numbers can be checked by hand in a test. Per route and arm, what each request cost; for a route whose split
//! (or shadow) has a fine-tune next to a base model, the savings per 1,000 requests, the savings
//! so far against the training cost, and when that cost is recovered. [`publish`] sets the
//! `tailor_finetune_*` gauges from it.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::ledger::{rfc3339, Counts, Snapshot, Source, Traffic};
use super::stats::{decide, score_interval, Interval, Moments};
use crate::config::{Config, Model, ModelKind, Route};
use crate::metrics::{decimal, Metrics, USD_PLACES};
use crate::usage::price::PICO_PER_USD;

/// The whole report: `/economics` as JSON, the status page as HTML.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where the figures come from: this replica or the fleet in Prometheus.
    pub source: Source,
    /// The window of routes without their own `experiment.since`: its start, and its length.
    pub since: String,
    pub window_seconds: f64,
    pub routes: Vec<RouteReport>,
}

#[derive(Debug, Serialize)]
pub struct RouteReport {
    pub route: String,
    /// The route's window: from `since` (RFC 3339), `window_seconds` long.
    pub since: String,
    pub window_seconds: f64,
    /// The route's conditions, as `tailor check` prints them.
    pub rules: String,
    pub requests: u64,
    pub spend_usd: f64,
    pub arms: Vec<ArmReport>,
    pub shadow: Option<ArmReport>,
    /// Present when the route compares a fine-tune with a base model and both have traffic.
    pub finetune: Option<Verdict>,
}

#[derive(Debug, Serialize)]
pub struct ArmReport {
    pub model: String,
    pub fine_tune: bool,
    /// Share of the route's traffic the config gives this arm (0 for a fallback or shadow).
    pub configured_share: f64,
    /// Share of the route's primary requests this model answered (fallbacks included).
    pub observed_share: f64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub mean_input_tokens: f64,
    pub mean_cached_tokens: f64,
    pub mean_output_tokens: f64,
    /// Cost per request answered completely (hang-ups and failures are in `spend_usd` only).
    pub cost_per_request_usd: f64,
    pub spend_usd: f64,
    /// Upper bounds of the latency buckets holding the median and the 95th percentile.
    pub p50_latency_ms: Option<u64>,
    pub p95_latency_ms: Option<u64>,
    /// Cumulative spend over the window, (unix seconds, USD): the status page's chart.
    #[serde(skip)]
    pub spend_line: Vec<(f64, f64)>,
    /// The arm sends its own system prompt.
    pub system_prompt: bool,
    /// Cost per answered request with its 95% interval (Student's t), once two have answered.
    pub cost_per_request_ci95: Option<Interval>,
    /// Feedback scores (`POST /v1/feedback`): how many, and their mean with a 95% interval
    /// (Wilson when every score is 0 or 1, else Student's t).
    pub feedback_n: u64,
    pub feedback_ci95: Option<Interval>,
    /// The moments the intervals come from (not in the JSON).
    #[serde(skip)]
    pub cost_moments: Moments,
    #[serde(skip)]
    pub feedback_moments: Moments,
}

/// Whether the fine-tune pays for itself, at the costs per request observed so far.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub fine_tune: String,
    pub base: String,
    /// Base cost per request minus fine-tune cost per request, times 1,000 (negative: a loss).
    pub savings_per_1k_requests_usd: f64,
    /// What the fine-tune's requests so far saved against the base model's cost per request.
    pub savings_to_date_usd: f64,
    pub training_cost_usd: Option<f64>,
    /// The fine-tune's hosting fee per hour while deployed, if it has one.
    pub hosting_usd_per_hour: Option<f64>,
    /// The hosting fee over the window the figures cover.
    pub hosting_to_date_usd: Option<f64>,
    /// Savings to date minus the training cost and the hosting to date.
    pub net_usd: Option<f64>,
    /// Requests per hour the fine-tune must save on to cover its hosting fee.
    pub requests_per_hour_to_cover_hosting: Option<f64>,
    /// The route's requests per hour over the window.
    pub requests_per_hour: f64,
    /// False when it saves nothing, or its savings per hour at the current traffic are below its
    /// hosting fee: then it never pays back.
    pub pays_back: bool,
    /// Fine-tune requests at which the training cost (and hosting so far) is recovered: those
    /// served plus the remaining ones (none while it does not pay back).
    pub breakeven_requests: Option<u64>,
    /// Of those, still to come.
    pub remaining_requests: Option<u64>,
    /// Days until then at the route's current request rate (all of it on the fine-tune).
    pub days_to_breakeven: Option<f64>,
    /// One sentence a person can read.
    pub summary: String,
    /// Fine-tune minus base cost per answered request, with its 95% interval (Welch).
    pub cost_difference_ci95: Option<Interval>,
    /// Fine-tune minus base mean feedback score, with its 95% interval (Welch), when both have
    /// at least two scores.
    pub quality_difference_ci95: Option<Interval>,
    /// "fine-tune wins", "base wins", or "keep testing: ..." (the rule: `stats::decide`).
    pub decision: String,
}

fn usd(pico: u64) -> f64 {
    pico as f64 / PICO_PER_USD
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn arm_report(
    cfg: &Config,
    r: &Route,
    model: usize,
    c: Counts,
    share: f64,
    route_n: u64,
) -> ArmReport {
    let m = &cfg.models[model];
    let cost = Moments {
        n: c.answered as f64,
        sum: c.answered_cost_pico as f64 / PICO_PER_USD,
        sum_sq: c.answered_cost_sq_usd,
    };
    ArmReport {
        model: m.name.clone(),
        fine_tune: m.kind() == ModelKind::FineTune,
        configured_share: share,
        observed_share: ratio(c.requests, route_n),
        requests: c.requests,
        errors: c.errors,
        error_rate: ratio(c.errors, c.requests),
        mean_input_tokens: ratio(c.input, c.requests),
        mean_cached_tokens: ratio(c.cached, c.requests),
        mean_output_tokens: ratio(c.output, c.requests),
        // answered requests only: a hang-up's partial bill is spend, not a price per answer
        cost_per_request_usd: ratio(c.answered_cost_pico, c.answered) / PICO_PER_USD,
        spend_usd: usd(c.cost_pico),
        p50_latency_ms: c.latency_quantile_ms(0.5),
        p95_latency_ms: c.latency_quantile_ms(0.95),
        spend_line: Vec::new(),
        system_prompt: r.prompt_for(model).is_some(),
        cost_per_request_ci95: cost.mean_ci95(),
        feedback_n: c.feedback.n as u64,
        feedback_ci95: score_interval(&c.feedback),
        cost_moments: cost,
        feedback_moments: c.feedback,
    }
}

/// The report for a config and a ledger snapshot.
pub fn report(cfg: &Config, snap: &Snapshot) -> Report {
    let routes = cfg
        .routes
        .iter()
        .map(|r| {
            // every model that answered this route: arms, then fallbacks
            let mut models: Vec<usize> = r.arms.iter().map(|a| a.model).collect();
            for f in &r.fallback {
                if !models.contains(f) {
                    models.push(*f);
                }
            }
            let counts: Vec<Counts> = models
                .iter()
                .map(|&m| snap.get(&r.name, &cfg.models[m].name, Traffic::Primary))
                .collect();
            let route_n: u64 = counts.iter().map(|c| c.requests).sum();
            let arms: Vec<ArmReport> = models
                .iter()
                .zip(&counts)
                .map(|(&m, c)| {
                    let share = r
                        .arms
                        .iter()
                        .find(|a| a.model == m)
                        .map_or(0.0, |a| f64::from(a.weight) / r.total_weight as f64);
                    let mut a = arm_report(cfg, r, m, *c, share, route_n);
                    a.spend_line = snap
                        .spend_line(&r.name, &a.model, Traffic::Primary)
                        .to_vec();
                    a
                })
                .collect();
            let shadow = r.shadow.as_ref().map(|s| {
                let name = &cfg.models[s.model].name;
                let c = snap.get(&r.name, name, Traffic::Shadow);
                let mut a = arm_report(cfg, r, s.model, c, 0.0, c.requests);
                a.spend_line = snap.spend_line(&r.name, name, Traffic::Shadow).to_vec();
                a
            });
            let (since, elapsed) = snap.window(&r.name);
            let finetune = verdict(cfg, r, &arms, shadow.as_ref(), route_n, elapsed);
            RouteReport {
                route: r.name.clone(),
                since: rfc3339(since),
                window_seconds: elapsed.as_secs_f64(),
                rules: r.matcher.describe(),
                requests: route_n,
                spend_usd: arms.iter().map(|a| a.spend_usd).sum(),
                arms,
                shadow,
                finetune,
            }
        })
        .collect();
    Report {
        source: snap.source.clone(),
        since: rfc3339(snap.since_unix),
        window_seconds: snap.elapsed.as_secs_f64(),
        routes,
    }
}

/// The fine-tune against the base model of one route, if it has both, each with traffic. The
/// fine-tune's numbers come from its arm, or from the shadow when it only runs there.
fn verdict(
    cfg: &Config,
    r: &Route,
    arms: &[ArmReport],
    shadow: Option<&ArmReport>,
    route_n: u64,
    elapsed: Duration,
) -> Option<Verdict> {
    let in_split = |a: &&ArmReport| r.arms.iter().any(|x| cfg.models[x.model].name == a.model);
    // a shadow's requests are copies: only requests the fine-tune answered saved anything
    let (ft, served) = match arms.iter().filter(in_split).find(|a| a.fine_tune) {
        Some(a) => (a, a.requests),
        None => (shadow.filter(|s| s.fine_tune)?, 0),
    };
    let base = arms.iter().filter(in_split).find(|a| !a.fine_tune)?;
    if ft.requests == 0 || base.requests == 0 {
        return None;
    }
    let saving = base.cost_per_request_usd - ft.cost_per_request_usd;
    // (+ 0.0: no "-0" when nothing was served yet)
    let savings_to_date = saving * served as f64 + 0.0;
    let model = cfg.models.iter().find(|m| m.name == ft.model);
    let training = model.and_then(Model::training_cost_usd);
    let hosting = model.and_then(|m| m.hosting_usd_per_hour);
    let hours = elapsed.as_secs_f64().max(1.0) / 3_600.0;
    let per_hour = route_n as f64 / hours;
    let hosting_to_date = hosting.map(|h| h * hours);
    // what each request saves once the hosting fee is spread over the current traffic
    let net_per_request = saving - hosting.map_or(0.0, |h| h / per_hour);
    let pays_back = saving > 0.0 && net_per_request > 0.0;
    let net = (training.is_some() || hosting.is_some())
        .then(|| savings_to_date - training.unwrap_or(0.0) - hosting_to_date.unwrap_or(0.0));
    // what is still to recover (training, and hosting so far) at the net saving per request
    let remaining = match (training, net) {
        (Some(_), Some(n)) if pays_back => Some(((-n).max(0.0) / net_per_request).ceil() as u64),
        _ => None,
    };
    let breakeven = remaining.map(|r| served + r);
    let days = remaining.map(|n| n as f64 / (per_hour * 24.0));
    let to_cover = hosting.filter(|h| *h > 0.0).map(|h| {
        if saving > 0.0 {
            h / saving
        } else {
            f64::INFINITY
        }
    });
    let mut summary = summary(
        &ft.model,
        &base.model,
        saving,
        training,
        savings_to_date,
        breakeven,
        remaining,
        days,
    );
    if let (Some(h), Some(need)) = (hosting, to_cover) {
        if saving > 0.0 && !pays_back {
            summary = format!(
                "{ft} saves ${:.2} per 1,000 requests against {base}, but its hosting fee of ${h:.2} per hour needs about {} requests per hour to pay back and the route has {per_hour:.0}: at this traffic it never pays back",
                saving * 1_000.0,
                thousands(need.ceil() as u64),
                ft = ft.model,
                base = base.model,
            );
        }
    }
    let d = decide(
        &ft.cost_moments,
        &base.cost_moments,
        &ft.feedback_moments,
        &base.feedback_moments,
        r.experiment.quality_margin,
    );
    Some(Verdict {
        cost_difference_ci95: d.cost,
        quality_difference_ci95: d.quality,
        decision: d.text,
        fine_tune: ft.model.clone(),
        base: base.model.clone(),
        savings_per_1k_requests_usd: saving * 1_000.0,
        savings_to_date_usd: savings_to_date,
        training_cost_usd: training,
        hosting_usd_per_hour: hosting,
        hosting_to_date_usd: hosting_to_date,
        net_usd: net,
        requests_per_hour_to_cover_hosting: to_cover.filter(|n| n.is_finite()),
        requests_per_hour: per_hour,
        pays_back,
        breakeven_requests: breakeven,
        remaining_requests: remaining,
        days_to_breakeven: days,
        summary,
    })
}

/// "1,234,567"
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn summary(
    ft: &str,
    base: &str,
    saving: f64,
    training: Option<f64>,
    to_date: f64,
    breakeven: Option<u64>,
    remaining: Option<u64>,
    days: Option<f64>,
) -> String {
    let per_1k = (saving * 1_000.0).abs();
    if saving <= 0.0 {
        return format!(
            "{ft} costs ${per_1k:.2} more per 1,000 requests than {base}: at these prompts it does not pay for itself"
        );
    }
    let mut s = format!("{ft} saves ${per_1k:.2} per 1,000 requests against {base}");
    match (training, breakeven, remaining, days) {
        (Some(t), Some(b), Some(0), _) => {
            let _ = write!(s, "; its ${t:.2} training cost was recovered after {} requests (saved ${to_date:.2} so far)", thousands(b));
        }
        (Some(_), Some(b), Some(_), Some(d)) => {
            let when = if d < 1.0 {
                "less than a day".to_owned()
            } else {
                format!("about {d:.0} days")
            };
            let _ = write!(
                s,
                "; training cost recovered after {} requests, {when} at the current rate",
                thousands(b)
            );
        }
        _ => {
            let _ = write!(
                s,
                " (saved ${to_date:.2} so far; no training cost declared)"
            );
        }
    }
    s
}

/// Sets the fine-tune gauges from a report (replacing older values): this replica's view, since
/// it started. Fleet-wide figures come from the `tailor_arm_*` counters (recording rules).
pub fn publish(metrics: &Metrics, r: &Report) {
    let f = &metrics.finetune;
    for g in [
        &f.savings_per_1k,
        &f.savings,
        &f.net,
        &f.breakeven_requests,
        &f.breakeven_seconds,
    ] {
        g.reset();
    }
    // fixed decimals: differences of averages carry float noise the counters do not
    let usd = |v: f64| decimal(v, USD_PLACES);
    for route in &r.routes {
        let Some(v) = &route.finetune else { continue };
        let l = [route.route.as_str(), v.fine_tune.as_str()];
        f.savings_per_1k
            .with_label_values(&l)
            .set(usd(v.savings_per_1k_requests_usd));
        f.savings
            .with_label_values(&l)
            .set(usd(v.savings_to_date_usd));
        if let Some(n) = v.net_usd {
            f.net.with_label_values(&l).set(usd(n));
        }
        if let Some(b) = v.breakeven_requests {
            f.breakeven_requests.with_label_values(&l).set(b as f64);
        }
        if let Some(d) = v.days_to_breakeven {
            f.breakeven_seconds
                .with_label_values(&l)
                .set(decimal(d * 86_400.0, 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::economics::ledger::{Ledger, Snapshot};
    use crate::usage::Usage;
    use std::sync::Arc;

    #[test]
    fn cost_per_request_counts_answered_requests_only() {
        let cfg = Config::from_yaml(
            r#"
upstreams: { u: { url: "http://127.0.0.1:1/v1" } }
models: { m: { upstream: u, id: gpt-4o-2024-08-06 } }
routes: [{ name: r, split: [{ model: m }] }]
"#,
            &|_| None,
        )
        .unwrap();
        let ledger = Ledger::default();
        let arm = ledger.arm(&Arc::from("r"), &Arc::from("m"), Traffic::Primary);
        let u = Usage::default();
        let ms = Duration::from_millis(10);
        arm.record(true, true, &u, 2_000_000, ms);
        arm.record(true, true, &u, 4_000_000, ms);
        // a hang-up billed by estimate, and an upstream failure: spend, not a price per answer
        arm.record(true, false, &u, 500_000, ms);
        arm.record(false, false, &u, 0, ms);
        let r = report(&cfg, &ledger.snapshot());
        let a = &r.routes[0].arms[0];
        assert_eq!((a.requests, a.errors), (4, 1));
        assert!(
            (a.cost_per_request_usd - 3e-6).abs() < 1e-18,
            "{}",
            a.cost_per_request_usd
        );
        assert!((a.spend_usd - 6.5e-6).abs() < 1e-18);
    }

    fn hosted(fee: f64) -> Report {
        let cfg = Config::from_yaml(
            &format!(
                r#"
upstreams: {{ u: {{ url: "http://127.0.0.1:1/v1" }} }}
models:
  base: {{ upstream: u, id: gpt-4o-2024-08-06 }}
  ft: {{ upstream: u, id: my-ft, price: {{ input: 1, output: 1 }}, training_cost_usd: 10, hosting_usd_per_hour: {fee} }}
routes: [{{ name: r, split: [{{ model: base }}, {{ model: ft }}] }}]
"#
            ),
            &|_| None,
        )
        .unwrap();
        let counts = |cost_usd: f64| Counts {
            requests: 500,
            answered: 500,
            answered_cost_pico: (cost_usd * 500.0 * 1e12) as u64,
            cost_pico: (cost_usd * 500.0 * 1e12) as u64,
            ..Counts::default()
        };
        let key = |m: &str| (Arc::from("r"), Arc::from(m), Traffic::Primary);
        let snap = Snapshot {
            arms: vec![(key("base"), counts(0.010)), (key("ft"), counts(0.006))],
            // 1,000 requests over two hours: 500 per hour
            elapsed: Duration::from_secs(7_200),
            ..Snapshot::default()
        };
        report(&cfg, &snap)
    }

    #[test]
    fn gauges_hold_fixed_decimals() {
        let m = Metrics::new().unwrap();
        let mut r = hosted(1.0);
        // what float arithmetic gives for differences of averages (0.1 + 0.2 = 0.30000000000000004)
        let v = r.routes[0].finetune.as_mut().unwrap();
        v.savings_per_1k_requests_usd = 0.1 + 0.2 + 3.6;
        v.savings_to_date_usd = 0.1613909500000001;
        v.days_to_breakeven = Some(0.1 + 0.2);
        assert_ne!(
            v.savings_per_1k_requests_usd, 3.9,
            "the test needs float noise"
        );
        publish(&m, &r);
        let text = String::from_utf8(m.encode()).unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(line("tailor_finetune_savings_usd_per_1k_requests{"), "3.9");
        assert_eq!(line("tailor_finetune_savings_usd{"), "0.16139095");
        assert_eq!(line("tailor_finetune_breakeven_seconds{"), "25920");
        assert_eq!(line("tailor_finetune_net_usd{"), "-10");
        for l in text.lines().filter(|l| l.starts_with("tailor_finetune_")) {
            let value = l.rsplit(' ').next().unwrap();
            let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 9, "float noise in {l}");
        }
    }

    #[test]
    fn a_hosting_fee_is_paid_from_the_savings() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // saves $0.004 a request, 500 an hour: $2 an hour against a $1 fee
        let v = hosted(1.0).routes[0].finetune.take().unwrap();
        assert!(v.pays_back, "{}", v.summary);
        assert!(close(v.requests_per_hour, 500.0));
        assert!(close(v.hosting_to_date_usd.unwrap(), 2.0));
        assert!(close(v.savings_to_date_usd, 2.0));
        assert!(close(v.net_usd.unwrap(), 2.0 - 10.0 - 2.0));
        // $10 still to recover (net -$10) at $0.004 - $1/500 = $0.002 a request
        assert_eq!(v.remaining_requests, Some(5_000));
        assert_eq!(v.breakeven_requests, Some(5_500));
        assert!(close(
            v.days_to_breakeven.unwrap(),
            5_000.0 / (500.0 * 24.0)
        ));
        assert!(close(v.requests_per_hour_to_cover_hosting.unwrap(), 250.0));
        // a $3 fee needs 750 requests an hour: never at 500
        let v = hosted(3.0).routes[0].finetune.take().unwrap();
        assert!(!v.pays_back);
        assert_eq!(v.breakeven_requests, None);
        assert!(close(v.requests_per_hour_to_cover_hosting.unwrap(), 750.0));
        assert!(
            v.summary.contains("never pays back") && v.summary.contains("750"),
            "{}",
            v.summary
        );
    }
    #[test]
    fn model_info_and_the_economics_agree_on_an_azure_fine_tune() {
        // an Azure fine-tuned deployment: its id is a deployment name, its base_model prices it,
        // only the declared training cost says it is a fine-tune
        let cfg = Config::from_yaml(
            r#"
upstreams: { az: { kind: azure, url: "http://127.0.0.1:1", api_version: "2024-10-21" } }
models:
  base: { upstream: az, id: gpt4o-prod, base_model: gpt-4o-2024-08-06 }
  ft: { upstream: az, id: support-prod, base_model: gpt-4o-2024-08-06, training_cost_usd: 412.5 }
routes: [{ name: r, split: [{ model: ft }, { model: base }] }]
"#,
            &|_| None,
        )
        .unwrap();
        let metrics = Metrics::new().unwrap();
        metrics.publish_config(&cfg);
        let text = String::from_utf8(metrics.encode()).unwrap();
        let arms = report(&cfg, &Snapshot::default()).routes.remove(0).arms;
        for (model, kind) in [("ft", "fine_tune"), ("base", "base")] {
            let line = format!("tailor_model_info{{kind=\"{kind}\",model=\"{model}\"}} 1");
            assert!(text.contains(&line), "missing {line} in\n{text}");
            let arm = arms.iter().find(|a| a.model == model).unwrap();
            assert_eq!(arm.fine_tune, kind == "fine_tune", "{model}");
        }
    }
}
