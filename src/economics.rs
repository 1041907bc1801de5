//! Does the fine-tune pay for itself? Per route and model, what each request cost, and for a route
//! whose split (or shadow) has a fine-tune next to a base model, the savings per 1,000 requests,
//! the savings so far against the training cost, and when that cost is recovered.
//!
//! [`Ledger`] is fed at the end of every request (primary and shadow apart) and lives as long as
//! the process: it survives reloads, and restarts begin it anew. [`report`] is a pure function of
//! the config and a ledger snapshot, so the numbers can be checked by hand in a test; `/economics`
//! serves it as JSON, `GET /` renders it as the status page, and `/metrics` exports the verdicts.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::Serialize;

use crate::config::{Config, Model, Route};
use crate::usage::price::PICO_PER_USD;
use crate::usage::Usage;

/// Which traffic a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Traffic {
    Primary,
    Shadow,
}

impl Traffic {
    pub fn as_str(self) -> &'static str {
        match self {
            Traffic::Primary => "primary",
            Traffic::Shadow => "shadow",
        }
    }
}

/// Upper bounds (ms) of the latency buckets the p95 is read from.
const LATENCY_MS: [u64; 18] = [
    25, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000,
    30_000, 60_000, 120_000,
];

/// Counters of one (route, model, traffic).
#[derive(Default)]
pub struct ArmStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Prompt tokens including cached ones.
    input: AtomicU64,
    cached: AtomicU64,
    output: AtomicU64,
    cost_pico: AtomicU64,
    /// Requests per latency bucket; the last one is "above the largest bound".
    latency: [AtomicU64; LATENCY_MS.len() + 1],
}

impl ArmStats {
    /// One finished request: `ok` when it was answered successfully.
    pub fn record(&self, ok: bool, u: &Usage, cost_pico: u128, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.input.fetch_add(u.input, Ordering::Relaxed);
        self.cached.fetch_add(u.cached, Ordering::Relaxed);
        self.output.fetch_add(u.output, Ordering::Relaxed);
        self.cost_pico.fetch_add(
            u64::try_from(cost_pico).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let b = LATENCY_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(LATENCY_MS.len());
        self.latency[b].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Counts {
        let n = self.requests.load(Ordering::Relaxed);
        let mut seen = 0;
        let mut p95_ms = None;
        for (i, c) in self.latency.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if n > 0 && seen * 100 >= n * 95 {
                p95_ms = Some(LATENCY_MS.get(i).copied().unwrap_or(u64::MAX));
                break;
            }
        }
        Counts {
            requests: n,
            errors: self.errors.load(Ordering::Relaxed),
            input: self.input.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            output: self.output.load(Ordering::Relaxed),
            cost_pico: self.cost_pico.load(Ordering::Relaxed),
            p95_ms,
        }
    }
}

/// A snapshot of one arm's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub cost_pico: u64,
    /// Upper bound of the bucket holding the 95th percentile latency.
    pub p95_ms: Option<u64>,
}

type Key = (Arc<str>, Arc<str>, Traffic);

/// Counters per (route, model, traffic) since the process started.
pub struct Ledger {
    arms: DashMap<Key, Arc<ArmStats>>,
    started: std::time::Instant,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            arms: DashMap::new(),
            started: std::time::Instant::now(),
        }
    }
}

impl Ledger {
    /// The counters of one arm (created at first use; resolved once per config, not per request).
    pub fn arm(&self, route: &Arc<str>, model: &Arc<str>, traffic: Traffic) -> Arc<ArmStats> {
        self.arms
            .entry((route.clone(), model.clone(), traffic))
            .or_default()
            .clone()
    }

    /// Every arm's counters now, and the time they cover.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            arms: self
                .arms
                .iter()
                .map(|e| (e.key().clone(), e.value().snapshot()))
                .collect(),
            elapsed: self.started.elapsed(),
        }
    }
}

/// Counters of every arm at one moment, and how long they have been counting.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub arms: Vec<(Key, Counts)>,
    pub elapsed: Duration,
}

