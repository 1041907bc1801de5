//! Request -> route decision. PURE and synchronous: no I/O, no clock, no randomness inside. The
//! random draw for unsticky splits is an input, so the same inputs always give the same decision
//! and `tailor route` can explain a decision offline.
//!
//! Routes are tried in order; the first whose conditions all hold wins. Within a route an arm is
//! picked by weight: by the random draw, or, for sticky routes, by weighted rendezvous hashing of
//! (route name, arm model, sticky key). Rendezvous hashing is stable across restarts and replicas
//! (no shared state) and, when a weight changes, moves only the users that must move.

use std::fmt;

use http::HeaderMap;

use crate::config::{Config, Matcher, Route, Sticky};
use crate::request::RequestView;

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

/// How the arm was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The route has one arm.
    Only,
    /// Sticky hash of the route's key.
    Sticky,
    /// Random draw: the route is not sticky.
    Random,
    /// Random draw: the route is sticky but the request carried no key.
    RandomNoKey,
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

/// The sticky key of a request for a route, if the route is sticky and the request has one.
fn sticky_key<'r>(
    route: &Route,
    req: &'r RequestView<'_>,
    headers: &'r HeaderMap,
) -> Option<&'r str> {
    match &route.sticky {
        Sticky::None => None,
        Sticky::User => req.user.as_deref().filter(|u| !u.is_empty()),
        Sticky::Header(h) => headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty()),
    }
}

/// Picks an arm of `route`: returns the index into `route.arms`. Arms whose model is not
/// `healthy` get no traffic while another arm is healthy (their share goes to the others; with
/// sticky keys only their users move).
pub fn pick_arm(
    cfg: &Config,
    route: &Route,
    key: Option<&str>,
    draw: u64,
    healthy: &dyn Fn(usize) -> bool,
) -> (usize, Pick) {
    if route.arms.len() == 1 {
        return (0, Pick::Only);
    }
    let any_healthy = route.arms.iter().any(|a| a.weight > 0 && healthy(a.model));
    let usable = |a: &crate::config::Arm| a.weight > 0 && (!any_healthy || healthy(a.model));
    if let Some(key) = key {
        let mut best = (0, f64::INFINITY);
        for (i, arm) in route.arms.iter().enumerate() {
            if !usable(arm) {
                continue;
            }
            let h = stable_hash(&[
                route.name.as_bytes(),
                cfg.models[arm.model].name.as_bytes(),
                key.as_bytes(),
            ]);
            // u in (0, 1]; -ln(u)/w is an exponential draw with rate w: the smallest wins with
            // probability w / sum(w)
            let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
            let score = -u.ln() / f64::from(arm.weight);
            if score < best.1 {
                best = (i, score);
            }
        }
        return (best.0, Pick::Sticky);
    }
    let total: u64 = route
        .arms
        .iter()
        .filter(|a| usable(a))
        .map(|a| u64::from(a.weight))
        .sum();
    let mut r = draw % total.max(1);
    let mut chosen = route.arms.len() - 1;
    for (i, arm) in route.arms.iter().enumerate() {
        let w = if usable(arm) {
            u64::from(arm.weight)
        } else {
            0
        };
        if r < w {
            chosen = i;
            break;
        }
        r -= w;
    }
    let pick = if matches!(route.sticky, Sticky::None) {
        Pick::Random
    } else {
        Pick::RandomNoKey
    };
    (chosen, pick)
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
    let (arm, pick) = pick_arm(cfg, route, sticky_key(route, req, headers), draw, healthy);
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

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pick::Only => "only arm",
            Pick::Sticky => "sticky hash",
            Pick::Random => "random draw by weight",
            Pick::RandomNoKey => {
                "random draw by weight (sticky route, but the request has no sticky key)"
            }
        })
    }
}

/// FNV-1a over the parts (with a separator), finished with the splitmix64 mixer. Fixed forever:
/// changing it would move every sticky user.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Endpoint;
    use http::HeaderValue;

    const PINNED: u64 = 1_524_133_532_485_568_681;

    const CFG: &str = r#"
upstreams:
  openai: { url: "http://127.0.0.1:1/v1" }
models:
  gpt-4o: { upstream: openai, id: gpt-4o-2024-08-06 }
  ft: { upstream: openai, id: "ft:gpt-4o-2024-08-06:acme:support:A1" }
  mini: { upstream: openai, id: gpt-4o-mini }
  emb: { upstream: openai, id: text-embedding-3-small }
