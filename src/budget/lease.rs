//! Leases: each replica takes a slice of a Redis counter at a time and admits requests from it
//! locally, so most requests never wait on Redis. A slice is reserved in Redis like a request
//! (the same all-or-nothing script), so the fleet never admits more than the counter allows;
//! what a replica holds unused is given back when its lease has been idle for a second (or its
//! window ended). The price: a replica may hold up to one slice it does not use while another is
//! refused, so a limit can refuse up to (replicas x slice) early. Slices are a small fraction of
//! the cap ([`slice`]), never less than the request that asks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A lease is given back after this long without use.
pub const IDLE: Duration = Duration::from_secs(1);

/// The slice a replica takes of a counter with cap `max` for a request of `add`: 1/100 of a
/// dollar budget, 1/50 of a rate.
pub fn slice(max: i64, add: i64, budget: bool) -> i64 {
    let part = if budget { max / 100 } else { max / 50 };
    part.max(add).max(1)
}

struct Lease {
    /// Reserved in Redis and not used by this replica's requests (negative: a small debt
    /// after concurrent requests raced for one slice).
    available: i64,
    last_used: Instant,
    /// Unix seconds after which the key is gone in Redis.
    expire_at: u64,
}

/// This replica's slices, by Redis key.
#[derive(Default)]
pub struct Leases(Mutex<HashMap<String, Lease>>);

impl Leases {
    /// Takes `adds` (key, amount) from the leases if every one covers its amount; else takes
    /// nothing and returns the indices of the ones that do not.
    pub fn take(&self, adds: &[(&str, i64)]) -> Result<(), Vec<usize>> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let short: Vec<usize> = adds
            .iter()
            .enumerate()
            .filter(|(_, (k, a))| m.get(*k).is_none_or(|l| l.available < *a))
            .map(|(i, _)| i)
            .collect();
        if !short.is_empty() {
            return Err(short);
        }
        let now = Instant::now();
        for (k, a) in adds {
            if let Some(l) = m.get_mut(*k) {
                l.available = l.available.saturating_sub(*a);
                l.last_used = now;
            }
        }
        Ok(())
    }

    /// Adds slices just granted by Redis, then takes `adds` from them.
    pub fn grant_and_take(&self, granted: &[(&str, i64, u64)], adds: &[(&str, i64)]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for (k, n, exp) in granted {
            let l = m.entry((*k).to_owned()).or_insert(Lease {
                available: 0,
                last_used: now,
                expire_at: *exp,
            });
            l.available = l.available.saturating_add(*n);
            l.expire_at = *exp;
        }
        for (k, a) in adds {
            if let Some(l) = m.get_mut(*k) {
                l.available = l.available.saturating_sub(*a);
                l.last_used = now;
            }
        }
    }

    /// A request settled: `unused` of its reservation goes back to the lease (negative: it used
    /// more). False when the lease is gone: the caller settles with Redis.
    pub fn give_back(&self, key: &str, unused: i64) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(key) {
            Some(l) => {
                l.available = l.available.saturating_add(unused);
                true
            }
            None => false,
        }
    }

    /// What to give back to Redis now: leases idle for [`IDLE`] or past their window, as
    /// (key, -available); their slices are zeroed and expired ones dropped.
    pub fn drain_idle(&self, now_unix: u64) -> Vec<(String, i64)> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (k, l) in m.iter_mut() {
            if l.available != 0 && (l.last_used.elapsed() >= IDLE || now_unix >= l.expire_at) {
                out.push((k.clone(), -l.available));
                l.available = 0;
            }
        }
        m.retain(|_, l| now_unix < l.expire_at || l.available != 0);
        out
    }

    /// Puts back what a failed give-back did not return.
    pub fn restore(&self, returned: &[(String, i64)]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (k, neg) in returned {
            if let Some(l) = m.get_mut(k) {
                l.available = l.available.saturating_sub(*neg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_taken_whole_and_given_back_when_idle() {
        let l = Leases::default();
        assert_eq!(l.take(&[("a", 5)]), Err(vec![0]));
        l.grant_and_take(&[("a", 20, u64::MAX)], &[("a", 5)]);
        // both fit, or neither is taken
        assert_eq!(l.take(&[("a", 10), ("b", 1)]), Err(vec![1]));
        assert_eq!(l.take(&[("a", 10)]), Ok(()));
        assert_eq!(l.take(&[("a", 10)]), Err(vec![0]));
        // a request that used 3 of its 10 gives 7 back
        assert!(l.give_back("a", 7));
        assert!(!l.give_back("gone", 1));
        assert_eq!(l.take(&[("a", 12)]), Ok(()));
        // nothing idle yet; past the window everything left goes back
        assert!(l.drain_idle(0).is_empty());
        l.give_back("a", 4);
        assert_eq!(l.drain_idle(u64::MAX), vec![("a".to_owned(), -4)]);
        assert_eq!(slice(10_000, 3, true), 100);
        assert_eq!(slice(10_000, 300, false), 300);
    }
}
