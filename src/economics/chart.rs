//! Server-rendered SVG charts for the status page: cost per request per arm with its 95%
//! interval, and cumulative spend over the window. No scripts, no external assets.

use std::fmt::Write as _;

use super::report::{ArmReport, RouteReport};

/// Text for HTML: `<`, `>`, `&` and quotes escaped.
pub(super) fn esc(s: &str) -> String {
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

/// One colour per arm, in order (a shadow takes the next one).
const COLOURS: [&str; 6] = [
    "#2b6cb0", "#d97706", "#2f855a", "#9b2c2c", "#6b46c1", "#4a5568",
];
const WIDTH: f64 = 560.0;
const LABEL: f64 = 190.0;

fn arms(route: &RouteReport) -> impl Iterator<Item = (&ArmReport, &'static str, bool)> {
    route
        .arms
        .iter()
        .map(|a| (a, false))
        .chain(route.shadow.iter().map(|s| (s, true)))
        .enumerate()
        .map(|(i, (a, shadow))| (a, COLOURS[i % COLOURS.len()], shadow))
}

fn name(a: &ArmReport, shadow: bool) -> String {
    format!("{}{}", a.model, if shadow { " [shadow]" } else { "" })
}

/// Cost per answered request of each arm: a dot at the mean, a bar over its 95% interval.
pub fn cost_per_request(route: &RouteReport) -> String {
    let rows: Vec<_> = arms(route).filter(|(a, _, _)| a.requests > 0).collect();
    if rows.is_empty() {
        return String::new();
    }
    let top = rows
        .iter()
        .map(|(a, _, _)| {
            a.cost_per_request_ci95
                .map_or(a.cost_per_request_usd, |c| c.high)
        })
        .fold(0.0_f64, f64::max)
        .max(1e-12)
        * 1.1;
    let plot = WIDTH - LABEL - 20.0;
    let x = |v: f64| LABEL + (v.max(0.0) / top) * plot;
    let h = 30.0 * rows.len() as f64 + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="chart" role="img" aria-label="cost per request per arm, 95% interval" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" xmlns="http://www.w3.org/2000/svg"><title>Cost per request (95% interval)</title>"##
    );
    for (i, (a, colour, shadow)) in rows.iter().enumerate() {
        let y = 20.0 + 30.0 * i as f64;
        let _ = write!(
            s,
            r##"<text x="0" y="{:.1}" font-size="12">{}</text>"##,
            y + 4.0,
            esc(&name(a, *shadow))
        );
        if let Some(c) = a.cost_per_request_ci95 {
            let _ = write!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3" opacity="0.45"/>"##,
                x(c.low),
                x(c.high)
            );
        }
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{y:.1}" r="5" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#444">${:.6}</text>"##,
            x(a.cost_per_request_usd),
            x(a.cost_per_request_usd) + 8.0,
            y - 7.0,
            a.cost_per_request_usd
        );
    }
    let base = h - 8.0;
    let _ = write!(
        s,
        "<line x1=\"{LABEL}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{LABEL}\" y=\"{base:.1}\" font-size=\"10\" fill=\"#666\">$0</text><text x=\"{:.1}\" y=\"{base:.1}\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">${top:.6}</text></svg>",
        LABEL + plot,
        base - 12.0,
        base - 12.0,
        LABEL + plot
    );
    s
}

/// Cumulative spend of each arm over the route's window.
pub fn spend_over_time(route: &RouteReport) -> String {
    let lines: Vec<_> = arms(route)
        .filter(|(a, _, _)| a.spend_line.len() >= 2)
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let (t0, t1) = lines
        .iter()
        .flat_map(|(a, _, _)| a.spend_line.iter().map(|p| p.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        });
    let top = lines
        .iter()
        .flat_map(|(a, _, _)| a.spend_line.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let (w, h, left, pad) = (WIDTH, 170.0, 60.0, 16.0);
    let x = |t: f64| left + (t - t0) / (t1 - t0).max(1e-9) * (w - left - pad);
    let y = |v: f64| h - 24.0 - v / top * (h - 24.0 - pad);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="chart" role="img" aria-label="spend over the window per arm" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>Spend over the window</title>"##
    );
    let _ = write!(
        s,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><line x1=\"{left}\" x2=\"{left}\" y1=\"{pad}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">${top:.4}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">$0</text><text x=\"{left}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">now</text>",
        w - pad,
        h - 24.0,
        h - 24.0,
        h - 24.0,
        left - 4.0,
        pad + 4.0,
        left - 4.0,
        h - 24.0,
        h - 8.0,
        esc(&route.since),
        w - pad,
        h - 8.0
    );
    for (i, (a, colour, shadow)) in lines.iter().enumerate() {
        let pts: Vec<String> = a
            .spend_line
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{}</text>"##,
            pts.join(" "),
            left + 8.0,
            pad + 12.0 + 14.0 * i as f64,
            esc(&name(a, *shadow))
        );
    }
    s.push_str("</svg>");
    s
}
