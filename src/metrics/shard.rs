//! Counters that every API worker adds to on every request, kept as one copy per thread slot and
//! summed when read: a worker then writes only cache lines of its own. One shared atomic written
//! by two cores costs a cache miss per write, and a request made about thirty such writes
//! (benches/RESULTS.md, round 7).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Copies of each sharded counter. Threads take slots in the order they first count; with more
/// threads than slots, some share one (correct, only slower).
pub const SHARDS: usize = 16;

/// Threads numbered in the order they first ask.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// This thread's number: unique in the process, taken at its first call.
pub fn thread_number() -> usize {
    THREAD.with(|t| match t.get() {
        Some(n) => n,
        None => {
            let n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            t.set(Some(n));
            n
        }
    })
}

/// The slot this thread writes.
pub fn slot() -> usize {
    thread_number() % SHARDS
}

/// One copy per slot, each on cache lines of its own (128 bytes: adjacent lines are fetched in
/// pairs on x86).
pub struct Sharded<T> {
    slots: Box<[Padded<T>; SHARDS]>,
}

#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded {
            slots: Box::new(std::array::from_fn(|_| Padded::default())),
        }
    }
}

impl<T> Sharded<T> {
    /// The copy this thread writes.
    pub fn mine(&self) -> &T {
        &self.slots[slot()].0
    }

    /// Every copy, to sum.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|p| &p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn every_thread_counts_into_the_sum() {
        let c: Arc<Sharded<AtomicU64>> = Arc::default();
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.mine().fetch_add(1, Ordering::Relaxed);
                    }
                    thread_number()
                })
            })
            .collect();
        let mut numbers: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let sum: u64 = c.all().map(|v| v.load(Ordering::Relaxed)).sum();
        assert_eq!(sum, 1000 * (SHARDS as u64 + 3));
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), SHARDS + 3, "each thread its own number");
    }

    #[test]
    fn a_thread_keeps_its_number() {
        let n = thread_number();
        assert_eq!(thread_number(), n);
        let other = std::thread::spawn(thread_number).join().unwrap();
        assert_ne!(other, n);
    }
}
