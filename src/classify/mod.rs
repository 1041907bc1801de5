//! Request -> route decision. PURE and synchronous: no I/O, no clock, no randomness inside. The
//! random draw for unsticky splits is an input, so the same inputs always give the same decision
//! and `tailor route` can explain a decision offline.
//!
//! Routes are tried in order; the first whose conditions all hold wins. Within a route an arm is
//! picked by weight: by the random draw, or, for sticky routes, by weighted rendezvous hashing of
//! (route name, arm model, sticky key). Rendezvous hashing is stable across restarts and replicas
//! (no shared state) and, when a weight changes, moves only the users that must move.

//!
//! - this file: the route conditions ([`check`]), the decision ([`classify`]) and its explanation.
//! - [`arm`]: the arm within a route (weighted draw or sticky rendezvous hash).

pub mod arm;
#[cfg(test)]
mod tests;

use http::HeaderMap;

use crate::config::{Config, Matcher};
use crate::request::RequestView;
pub use arm::{stable_hash, Pick};

/// The condition that rejected a request (for `tailor route`'s explanation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Endpoint,
    Model,
    Header(usize),
    Tools,
    Metadata(usize),
    User,
    PromptTokens,
    System,
    Content,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'c> {
    pub route: usize,
    /// Index into `Config::models` of the chosen arm.
    pub model: usize,
    /// Models to try in order if the chosen one fails before any byte is sent.
    pub fallbacks: &'c [usize],
    pub pick: Pick,
}

/// Checks one route's conditions, cheapest first.
pub fn check(m: &Matcher, req: &RequestView<'_>, headers: &HeaderMap) -> Result<(), Cond> {
    if let Some(eps) = &m.endpoints {
        if !eps.contains(&req.endpoint) {
            return Err(Cond::Endpoint);
        }
    }
    if let Some(models) = &m.models {
        if !models.iter().any(|x| *x == req.model) {
            return Err(Cond::Model);
        }
    }
    for (i, (name, value)) in m.headers.iter().enumerate() {
        if headers
            .get(name)
            .is_none_or(|v| v.as_bytes() != value.as_bytes())
        {
            return Err(Cond::Header(i));
        }
    }
    if let Some(t) = m.tools {
        if req.has_tools() != t {
            return Err(Cond::Tools);
        }
    }
    for (i, (k, v)) in m.metadata.iter().enumerate() {
        if req.metadata(k).is_none_or(|x| x != v.as_str()) {
            return Err(Cond::Metadata(i));
        }
    }
    if let Some(re) = &m.user {
        if !req.user.as_deref().is_some_and(|u| re.is_match(u)) {
            return Err(Cond::User);
        }
    }
    if let Some((lo, hi)) = m.prompt_tokens {
        let n = req.estimated_prompt_tokens();
        if n < lo || n > hi {
            return Err(Cond::PromptTokens);
        }
    }
    if let Some(re) = &m.system {
        if !re.is_match(&req.text().system) {
            return Err(Cond::System);
        }
    }
    if let Some(re) = &m.content {
        if !re.is_match(&req.text().user) {
            return Err(Cond::Content);
        }
    }
    Ok(())
}

/// Decides where a request goes; `None` when no route matches. `healthy` tells which models are
/// in rotation (an input, like the draw: the function stays pure).
pub fn classify<'c>(
    cfg: &'c Config,
    req: &RequestView<'_>,
    headers: &HeaderMap,
    draw: u64,
    healthy: &dyn Fn(usize) -> bool,
) -> Option<Decision<'c>> {
    let (ri, route) = cfg
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| check(&r.matcher, req, headers).is_ok())?;
    let (arm, pick) = arm::pick_arm(
        cfg,
        route,
        arm::sticky_key(route, req, headers),
        draw,
        healthy,
    );
    Some(Decision {
        route: ri,
        model: route.arms[arm].model,
        fallbacks: &route.fallback,
        pick,
    })
}

/// Every route's verdict plus the decision: what `tailor route` prints.
pub struct Explanation<'c> {
    pub cfg: &'c Config,
    pub verdicts: Vec<Result<(), Cond>>,
    pub decision: Option<Decision<'c>>,
}

pub fn explain<'c>(
    cfg: &'c Config,
    req: &RequestView<'_>,
    headers: &HeaderMap,
    draw: u64,
) -> Explanation<'c> {
    let mut verdicts = Vec::new();
    for r in &cfg.routes {
        let v = check(&r.matcher, req, headers);
        let hit = v.is_ok();
        verdicts.push(v);
        if hit {
            break;
        }
    }
    Explanation {
        cfg,
        verdicts,
        decision: classify(cfg, req, headers, draw, &|_| true),
    }
}

impl Cond {
    /// Describes the failed condition of route `m`.
    pub fn describe(self, m: &Matcher) -> String {
        match self {
            Cond::Endpoint => "endpoint not in match.endpoint".to_owned(),
            Cond::Model => format!(
                "requested model not in {:?}",
                m.models.as_deref().unwrap_or_default()
            ),
            Cond::Header(i) => format!("header {} != {:?}", m.headers[i].0, m.headers[i].1),
            Cond::Tools => format!("tools present != {}", m.tools.unwrap_or_default()),
            Cond::Metadata(i) => format!("metadata.{} != {:?}", m.metadata[i].0, m.metadata[i].1),
            Cond::User => "user does not match regex".to_owned(),
            Cond::PromptTokens => "estimated prompt tokens out of range".to_owned(),
            Cond::System => "system prompt does not match regex".to_owned(),
            Cond::Content => "user messages do not match regex".to_owned(),
        }
    }
}
