//! Concurrency limits (`server.max_concurrency`, `routes[].max_concurrency`) as counts of the
//! requests in flight. A count lives as long as the process (per route name), while its limit
//! comes from the live config: after a reload the new limit applies to the requests already
//! running, so a reload never lets more through than either config allows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests in flight under one limit.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

/// One request's place under a limit; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<InFlight>);

impl InFlight {
    /// A place if fewer than `limit` requests hold one.
    pub fn try_take(self: &Arc<Self>, limit: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Requests holding a place now.
    pub fn current(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_limit_counts_the_requests_already_in_flight() {
        let f = Arc::new(InFlight::default());
        let held: Vec<Slot> = (0..3).filter_map(|_| f.try_take(4)).collect();
        assert_eq!((held.len(), f.current()), (3, 3));
        // the limit drops to 2 (a reload): nobody new gets in until two have left
        assert!(f.try_take(2).is_none());
        assert_eq!(f.current(), 3);
        drop(held);
        assert_eq!(f.current(), 0);
        let a = f.try_take(2);
        let b = f.try_take(2);
        assert!(a.is_some() && b.is_some() && f.try_take(2).is_none());
    }
}
