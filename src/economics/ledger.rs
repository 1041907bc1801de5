//! The ledger: per (route, model, primary|shadow) counters since the process started. It
//! subscribes to every finished request of an arm ([`Subscriber`]) and survives reloads; restarts
//! begin it anew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::stats::Moments;
use crate::usage::event::{Finished, Subscriber};
use crate::usage::price::PICO_PER_USD;
use crate::usage::Usage;

/// Which traffic a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Upper bounds (ms) of the latency buckets the p95 is read from.
const LATENCY_MS: [u64; 18] = [
    25, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000,
    30_000, 60_000, 120_000,
];

/// Counters of one (route, model, traffic).
#[derive(Default)]
pub struct ArmStats {
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
    latency: [AtomicU64; LATENCY_MS.len() + 1],
}

impl ArmStats {
    /// One finished request: `ok` unless the upstream or tailor failed it; `answered` when it
    /// was answered completely (a hang-up is neither an error nor an answer).
    pub fn record(&self, ok: bool, answered: bool, u: &Usage, cost_pico: u128, elapsed: Duration) {
        let cost = u64::try_from(cost_pico).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if answered {
            self.answered.fetch_add(1, Ordering::Relaxed);
            self.answered_cost_pico.fetch_add(cost, Ordering::Relaxed);
            let usd = cost as f64 / PICO_PER_USD;
            add_f64(&self.answered_cost_sq, usd * usd);
        }
        self.input.fetch_add(u.input, Ordering::Relaxed);
        self.cached.fetch_add(u.cached, Ordering::Relaxed);
        self.output.fetch_add(u.output, Ordering::Relaxed);
        self.cost_pico.fetch_add(cost, Ordering::Relaxed);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let b = LATENCY_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(LATENCY_MS.len());
        self.latency[b].fetch_add(1, Ordering::Relaxed);
    }

    /// One quality score (0..1) for an answer of this arm.
    pub fn record_feedback(&self, score: f64) {
        self.feedback_n.fetch_add(1, Ordering::Relaxed);
        add_f64(&self.feedback_sum, score);
        add_f64(&self.feedback_sq, score * score);
    }

    fn snapshot(&self) -> Counts {
        let n = self.requests.load(Ordering::Relaxed);
        let mut seen = 0;
        let mut p95_ms = None;
        for (i, c) in self.latency.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if n > 0 && seen * 100 >= n * 95 {
                p95_ms = Some(LATENCY_MS.get(i).copied().unwrap_or(u64::MAX));
                break;
            }
        }
        Counts {
            requests: n,
            errors: self.errors.load(Ordering::Relaxed),
            input: self.input.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            output: self.output.load(Ordering::Relaxed),
            cost_pico: self.cost_pico.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            answered_cost_pico: self.answered_cost_pico.load(Ordering::Relaxed),
            answered_cost_sq_usd: f64::from_bits(self.answered_cost_sq.load(Ordering::Relaxed)),
            feedback: Moments {
                n: self.feedback_n.load(Ordering::Relaxed) as f64,
                sum: f64::from_bits(self.feedback_sum.load(Ordering::Relaxed)),
                sum_sq: f64::from_bits(self.feedback_sq.load(Ordering::Relaxed)),
            },
            p95_ms,
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
    /// Upper bound of the bucket holding the 95th percentile latency.
    pub p95_ms: Option<u64>,
}

type Key = (Arc<str>, Arc<str>, Traffic);

/// Counters per (route, model, traffic) since the process started.
pub struct Ledger {
    arms: DashMap<Key, Arc<ArmStats>>,
    started: std::time::Instant,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            arms: DashMap::new(),
            started: std::time::Instant::now(),
        }
    }
}

impl Ledger {
    /// The counters of one arm (created at first use; resolved once per config, not per request).
    pub fn arm(&self, route: &Arc<str>, model: &Arc<str>, traffic: Traffic) -> Arc<ArmStats> {
        self.arms
            .entry((route.clone(), model.clone(), traffic))
            .or_default()
            .clone()
    }

    /// Every arm's counters now, and the time they cover.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            arms: self
                .arms
                .iter()
                .map(|e| (e.key().clone(), e.value().snapshot()))
                .collect(),
            elapsed: self.started.elapsed(),
        }
    }
}

/// Counters of every arm at one moment, and how long they have been counting.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub arms: Vec<(Key, Counts)>,
    pub elapsed: Duration,
}

impl Snapshot {
    /// One arm's counters (zero if it has none yet).
    pub fn get(&self, route: &str, model: &str, traffic: Traffic) -> Counts {
        self.arms
            .iter()
            .find(|((r, m, t), _)| &**r == route && &**m == model && *t == traffic)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}
