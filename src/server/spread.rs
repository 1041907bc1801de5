//! Which worker serves a new connection. On Linux the kernel picks among the workers'
//! `SO_REUSEPORT` sockets by a hash of the connection's addresses, which can leave a few
//! long-lived connections uneven (one run of wrk's 64 split the workers' CPU time 62 to 38). So
//! each worker counts its open connections, and one that accepts a connection while it serves
//! clearly more than the least busy worker hands it to that one ([`Spread::pick`]). Connections
//! that come and go are served where they were accepted, without waking another thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The workers' counts of open connections.
pub(super) struct Spread {
    open: Box<[Count]>,
}

/// One worker's count, on cache lines of its own (128 bytes: x86 fetches lines in pairs): each
/// worker writes its own at every connection's start and end.
#[derive(Default)]
#[repr(align(128))]
struct Count(AtomicUsize);

/// A connection counted as open on a worker, until dropped.
pub(super) struct Open {
    spread: Arc<Spread>,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(c) = self.spread.open.get(self.worker) {
            c.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Spread {
    /// Counts for `workers` workers, none open.
    pub(super) fn new(workers: usize) -> Spread {
        Spread {
            open: (0..workers).map(|_| Count::default()).collect(),
        }
    }

    /// The connections open on `worker`.
    pub(super) fn open(&self, worker: usize) -> usize {
        self.open
            .get(worker)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }

    /// Where worker `me` serves a connection it accepted: itself, unless it serves at least
    /// `2 + least / 8` more than the least busy worker (`least` open), then that one.
    pub(super) fn pick(&self, me: usize) -> usize {
        let mine = self.open(me);
        let least = (0..self.open.len())
            .map(|w| (w, self.open(w)))
            .min_by_key(|&(_, n)| n);
        match least {
            Some((w, n)) if mine >= n + 2 + n / 8 => w,
            _ => me,
        }
    }

    /// Counts a connection as open on `worker`.
    pub(super) fn count(self: &Arc<Self>, worker: usize) -> Open {
        if let Some(c) = self.open.get(worker) {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
        Open {
            spread: Arc::clone(self),
            worker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(open: &[usize]) -> Arc<Spread> {
        let s = Arc::new(Spread::new(open.len()));
        for (w, &n) in open.iter().enumerate() {
            for _ in 0..n {
                std::mem::forget(s.count(w));
            }
        }
        s
    }

    #[test]
    fn a_worker_keeps_what_it_accepts_unless_it_serves_clearly_more() {
        // even, or one more: kept
        assert_eq!(spread(&[0, 0]).pick(0), 0);
        assert_eq!(spread(&[5, 4]).pick(0), 0);
        // two more: handed to the least busy
        assert_eq!(spread(&[6, 4]).pick(0), 1);
        assert_eq!(spread(&[3, 9, 1]).pick(1), 2);
        // an eighth of the least busy one's count as slack on large counts
        assert_eq!(spread(&[37, 32]).pick(0), 0);
        assert_eq!(spread(&[38, 32]).pick(0), 1);
        // the least busy worker keeps its own
        assert_eq!(spread(&[0, 50]).pick(0), 0);
    }

    #[test]
    fn a_counted_connection_is_uncounted_when_it_ends() {
        let s = spread(&[0, 0]);
        let a = s.count(1);
        let b = s.count(1);
        assert_eq!((s.open(0), s.open(1)), (0, 2));
        drop(a);
        assert_eq!(s.open(1), 1);
        drop(b);
        assert_eq!(s.open(1), 0);
    }
}
