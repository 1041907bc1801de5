//! The open containers of a value the cursor skips, without recursion: one bit per level, on the
//! heap past 64 levels.

/// The containers a skipped value has open: one bit each (set for an object).
#[derive(Default)]
pub(super) struct Frames {
    depth: usize,
    low: u64,
    high: Vec<u64>,
}

impl Frames {
    /// A container opens inside the innermost one (`object`: it is an object).
    pub(super) fn push(&mut self, object: bool) {
        let d = self.depth;
        self.depth += 1;
        let bit = 1u64 << (d % 64);
        let set = |w: &mut u64| {
            if object {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        };
        match d.checked_sub(64).map(|h| h / 64) {
            None => set(&mut self.low),
            Some(i) => match self.high.get_mut(i) {
                Some(w) => set(w),
                // the stack grows one level at a time and keeps its words: this is the next one
                None => self.high.push(if object { bit } else { 0 }),
            },
        }
    }

    /// Whether the innermost open container is an object; `None` when none is open.
    pub(super) fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        let word = match d.checked_sub(64) {
            None => self.low,
            Some(h) => *self.high.get(h / 64)?,
        };
        Some((word >> (d % 64)) & 1 == 1)
    }

    /// The innermost container closes.
    pub(super) fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}
