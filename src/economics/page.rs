//! The status page (`GET /` on the admin port): one server-rendered HTML document, no scripts,
//! no external assets, refreshed every 30 s.

use std::fmt::Write as _;

use super::report::Report;

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

/// `−$0.000370` / `+$0.000120`: a difference in dollars, sign first.
fn signed_usd(x: f64) -> String {
    let sign = if x < 0.0 { "−" } else { "+" };
    format!("{sign}${:.6}", x.abs())
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
