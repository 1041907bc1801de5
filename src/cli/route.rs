//! `tailor route`: the routing decision for one request body, explained, offline.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use http::{HeaderMap, HeaderName, HeaderValue};
use tailor::classify;
use tailor::request::{Endpoint, RequestView};

use super::common::load;
pub fn run(path: &Path, endpoint: Endpoint, headers: &[String], draw: u64) -> Result<()> {
    let cfg = load(path)?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
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