routes:
  - name: embeddings
    match: { endpoint: embeddings }
    split: [{ model: emb }]
  - name: team
    match: { headers: { x-team: support } }
    split: [{ model: ft }]
  - name: vip
    match: { user: "^vip-", model: gpt-4o }
    split: [{ model: gpt-4o }]
  - name: meta
    match: { metadata: { feature: billing } }
    split: [{ model: mini }]
  - name: sys
    match: { system: "(?i)acme support" }
    split: [{ model: ft }]
  - name: refunds
    match: { content: "(?i)refund|warranty" }
    split: [{ model: ft }]
  - name: tools
    match: { tools: true }
    split: [{ model: gpt-4o }]
  - name: small
    match: { prompt_tokens: { max: 40 }, model: [small] }
    split: [{ model: mini }]
  - name: big
    match: { prompt_tokens: { min: 41 }, model: [small] }
    split: [{ model: gpt-4o }]
  - name: ab
    match: { model: [gpt-4o, support] }
    split:
      - { model: ft, weight: 90 }
      - { model: gpt-4o, weight: 10 }
    sticky: user
    fallback: [gpt-4o]
  - name: ab-random
    match: { model: random }
    split:
      - { model: ft, weight: 3 }
      - { model: mini, weight: 1 }
  - name: ab-header
    match: { model: by-header }
    split:
      - { model: ft, weight: 1 }
      - { model: mini, weight: 1 }
    sticky: "header:X-Session"
