//! The ledger: per (route, model, primary|shadow) counters since the process started. It
//! subscribes to every finished request of an arm ([`Subscriber`]) and survives reloads; restarts
//! begin it anew. It is exported as the `tailor_arm_*` counters (`export.rs`), which
//! Prometheus sums over replicas and restarts (`fleet.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use super::stats::Moments;
use crate::metrics::shard::Sharded;
use crate::usage::event::{Finished, Subscriber};
use crate::usage::price::PICO_PER_USD;
use crate::usage::Usage;

/// Which traffic a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Traffic {
    Primary,
    Shadow,
}

impl Traffic {
    pub fn as_str(self) -> &'static str {
        match self {
            Traffic::Primary => "primary",
            Traffic::Shadow => "shadow",
        }
    }
}

/// Upper bounds (ms) of the latency buckets the p50 and p95 are read from.
pub const LATENCY_MS: [u64; 18] = [
    25, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000,
    30_000, 60_000, 120_000,
];

/// Counters of one (route, model, traffic), one copy per worker (summed when read).
#[derive(Default)]
pub struct ArmStats(Sharded<Cells>);

/// One worker's copy of an arm's counters.
#[derive(Default)]
struct Cells {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Prompt tokens including cached ones.
    input: AtomicU64,
    cached: AtomicU64,
    output: AtomicU64,
    cost_pico: AtomicU64,
    /// Requests answered completely, and their cost: the basis of cost per request.
    answered: AtomicU64,
    answered_cost_pico: AtomicU64,
    /// Sum of the squared cost (USD²) of answered requests, as f64 bits: the spread of the cost.
    answered_cost_sq: AtomicU64,
    /// Feedback scores: count, sum and sum of squares (f64 bits).
    feedback_n: AtomicU64,
    feedback_sum: AtomicU64,
    feedback_sq: AtomicU64,
    /// Requests per latency bucket; the last one is "above the largest bound".
    latency: [AtomicU64; BUCKETS],
    latency_us: AtomicU64,
}

/// Latency buckets, the last one unbounded.
pub const BUCKETS: usize = LATENCY_MS.len() + 1;

impl ArmStats {
    /// One finished request: `ok` unless the upstream or tailor failed it; `answered` when it
    /// was answered completely (a hang-up is neither an error nor an answer).
    pub fn record(&self, ok: bool, answered: bool, u: &Usage, cost_pico: u128, elapsed: Duration) {
        let c = self.0.mine();
        let cost = u64::try_from(cost_pico).unwrap_or(u64::MAX);
        c.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        if answered {
            c.answered.fetch_add(1, Ordering::Relaxed);
            c.answered_cost_pico.fetch_add(cost, Ordering::Relaxed);
            let usd = cost as f64 / PICO_PER_USD;
            add_f64(&c.answered_cost_sq, usd * usd);
        }
        c.input.fetch_add(u.input, Ordering::Relaxed);
        c.cached.fetch_add(u.cached, Ordering::Relaxed);
        c.output.fetch_add(u.output, Ordering::Relaxed);
        c.cost_pico.fetch_add(cost, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        c.latency_us.fetch_add(us, Ordering::Relaxed);
        let ms = us / 1_000 + u64::from(us % 1_000 != 0);
        let b = LATENCY_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(LATENCY_MS.len());
        c.latency[b].fetch_add(1, Ordering::Relaxed);
    }

    /// One quality score (0..1) for an answer of this arm.
    pub fn record_feedback(&self, score: f64) {
        let c = self.0.mine();
        c.feedback_n.fetch_add(1, Ordering::Relaxed);
        add_f64(&c.feedback_sum, score);
        add_f64(&c.feedback_sq, score * score);
    }

    /// Sum of the latencies, seconds (the histogram's `_sum`).
    pub fn latency_sum_seconds(&self) -> f64 {
        self.sum(|c| &c.latency_us) as f64 / 1e6
    }

    /// An integer counter summed over the copies (wrapping, as one atomic would).
    fn sum(&self, field: impl Fn(&Cells) -> &AtomicU64) -> u64 {
        self.0
            .all()
            .fold(0, |s, c| s.wrapping_add(field(c).load(Ordering::Relaxed)))
    }

    /// An f64 counter (kept as bits) summed over the copies.
    fn sum_f64(&self, field: impl Fn(&Cells) -> &AtomicU64) -> f64 {
        self.0
            .all()
            .map(|c| f64::from_bits(field(c).load(Ordering::Relaxed)))
            .sum()
    }

    pub fn snapshot(&self) -> Counts {
        Counts {
            requests: self.sum(|c| &c.requests),
            errors: self.sum(|c| &c.errors),
            input: self.sum(|c| &c.input),
            cached: self.sum(|c| &c.cached),
            output: self.sum(|c| &c.output),
            cost_pico: self.sum(|c| &c.cost_pico),
            answered: self.sum(|c| &c.answered),
            answered_cost_pico: self.sum(|c| &c.answered_cost_pico),
            answered_cost_sq_usd: self.sum_f64(|c| &c.answered_cost_sq),
            feedback: Moments {
                n: self.sum(|c| &c.feedback_n) as f64,
                sum: self.sum_f64(|c| &c.feedback_sum),
                sum_sq: self.sum_f64(|c| &c.feedback_sq),
            },
            latency: std::array::from_fn(|i| self.sum(|c| &c.latency[i])),
        }
    }
}

/// Adds to an f64 kept as bits in an atomic.
fn add_f64(cell: &AtomicU64, v: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
        Some((f64::from_bits(b) + v).to_bits())
    });
}

