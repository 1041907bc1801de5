//! `tailor report`: the fleet's verdict from Prometheus, in the terminal (the same report as
//! `/economics` and the status page).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tailor::config::EconomicsSource;
use tailor::economics::page::{signed_usd, span};
use tailor::economics::report::{ArmReport, Report};
use tailor::economics::{fleet, ledger, report};

use super::common::{load, runtime, OutFormat};

/// `7d`, `12h` (before now) or an RFC 3339 time, as unix seconds.
fn parse_since(s: &str) -> Result<f64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()));
    }
    let d = humantime::parse_duration(s).with_context(|| {
        format!("--since `{s}`: expected a duration (7d, 12h) or an RFC 3339 time")
    })?;
    Ok(ledger::unix_now() - d.as_secs_f64())
}

pub fn run(
    path: &Path,
    prometheus: Option<String>,
    route: Option<String>,
    since: Option<String>,
    format: OutFormat,
) -> Result<()> {
    let mut cfg = load(path)?;
    let src = match (prometheus, &cfg.economics) {
        (Some(url), e) => EconomicsSource {
            prometheus_url: url.trim_end_matches('/').to_owned(),
            timeout: e.as_ref().map_or(Duration::from_secs(30), |e| e.timeout.max(Duration::from_secs(30))),
        },
        (None, Some(e)) => e.clone(),
        (None, None) => bail!(
            "tailor report reads the fleet's counters from Prometheus: give --prometheus URL or economics.prometheus_url in {}",
            path.display()
        ),
    };
    if let Some(r) = &route {
        if !cfg.routes.iter().any(|x| &x.name == r) {
            bail!("no route `{r}` in {}", path.display());
        }
    }
    let since = since.as_deref().map(parse_since).transpose()?;
    cfg.economics = Some(src.clone());
    let snap = runtime(Some(1))?
        .block_on(fleet::snapshot(&cfg, &src, since))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut r = report(&cfg, &snap);
    if let Some(name) = &route {
        r.routes.retain(|x| &x.route == name);
    }
    match format {
        OutFormat::Json => out!("{}", serde_json::to_string_pretty(&r)?),
        OutFormat::Text => print_text(&r),
    }
    Ok(())
}

fn arm_line(a: &ArmReport, shadow: bool) -> String {
    let ci = a.cost_per_request_ci95.map_or(String::new(), |c| {
        format!(" (95%: ${:.6} to ${:.6})", c.low, c.high)
    });
    let fb = a.feedback_ci95.map_or(String::new(), |q| {
        format!(
            ", feedback {:.3} (95%: {:.3} to {:.3}, n={})",
            q.value, q.low, q.high, a.feedback_n
        )
    });
    let lat = match (a.p50_latency_ms, a.p95_latency_ms) {
        (Some(p50), Some(p95)) => format!(", p50 ≤ {p50} ms, p95 ≤ {p95} ms"),
        _ => String::new(),
    };
    format!(
        "  {}{}{}: {} requests ({:.1}% errors), ${:.6} per request{ci}{fb}{lat}, spent ${:.4}",
        a.model,
        if a.fine_tune { " (fine-tune)" } else { "" },
        if shadow { " [shadow]" } else { "" },
        a.requests,
        a.error_rate * 100.0,
        a.cost_per_request_usd,
        a.spend_usd,
    )
}

fn print_text(r: &Report) {
    out!("source: {}", r.source.description);
    for route in &r.routes {
        out!(
            "\nroute {} ({}): {} requests, ${:.4} spent since {} ({})",
            route.route,
            route.rules,
            route.requests,
            route.spend_usd,
            route.since,
            span(route.window_seconds)
        );
        for a in &route.arms {
            out!("{}", arm_line(a, false));
        }
        if let Some(s) = &route.shadow {
            out!("{}", arm_line(s, true));
        }
        if let Some(v) = &route.finetune {
            out!("  verdict: {}", v.summary);
            out!("  A/B decision: {}", v.decision);
            if let Some(c) = v.cost_difference_ci95 {
                out!(
                    "  fine-tune − base per request: {} (95%: {} to {})",
                    signed_usd(c.value),
                    signed_usd(c.low),
                    signed_usd(c.high)
                );
            }
            if let Some(q) = v.quality_difference_ci95 {
                out!(
                    "  fine-tune − base feedback: {:+.3} (95%: {:+.3} to {:+.3})",
                    q.value,
                    q.low,
                    q.high
                );
            }
        }
    }
}