"#;

    fn cfg() -> Config {
        Config::from_yaml(CFG, &|_| None).unwrap()
    }

    fn decide(
        cfg: &Config,
        ep: Endpoint,
        body: &str,
        headers: &[(&'static str, &'static str)],
        draw: u64,
    ) -> Option<(String, String)> {
        let v = RequestView::parse(body.as_bytes(), ep).unwrap();
        let mut h = HeaderMap::new();
        for (k, val) in headers {
            h.insert(*k, HeaderValue::from_static(val));
        }
        classify(cfg, &v, &h, draw, &|_| true).map(|d| {
            (
                cfg.routes[d.route].name.clone(),
                cfg.models[d.model].name.clone(),
            )
        })
    }

    /// endpoint, body, headers, expected (route, model)
    type Row = (
        Endpoint,
        String,
        Vec<(&'static str, &'static str)>,
        Option<(&'static str, &'static str)>,
    );

    fn chat(model: &str, extra: &str) -> String {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}]{extra}}}"#)
    }

    #[test]
    fn table_of_decisions() {
        let c = cfg();
        let sys = r#"{"model":"x","messages":[{"role":"system","content":"You are ACME Support."},{"role":"user","content":"hi"}]}"#;
        let long = format!(
            r#"{{"model":"small","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "a".repeat(200)
        );
        let rows: Vec<Row> = vec![
            // endpoint
            (
                Endpoint::Embeddings,
                r#"{"model":"text-embedding-3-small","input":"hi"}"#.into(),
                vec![],
                Some(("embeddings", "emb")),
            ),
            // headers: exact value selects; other value or absence rejects
            (
                Endpoint::Chat,
                chat("x", ""),
                vec![("x-team", "support")],
                Some(("team", "ft")),
            ),
            (
                Endpoint::Chat,
                chat("x", ""),
                vec![("x-team", "sales")],
                None,
            ),
            // user regex + model: both must hold
            (
                Endpoint::Chat,
                chat("gpt-4o", r#","user":"vip-7""#),
                vec![],
                Some(("vip", "gpt-4o")),
            ),
            (
                Endpoint::Chat,
                chat("other", r#","user":"vip-7""#),
                vec![],
                None,
            ),
            // metadata equality
            (
                Endpoint::Chat,
                chat("x", r#","metadata":{"feature":"billing"}"#),
                vec![],
                Some(("meta", "mini")),
            ),
            (
                Endpoint::Chat,
                chat("x", r#","metadata":{"feature":"support"}"#),
                vec![],
                None,
            ),
            // system regex (case-insensitive)
            (Endpoint::Chat, sys.into(), vec![], Some(("sys", "ft"))),
            // content regex on user messages
            (
                Endpoint::Chat,
                r#"{"model":"x","messages":[{"role":"user","content":"I want a REFUND"}]}"#.into(),
                vec![],
                Some(("refunds", "ft")),
            ),
            (
                Endpoint::Chat,
                r#"{"model":"x","messages":[{"role":"assistant","content":"refund"}]}"#.into(),
                vec![],
                None,
            ),
            // tools
            (
                Endpoint::Chat,
                chat(
                    "x",
                    r#","tools":[{"type":"function","function":{"name":"f"}}]"#,
                ),
                vec![],
                Some(("tools", "gpt-4o")),
            ),
            (Endpoint::Chat, chat("x", r#","tools":[]"#), vec![], None),
            // prompt size
            (
                Endpoint::Chat,
                chat("small", ""),
                vec![],
                Some(("small", "mini")),
            ),
            (Endpoint::Chat, long, vec![], Some(("big", "gpt-4o"))),
            // the first match wins: header route before the model route
            (
                Endpoint::Chat,
                chat("gpt-4o", ""),
                vec![("x-team", "support")],
                Some(("team", "ft")),
            ),
            // no route: unknown model
            (Endpoint::Chat, chat("gpt-5", ""), vec![], None),
        ];
        for (i, (ep, body, headers, want)) in rows.into_iter().enumerate() {
            let got = decide(&c, ep, &body, &headers, 0);
            assert_eq!(
                got.as_ref().map(|(r, m)| (r.as_str(), m.as_str())),
                want,
                "row {i}: {body}"
            );
        }
    }

    #[test]
    fn random_split_follows_weights() {
        let c = cfg();
        let n = 2000u64;
        let mut ft = 0;
        let mut x = 0x1234_5678u64;
        for _ in 0..n {
            // xorshift: a deterministic stand-in for the proxy's random source
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if decide(&c, Endpoint::Chat, &chat("random", ""), &[], x)
                .unwrap()
                .1
                == "ft"
            {
                ft += 1;
            }
        }
        let share = ft as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.03, "ft share {share}");
    }

    #[test]
    fn sticky_users_keep_their_arm_and_shares_hold() {
        let c = cfg();
        let mut ft = 0;
        for u in 0..2000 {
            let body = chat("gpt-4o", &format!(r#","user":"user-{u}""#));
            let first = decide(&c, Endpoint::Chat, &body, &[], 0).unwrap();
            for draw in [1, 99, u64::MAX] {
                assert_eq!(
                    decide(&c, Endpoint::Chat, &body, &[], draw).unwrap(),
                    first,
                    "user-{u} moved"
                );
            }
            if first.1 == "ft" {
                ft += 1;
            }
        }
        let share = ft as f64 / 2000.0;
        assert!((share - 0.90).abs() < 0.03, "ft share {share}");
    }

    #[test]
    fn sticky_by_header() {
        let c = cfg();
        let a = decide(
            &c,
            Endpoint::Chat,
            &chat("by-header", ""),
            &[("x-session", "s-1")],
            0,
        );
        for d in 1..50 {
            assert_eq!(
                decide(
                    &c,
                    Endpoint::Chat,
                    &chat("by-header", ""),
                    &[("x-session", "s-1")],
                    d
                ),
                a
            );
        }
        let mut seen = std::collections::HashSet::new();
        for d in 0..50 {
            seen.insert(
                decide(&c, Endpoint::Chat, &chat("by-header", ""), &[], d)
                    .unwrap()
                    .1,
            );
        }
        assert_eq!(seen.len(), 2, "without the header the draw decides");
    }

    #[test]
    fn weight_change_moves_few_users() {
        let before = cfg();
        let after = Config::from_yaml(
            &CFG.replace("weight: 90", "weight: 80")
                .replace("weight: 10", "weight: 20"),
            &|_| None,
        )
        .unwrap();
        let mut moved = 0;
        let mut wrong_way = 0;
        for u in 0..5000 {
            let body = chat("gpt-4o", &format!(r#","user":"u{u}""#));
            let a = decide(&before, Endpoint::Chat, &body, &[], 0).unwrap().1;
            let b = decide(&after, Endpoint::Chat, &body, &[], 0).unwrap().1;
            if a != b {
                moved += 1;
                if a == "gpt-4o" {
                    wrong_way += 1;
                }
            }
        }
        // the minimum is 10% of users; rendezvous moves about that, and only from ft to gpt-4o
        assert_eq!(wrong_way, 0);
        assert!((400..=600).contains(&moved), "moved {moved}");
    }

    #[test]
    fn hash_is_fixed() {
        // pinned: a change here would re-shuffle every sticky user on upgrade
        assert_eq!(stable_hash(&[b"support", b"support-ft", b"cust-1"]), PINNED);
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
    }
}
