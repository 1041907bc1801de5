//! Which arm of a route answers: by weight, from the random draw, or, for sticky routes, by
//! weighted rendezvous hashing of (route name, arm model, sticky key). Pure, like the rest of
//! classification.

use std::fmt;

use http::HeaderMap;

use crate::config::{Arm, Config, Route, Sticky};
use crate::request::RequestView;

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

/// The sticky key of a request for a route, if the route is sticky and the request has one.
pub fn sticky_key<'r>(
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
    let usable = |a: &Arm| a.weight > 0 && (!any_healthy || healthy(a.model));
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

/// The draw that lands at `fraction` (0..=1) of `route`'s total weight, all arms healthy: what
/// `tailor route --draw 0.95` explains. [`pick_arm`] walks the arms with `draw % total`, so this
/// is position `floor(fraction * total)`, the last one for 1.0.
pub fn draw_at(route: &Route, fraction: f64) -> u64 {
    let total: u64 = route.arms.iter().map(|a| u64::from(a.weight)).sum();
    let at = (fraction.clamp(0.0, 1.0) * total as f64).floor() as u64;
    at.min(total.saturating_sub(1))
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