impl Subscriber for ArmStats {
    fn finished(&self, f: &Finished<'_>) {
        self.record(!f.failed, f.answered, &f.usage, f.cost_pico, f.elapsed);
    }
}

/// A snapshot of one arm's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub cost_pico: u64,
    /// Requests answered completely, and what they cost.
    pub answered: u64,
    pub answered_cost_pico: u64,
    /// Sum of their squared costs, USD².
    pub answered_cost_sq_usd: f64,
    /// Feedback scores posted for this arm.
    pub feedback: Moments,
    /// Requests per latency bucket (bounds: [`LATENCY_MS`], then unbounded).
    pub latency: [u64; BUCKETS],
}

impl Counts {
    /// Upper bound (ms) of the latency bucket holding quantile `q` (None without requests;
    /// `u64::MAX` above the largest bound).
    pub fn latency_quantile_ms(&self, q: f64) -> Option<u64> {
        let n: u64 = self.latency.iter().sum();
        let mut seen = 0;
        for (i, c) in self.latency.iter().enumerate() {
            seen += c;
            if n > 0 && seen as f64 >= q * n as f64 {
                return Some(LATENCY_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }
}

/// Cumulative spend (USD) of one arm at points in time (unix seconds), for the status page.
pub type SpendLine = Vec<(f64, f64)>;

/// (route, model, traffic)
pub type Key = (Arc<str>, Arc<str>, Traffic);

/// Spend per arm (picodollars) at one time (unix seconds).
type SpendPoint = (f64, Vec<(Key, u64)>);

/// Points of spend history kept at most (older ones are thinned, so the whole life stays).
const HISTORY_POINTS: usize = 240;
/// Seconds between two kept points at least.
const HISTORY_STEP: f64 = 5.0;

/// Counters per (route, model, traffic) since the process started.
pub struct Ledger {
    arms: DashMap<Key, Arc<ArmStats>>,
    started: std::time::Instant,
    /// Unix seconds at start (exported as `tailor_start_time_seconds`: a restart shows there).
    pub started_unix: f64,
    /// Spend per arm (picodollars) at points in time (unix seconds), taken by snapshots.
    history: Mutex<Vec<SpendPoint>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            arms: DashMap::new(),
            started: std::time::Instant::now(),
            started_unix: unix_now(),
            history: Mutex::new(Vec::new()),
        }
    }
}

/// Seconds since 1970.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Ledger {
    /// The counters of one arm (created at first use; resolved once per config, not per request).
    pub fn arm(&self, route: &Arc<str>, model: &Arc<str>, traffic: Traffic) -> Arc<ArmStats> {
        self.arms
            .entry((route.clone(), model.clone(), traffic))
            .or_default()
            .clone()
    }

