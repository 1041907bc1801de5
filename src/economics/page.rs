//! The status page (`GET /` on the admin port): one server-rendered HTML document, no scripts,
//! no external assets, refreshed every 30 s.

use std::fmt::Write as _;

use super::chart::{self, esc};
use super::report::Report;

/// `−$0.000370` / `+$0.000120`: a difference in dollars, sign first.
pub fn signed_usd(x: f64) -> String {
    let sign = if x < 0.0 { "−" } else { "+" };
    format!("{sign}${:.6}", x.abs())
}

/// A window's length: `42 s`, `12 min`, `5.5 h`, `3.2 days`.
pub fn span(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7_200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3_600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

/// A bucket bound: `250 ms`, or `> 120 s` for the unbounded one.
fn ms(v: u64) -> String {
    if v == u64::MAX {
        "more".to_owned()
    } else {
        format!("{v} ms")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// One budget or rate limit as the status page lists it.
pub struct LimitUse {
    pub name: String,
    /// "$25.00 per day, 200000 tokens/min".
    pub caps: String,
    /// The current window's spend of its dollar budget as last seen, and the cap.
    pub spent_usd: Option<f64>,
    pub max_usd: Option<f64>,
}

/// The status page: one self-contained HTML document (no scripts, no external assets).
/// `health`: each model's name and whether it is in rotation.
pub fn render_html(r: &Report, health: &[(String, bool)], limits: &[LimitUse]) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tailor status</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="30">
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}}h1{{margin:0 0 .2em}}
h2{{margin:1.6em 0 .3em;font-size:1.2em}}table{{border-collapse:collapse;margin:.4em 0}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}th{{background:#f3f3f3}}
td:first-child,th:first-child{{text-align:left}}.rules{{color:#555}}.verdict{{padding:.5em .8em;border-left:4px solid #2a7;background:#eef8f1}}
.loss{{border-color:#c33;background:#fbeeee}}.down{{color:#c33;font-weight:bold}}.ok{{color:#2a7}}
.source{{padding:.4em .8em;background:#f3f5f9;border-left:4px solid #2b6cb0}}.warn{{border-color:#c33;background:#fbeeee}}
.charts{{display:flex;flex-wrap:wrap;gap:1.5em}}.chart{{background:#fafafa;border:1px solid #e3e3e3}}.quiet{{color:#777}}</style></head><body>
<h1>tailor</h1><p class="source{}">Figures: <b>{}</b>. This page refreshes every 30 s; the same numbers are at <a href="/economics">/economics</a> (JSON) and <a href="/metrics">/metrics</a>.</p>
"#,
        if r.source.error.is_some() {
            " warn"
        } else {
            ""
        },
        esc(&r.source.description),
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
    if !limits.is_empty() {
        h.push_str("<h2>Budgets and rate limits</h2><table><tr><th>limit</th><th>caps</th><th>spent this window</th><th>used</th></tr>");
        for l in limits {
            let (spent, used) = match (l.spent_usd, l.max_usd) {
                (Some(s), Some(m)) if m > 0.0 => (format!("${s:.4} of ${m:.2}"), pct(s / m)),
                (None, Some(m)) => (format!("$0 of ${m:.2}"), pct(0.0)),
                _ => ("-".to_owned(), "-".to_owned()),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{spent}</td><td>{used}</td></tr>",
                esc(&l.name),
                esc(&l.caps)
            );
        }
        h.push_str("</table>");
    }
    // routes with traffic first, the busiest on top; the quiet ones after, in config order
    let mut routes: Vec<_> = r.routes.iter().collect();
    routes.sort_by_key(|x| std::cmp::Reverse(x.requests));
    for route in routes {
        let _ = write!(
            h,
            r#"<h2 id="route-{0}">Route {0}</h2><p class="rules">when: {1}</p><p{4}>{2} requests, ${3:.4} spent since {5} ({6})</p>"#,
            esc(&route.route),
            esc(&route.rules),
            route.requests,
            route.spend_usd,
            if route.requests == 0 {
                r#" class="quiet""#
            } else {
                ""
            },
            esc(&route.since),
            span(route.window_seconds),
        );
        if let Some(v) = &route.finetune {
            let class = if v.pays_back {
                "verdict"
            } else {
                "verdict loss"
            };
            let _ = write!(h, r#"<p class="{class}">{}</p>"#, esc(&v.summary));
            // how sure: the decision rule and the cost difference with its 95% interval
            let _ = write!(h, "<p>A/B: <b>{}</b>", esc(&v.decision));
            if let Some(c) = &v.cost_difference_ci95 {
                let _ = write!(
                    h,
                    "; fine-tune − base per request {} (95%: {} to {})",
                    signed_usd(c.value),
                    signed_usd(c.low),
                    signed_usd(c.high)
                );
            }
            if let Some(q) = &v.quality_difference_ci95 {
                let _ = write!(
                    h,
                    "; feedback score {:+.3} (95%: {:+.3} to {:+.3})",
                    q.value, q.low, q.high
                );
            }
            h.push_str("</p>");
        }
        if route.requests > 0 {
            let _ = write!(
                h,
                r#"<div class="charts">{}{}</div>"#,
                chart::cost_per_request(route),
                chart::spend_over_time(route)
            );
        }
        h.push_str("<table><tr><th>model</th><th>configured share</th><th>observed share</th><th>requests</th><th>error rate</th><th>mean input tokens</th><th>mean cached</th><th>mean output</th><th>cost / request (95%)</th><th>spend</th><th>feedback (95%)</th><th>p50 / p95 latency</th></tr>");
        for a in route.arms.iter().chain(route.shadow.iter()) {
            let shadow = route.shadow.as_ref().is_some_and(|s| std::ptr::eq(s, a));
            let _ = write!(
                h,
                "<tr><td>{}{}{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>${:.6}{}</td><td>${:.4}</td><td>{}</td><td>{}</td></tr>",
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
                a.cost_per_request_ci95.map_or(String::new(), |c| format!(
                    "<br><small>${:.6} to ${:.6}</small>",
                    c.low, c.high
                )),
                a.spend_usd,
                a.feedback_ci95.map_or("-".to_owned(), |q| format!(
                    "{:.3} (n={})<br><small>{:.3} to {:.3}</small>",
                    q.value, a.feedback_n, q.low, q.high
                )),
                match (a.p50_latency_ms, a.p95_latency_ms) {
                    (Some(p50), Some(p95)) => format!("≤ {} / ≤ {}", ms(p50), ms(p95)),
                    _ => "-".to_owned(),
                },
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
