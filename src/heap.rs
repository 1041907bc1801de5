//! Values put on the heap without a copy on the stack first.

use std::future::Future;
use std::pin::Pin;

/// `Box::new(make())`, with the box allocated before the value is made, so that the optimizer can
/// write the value straight into it. `Box::new(value)` makes the value on the stack and then
/// copies all of it into the box, and for the large values of the request path (futures, the
/// metered body) that was most of the bytes copied per request. Writing in place is what LLVM does
/// with this in the release builds (measured: benches/RESULTS.md, round 13), not something the
/// language promises; a debug build still copies.
#[inline(always)]
pub fn boxed<T>(make: impl FnOnce() -> T) -> Box<T> {
    Box::write(Box::new_uninit(), make())
}

/// [`boxed`], pinned: `Box::pin(make())` without the copy. A future is as large as its largest
/// state (kilobytes on the request path), although one that has not started holds only its
/// arguments.
#[inline(always)]
pub fn pinned<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(boxed(make))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values only: whether they were copied on the way is measured, not tested (see
    /// [`boxed`]).
    #[tokio::test]
    async fn what_is_boxed_is_what_was_made() {
        let v = boxed(|| [7u8; 4096]);
        assert!(v.iter().all(|b| *b == 7));
        let held = String::from("moved in");
        assert_eq!(pinned(|| async move { held.len() }).await, 8);
    }
}
