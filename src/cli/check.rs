//! `tailor check`: validate a config and print what it resolved to (upstreams, prices, routes).

use std::path::Path;

use anyhow::Result;
use tailor::config::{Auth, PriceSource, Sticky, UpstreamKind};

use super::common::{credential_warnings, load};
pub fn run(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    let mut warnings = credential_warnings(&cfg);
    for u in &cfg.upstreams {
        if let Auth::Key { env, key: None } = &u.auth {
            warnings.push(format!(
                "upstream `{}`: ${env} is not set: its models fail over, or answer 500",
                u.name
            ));
        }
    }
    if warnings.is_empty() {
        out!("{}: OK", path.display());
    } else {
        out!(
            "{}: OK, with {} warning(s):",
            path.display(),
            warnings.len()
        );
        for w in &warnings {
            out!("  warning: {w}");
        }
    }
    out!(
        "\nserver: listen {}  admin {}  max_body_bytes {}",
        cfg.server.listen,
        cfg.server.admin_listen,
        cfg.server.max_body_bytes
    );
    out!("\nupstreams:");
    for u in &cfg.upstreams {
        let auth = match &u.auth {
            Auth::Key { env, key: Some(_) } => format!("key from ${env} (set)"),
            Auth::Key { env, key: None } => {
                format!("key from ${env} (NOT SET: its models fail over, or answer 500)")
            }
            Auth::Passthrough => "caller's Authorization passed through".into(),
            Auth::None => "no credentials (`auth: none`: a server that wants no key)".into(),
        };
        let kind = match u.kind {
            UpstreamKind::Openai => "openai".to_owned(),
            UpstreamKind::Azure => format!(
                "azure api-version {}",
                u.api_version.as_deref().unwrap_or("")
            ),
        };
        out!("  {:<14} {:<36} {kind}; {auth}", u.name, u.url);
    }
    out!("\nmodels (USD per 1M tokens: input / cached input / output):");
    for m in &cfg.models {
        let src = match &m.price_source {
            PriceSource::Config => "price from config".to_owned(),
            PriceSource::Table { key, as_of } => format!("built-in `{key}` as of {as_of}"),
        };
        let src = match m.training_cost_usd() {
            Some(t) => format!("{src}; training cost ${t:.2}"),
            None => src,
        };
        out!(
            "  {:<14} {:<44} on {:<12} {} / {} / {}  ({src})",
            m.name,
            m.id,
            cfg.upstreams[m.upstream].name,
            usd(m.price.input),
            usd(m.price.cached_input),
            usd(m.price.output)
        );
    }
    out!("\nroutes (first match wins):");
    for (i, r) in cfg.routes.iter().enumerate() {
        let arms: Vec<String> = r
            .arms
            .iter()
            .map(|a| {
                format!(
                    "{} {:.0}%",
                    cfg.models[a.model].name,
                    100.0 * f64::from(a.weight) / r.total_weight as f64
                )
            })
            .collect();
        let fb: Vec<&str> = r
            .fallback
            .iter()
            .map(|m| cfg.models[*m].name.as_str())
            .collect();
        let sticky = match &r.sticky {
            Sticky::None => "none".to_owned(),
            Sticky::User => "user".to_owned(),
            Sticky::Header(h) => format!("header:{h}"),
        };
        out!(
            "  {i}. {:<14} -> {}  sticky: {sticky}  fallback: [{}]",
            r.name,
            arms.join(", "),
            fb.join(", ")
        );
        out!("     match: {}", r.matcher.describe());
        for p in &r.prompts {
            out!(
                "     {} gets a system prompt of {} bytes ({})",
                cfg.models[p.model].name,
                p.text.len(),
                if p.replace {
                    "replacing the client's"
                } else {
                    "prepended"
                }
            );
        }
        if let Some(s) = &r.shadow {
            out!(
                "     shadow: {}% copied to {}",
                s.percent,
                cfg.models[s.model].name
            );
            if let Some(j) = &s.judge {
                out!("     judged by {}", cfg.models[j.model].name);
            }
        }
    }
    match &cfg.passthrough {
        Some(p) => out!(
            "\npassthrough: every other /v1 path -> upstream `{}` (bodies up to {} bytes, streamed)",
            cfg.upstreams[p.upstream].name,
            p.max_body_bytes
        ),
        None => out!("\npassthrough: off (other /v1 paths answer 404)"),
    }
    if !cfg.limits.is_empty() {
        let store = match &cfg.shared_state.redis {
            Some(_) => "Redis (shared by every replica)",
            None => "this process",
        };
        out!(
            "\nlimits (counted in {store}; store timeout {:?}, on error: {}):",
            cfg.shared_state.timeout,
            match cfg.shared_state.on_error {
                tailor::config::OnError::Allow => "allow",
                tailor::config::OnError::Deny => "deny",
            }
        );
        for l in &cfg.limits {
            let mut scope = Vec::new();
            if let Some(c) = &l.client {
                scope.push(format!("client={c}"));
            }
            if let Some(r) = l.route {
                scope.push(format!("route={}", cfg.routes[r].name));
            }
            if let Some(m) = l.model {
                scope.push(format!("model={}", cfg.models[m].name));
            }
            out!(
                "  {:<24} {}; for {}",
                l.name,
                l.describe_caps(),
                if scope.is_empty() {
                    "every request".to_owned()
                } else {
                    scope.join(" ")
                }
            );
        }
    }
    Ok(())
}

fn usd(micro_per_m: u64) -> String {
    format!("{:.4}", micro_per_m as f64 / 1e6)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_owned()
}
