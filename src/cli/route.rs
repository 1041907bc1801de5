//! `tailor route`: the routing decision for one request body, explained, offline.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use http::{HeaderMap, HeaderName, HeaderValue};
use tailor::classify;
use tailor::request::{Endpoint, RequestView};

use super::common::load;

/// How to give `route` its input; said when stdin is a terminal or empty.
const USAGE: &str = "tailor route reads the request body from stdin, e.g.\n  \
    echo '{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}' \
    | tailor route --config routes.yaml -H 'x-team: support'";

/// `draw`: a fraction in 0..=1, where the random draw of an unsticky split lands.
pub fn run(path: &Path, endpoint: Endpoint, headers: &[String], draw: f64) -> Result<()> {
    let cfg = load(path)?;
    // a terminal would wait for input the user does not know to type
    if std::io::stdin().is_terminal() {
        bail!("{USAGE}");
    }
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    if body.trim_ascii().is_empty() {
        bail!("no request body on stdin: {USAGE}");
    }
    let mut h = HeaderMap::new();
    for line in headers {
        let (k, v) = line
            .split_once(':')
            .with_context(|| format!("header `{line}` is not `name: value`"))?;
        h.append(
            HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes())?,
            HeaderValue::from_str(v.trim())?,
        );
    }
    let view = RequestView::parse(&body, endpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
    // the fraction becomes the draw that lands at that share of the matching route's weight
    let draw = classify::explain(&cfg, &view, &h, 0)
        .decision
        .map_or(0, |d| classify::arm::draw_at(&cfg.routes[d.route], draw));
    let ex = classify::explain(&cfg, &view, &h, draw);
    for (i, v) in ex.verdicts.iter().enumerate() {
        let r = &cfg.routes[i];
        match v {
            Ok(()) => out!("route {:<14} matches ({})", r.name, r.matcher.describe()),
            Err(c) => out!("route {:<14} skipped: {}", r.name, c.describe(&r.matcher)),
        }
    }
    match ex.decision {
        Some(d) => {
            let r = &cfg.routes[d.route];
            let m = &cfg.models[d.model];
            let fb: Vec<&str> = d
                .fallbacks
                .iter()
                .map(|i| cfg.models[*i].name.as_str())
                .collect();
            out!(
                "\ndecision: route={} model={} (upstream id {}) by {}; fallback: [{}]",
                r.name,
                m.name,
                m.id,
                d.pick,
                fb.join(", ")
            );
            Ok(())
        }
        None => bail!("no route matches: the request would get 404 model_not_found"),
    }
}