impl Snapshot {
    fn get(&self, route: &str, model: &str, traffic: Traffic) -> Counts {
        self.arms
            .iter()
            .find(|((r, m, t), _)| &**r == route && &**m == model && *t == traffic)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

/// The whole report: `/economics` as JSON, the status page as HTML.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Seconds the counters cover (since tailor started).
    pub window_seconds: f64,
    pub routes: Vec<RouteReport>,
}

#[derive(Debug, Serialize)]
pub struct RouteReport {
    pub route: String,
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
    pub cost_per_request_usd: f64,
    pub spend_usd: f64,
    /// Upper bound of the latency bucket holding the 95th percentile.
    pub p95_latency_ms: Option<u64>,
    /// The arm sends its own system prompt.
    pub system_prompt: bool,
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
    /// Savings to date minus the training cost.
    pub net_usd: Option<f64>,
    /// Fine-tune requests needed to recover the training cost (none while it saves nothing).
    pub breakeven_requests: Option<u64>,
    /// Of those, still to come.
    pub remaining_requests: Option<u64>,
    /// Days until then at the route's current request rate (all of it on the fine-tune).
    pub days_to_breakeven: Option<f64>,
    /// One sentence a person can read.
    pub summary: String,
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

/// A model is the fine-tuned side of a comparison if its id says so or it declares a training cost.
fn is_fine_tune(m: &Model) -> bool {
    m.is_fine_tune() || m.training_cost_usd().is_some()
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
    ArmReport {
        model: m.name.clone(),
        fine_tune: is_fine_tune(m),
        configured_share: share,
        observed_share: ratio(c.requests, route_n),
        requests: c.requests,
        errors: c.errors,
        error_rate: ratio(c.errors, c.requests),
        mean_input_tokens: ratio(c.input, c.requests),
        mean_cached_tokens: ratio(c.cached, c.requests),
        mean_output_tokens: ratio(c.output, c.requests),
        cost_per_request_usd: ratio(c.cost_pico, c.requests) / PICO_PER_USD,
        spend_usd: usd(c.cost_pico),
        p95_latency_ms: c.p95_ms,
        system_prompt: r.prompt_for(model).is_some(),
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
                    arm_report(cfg, r, m, *c, share, route_n)
                })
                .collect();
            let shadow = r.shadow.as_ref().map(|s| {
                let c = snap.get(&r.name, &cfg.models[s.model].name, Traffic::Shadow);
                arm_report(cfg, r, s.model, c, 0.0, c.requests)
            });
            let finetune = verdict(cfg, r, &arms, shadow.as_ref(), route_n, snap.elapsed);
            RouteReport {
                route: r.name.clone(),
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
    let training = cfg
        .models
        .iter()
        .find(|m| m.name == ft.model)
        .and_then(Model::training_cost_usd);
    let breakeven = match training {
        Some(t) if saving > 0.0 => Some((t / saving).ceil() as u64),
        _ => None,
    };
    let remaining = breakeven.map(|b| b.saturating_sub(served));
    let per_day = route_n as f64 / elapsed.as_secs_f64().max(1.0) * 86_400.0;
    let days = remaining.map(|n| n as f64 / per_day);
    let summary = summary(
        &ft.model,
        &base.model,
        saving,
        training,
        savings_to_date,
        breakeven,
        remaining,
        days,
    );
    Some(Verdict {
        fine_tune: ft.model.clone(),
        base: base.model.clone(),
        savings_per_1k_requests_usd: saving * 1_000.0,
        savings_to_date_usd: savings_to_date,
        training_cost_usd: training,
        net_usd: training.map(|t| savings_to_date - t),
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
        if i > 0 && (s.len() - i) % 3 == 0 {
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

/// Sets the fine-tune and shadow-spend gauges from a report (replacing older values).
pub fn publish(metrics: &crate::metrics::Metrics, r: &Report) {
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
    metrics.shadow_cost.reset();
    for route in &r.routes {
        if let Some(s) = &route.shadow {
            metrics
                .shadow_cost
                .with_label_values(&[&route.route, &s.model])
                .set(s.spend_usd);
        }
        let Some(v) = &route.finetune else { continue };
        let l = [route.route.as_str(), v.fine_tune.as_str()];
        f.savings_per_1k
            .with_label_values(&l)
            .set(v.savings_per_1k_requests_usd);
        f.savings.with_label_values(&l).set(v.savings_to_date_usd);
        if let Some(n) = v.net_usd {
            f.net.with_label_values(&l).set(n);
        }
        if let Some(b) = v.breakeven_requests {
            f.breakeven_requests.with_label_values(&l).set(b as f64);
        }
        if let Some(d) = v.days_to_breakeven {
            f.breakeven_seconds.with_label_values(&l).set(d * 86_400.0);
        }
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The status page: one self-contained HTML document (no scripts, no external assets).
/// `health`: each model's name and whether it is in rotation.
pub fn render_html(r: &Report, health: &[(String, bool)]) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tailor status</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="30">
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}}h1{{margin:0 0 .2em}}
h2{{margin:1.6em 0 .3em;font-size:1.2em}}table{{border-collapse:collapse;margin:.4em 0}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}th{{background:#f3f3f3}}
td:first-child,th:first-child{{text-align:left}}.rules{{color:#555}}.verdict{{padding:.5em .8em;border-left:4px solid #2a7;background:#eef8f1}}
.loss{{border-color:#c33;background:#fbeeee}}.down{{color:#c33;font-weight:bold}}.ok{{color:#2a7}}</style></head><body>
<h1>tailor</h1><p>Counting since tailor started, {:.0} s ago. This page refreshes every 30 s; the same numbers are at <a href="/economics">/economics</a> (JSON) and <a href="/metrics">/metrics</a>.</p>
"#,
        r.window_seconds
    );
    h.push_str("<h2>Models</h2><table><tr><th>model</th><th>state</th></tr>");
    for (m, ok) in health {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="{}">{}</td></tr>"#,
            esc(m),
            if *ok { "ok" } else { "down" },
            if *ok { "in rotation" } else { "cooling down" }
        );
    }
    h.push_str("</table>");
    for route in &r.routes {
        let _ = write!(
            h,
            r#"<h2 id="route-{0}">Route {0}</h2><p class="rules">when: {1}</p><p>{2} requests, ${3:.4} spent</p>"#,
            esc(&route.route),
            esc(&route.rules),
            route.requests,
            route.spend_usd
        );
        if let Some(v) = &route.finetune {
            let class = if v.savings_per_1k_requests_usd > 0.0 {
                "verdict"
            } else {
                "verdict loss"
            };
            let _ = write!(h, r#"<p class="{class}">{}</p>"#, esc(&v.summary));
        }
        h.push_str("<table><tr><th>model</th><th>configured share</th><th>observed share</th><th>requests</th><th>error rate</th><th>mean input tokens</th><th>mean cached</th><th>mean output</th><th>cost / request</th><th>spend</th><th>p95 latency</th></tr>");
        for a in route.arms.iter().chain(route.shadow.iter()) {
            let shadow = route.shadow.as_ref().is_some_and(|s| std::ptr::eq(s, a));
            let _ = write!(
                h,
                "<tr><td>{}{}{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>${:.6}</td><td>${:.4}</td><td>{}</td></tr>",
                esc(&a.model),
                if a.fine_tune { " (fine-tune)" } else { "" },
                if a.system_prompt { " + system prompt" } else { "" },
                if shadow { " [shadow]" } else { "" },
                if shadow { "-".to_owned() } else { pct(a.configured_share) },
                if shadow { "-".to_owned() } else { pct(a.observed_share) },
                a.requests,
                pct(a.error_rate),
                a.mean_input_tokens,
                a.mean_cached_tokens,
                a.mean_output_tokens,
                a.cost_per_request_usd,
                a.spend_usd,
                a.p95_latency_ms.map_or("-".to_owned(), |ms| format!("≤ {ms} ms")),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
