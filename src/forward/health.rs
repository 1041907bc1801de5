//! Passive health: a model that keeps failing is taken out of rotation for a cool-down.
//!
//! Each model (by config name, so it survives reloads) counts consecutive failures: connection
//! errors, timeouts, 429, 5xx, a deleted model, a stream that broke. At `health.failures` in a row
//! it is out for `health.cooldown`; then it is tried again, and one more failure takes it out again
//! at once (half-open), while a success resets the count.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use crate::config::HealthPolicy;

/// The health of one model.
#[derive(Debug)]
pub struct ModelHealth {
    epoch: Instant,
    consecutive: AtomicU32,
    /// Milliseconds since `epoch` until which the model is out; 0 = in rotation.
    down_until_ms: AtomicU64,
    threshold: AtomicU32,
    cooldown_ms: AtomicU64,
}

impl ModelHealth {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_healthy(&self) -> bool {
        self.now_ms() >= self.down_until_ms.load(Ordering::Relaxed)
    }

    pub fn success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns true if this one took the model out of rotation.
    pub fn failure(&self) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = self.threshold.load(Ordering::Relaxed);
        if n < threshold || !self.is_healthy() {
            return false;
        }
        let until = self.now_ms() + self.cooldown_ms.load(Ordering::Relaxed);
        self.down_until_ms.store(until.max(1), Ordering::Relaxed);
        // half-open after the cool-down: the next failure ejects again
        self.consecutive
            .store(threshold.saturating_sub(1), Ordering::Relaxed);
        true
    }

    fn set_policy(&self, p: HealthPolicy) {
        self.threshold.store(p.failures, Ordering::Relaxed);
        self.cooldown_ms
            .store(p.cooldown.as_millis() as u64, Ordering::Relaxed);
    }
}

/// Every model's health, by config name.
#[derive(Debug)]
pub struct HealthRegistry {
    epoch: Instant,
    models: DashMap<String, Arc<ModelHealth>>,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        HealthRegistry {
            epoch: Instant::now(),
            models: DashMap::new(),
        }
    }
}

impl HealthRegistry {
    /// The health of `model`, created healthy on first use; `policy` is (re)applied.
    pub fn get(&self, model: &str, policy: HealthPolicy) -> Arc<ModelHealth> {
        let h = self
            .models
            .entry(model.to_owned())
            .or_insert_with(|| {
                Arc::new(ModelHealth {
                    epoch: self.epoch,
                    consecutive: AtomicU32::new(0),
                    down_until_ms: AtomicU64::new(0),
                    threshold: AtomicU32::new(policy.failures),
                    cooldown_ms: AtomicU64::new(0),
                })
            })
            .clone();
        h.set_policy(policy);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ejects_after_consecutive_failures_and_recovers() {
        let r = HealthRegistry::default();
        let p = HealthPolicy {
            failures: 3,
            cooldown: Duration::from_millis(50),
        };
        let h = r.get("m", p);
        assert!(!h.failure() && !h.failure());
        h.success(); // resets the streak
        assert!(!h.failure() && !h.failure());
        assert!(h.is_healthy());
        assert!(h.failure(), "third in a row ejects");
        assert!(!h.is_healthy());
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.is_healthy(), "back after the cool-down");
        assert!(h.failure(), "half-open: one failure ejects again");
        assert!(
            Arc::ptr_eq(&h, &r.get("m", p)),
            "the same model keeps its state across reloads"
        );
    }
}