    /// Every arm's stats, for the exporter.
    pub fn each(&self, mut f: impl FnMut(&Key, &ArmStats)) {
        for e in self.arms.iter() {
            f(e.key(), e.value());
        }
    }

    /// Every arm's counters now, and the time they cover ("this replica, since it started").
    pub fn snapshot(&self) -> Snapshot {
        let arms: Vec<(Key, Counts)> = self
            .arms
            .iter()
            .map(|e| (e.key().clone(), e.value().snapshot()))
            .collect();
        let now = unix_now();
        let point: Vec<(Key, u64)> = arms.iter().map(|(k, c)| (k.clone(), c.cost_pico)).collect();
        let history = {
            let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if h.last().is_none_or(|(t, _)| now - t >= HISTORY_STEP) {
                if h.len() >= HISTORY_POINTS {
                    // keep every other point: the same span at half the resolution
                    let mut i = 0;
                    h.retain(|_| {
                        i += 1;
                        i % 2 == 1
                    });
                }
                h.push((now, point.clone()));
            }
            let mut lines: Vec<(Key, SpendLine)> = Vec::new();
            let start = (self.started_unix, Vec::new());
            let now_point = (now, point);
            for (t, p) in std::iter::once(&start)
                .chain(h.iter())
                .chain(std::iter::once(&now_point))
            {
                for (k, _) in &arms {
                    let v = p.iter().find(|(x, _)| x == k).map_or(0, |(_, v)| *v);
                    match lines.iter_mut().find(|(x, _)| x == k) {
                        Some((_, l)) => l.push((*t, v as f64 / PICO_PER_USD)),
                        None => lines.push((k.clone(), vec![(*t, v as f64 / PICO_PER_USD)])),
                    }
                }
            }
            lines
        };
        Snapshot {
            arms,
            elapsed: self.started.elapsed(),
            since_unix: self.started_unix,
            routes: Vec::new(),
            history,
            source: Source::local(self.started_unix),
        }
    }
}

/// Where a snapshot's figures come from: shown on every page and in every JSON.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Source {
    /// "prometheus" (the fleet) or "local" (this replica).
    pub kind: &'static str,
    /// One sentence: "this replica, since 2026-11-27T10:00:00Z" or "fleet: ...".
    pub description: String,
    pub prometheus_url: Option<String>,
    /// Replicas (scrape targets) and processes (a restart is a new one) seen in the window.
    pub replicas: Option<usize>,
    pub processes: Option<usize>,
    /// When Prometheus could not be read: why (the figures are then this replica's).
    pub error: Option<String>,
}

impl Source {
    pub fn local(since_unix: f64) -> Source {
        Source {
            kind: "local",
            description: format!("this replica, since {}", rfc3339(since_unix)),
            ..Source::default()
        }
    }
}

/// `2026-11-27T10:00:00Z`
pub fn rfc3339(unix: f64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Counters of every arm at one moment, and how long they have been counting.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub arms: Vec<(Key, Counts)>,
    /// The window every route without its own covers, and where it starts (unix seconds).
    pub elapsed: Duration,
    pub since_unix: f64,
    /// Routes with their own window: (route, start unix seconds, length).
    pub routes: Vec<(String, f64, Duration)>,
    /// Cumulative spend per arm over the window.
    pub history: Vec<(Key, SpendLine)>,
    pub source: Source,
}

impl Snapshot {
    /// The window of one route: (start, unix seconds; length).
    pub fn window(&self, route: &str) -> (f64, Duration) {
        self.routes
            .iter()
            .find(|(r, _, _)| r == route)
            .map_or((self.since_unix, self.elapsed), |(_, s, d)| (*s, *d))
    }

    /// One arm's spend over the window (empty if none was kept).
    pub fn spend_line(&self, route: &str, model: &str, traffic: Traffic) -> &[(f64, f64)] {
        self.history
            .iter()
            .find(|((r, m, t), _)| &**r == route && &**m == model && *t == traffic)
            .map_or(&[], |(_, l)| l.as_slice())
    }

    /// One arm's counters (zero if it has none yet).
    pub fn get(&self, route: &str, model: &str, traffic: Traffic) -> Counts {
        self.arms
            .iter()
            .find(|((r, m, t), _)| &**r == route && &**m == model && *t == traffic)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}
