//! Objects that start alike, read one after another: the chunks of one stream repeat `id`,
//! `object`, `created`, `model` and `system_fingerprint`. The leading members a reader skipped in
//! one object are remembered as bytes, and the next object that starts with the same bytes is read
//! from after them.
//!
//! The answer cannot change: the cursor's state after a run of bytes (position, depth, whether a
//! member came yet) depends on those bytes only, and a skipped member hands the reader nothing.
//! Two rules keep that true. The remembered bytes end right after a value that closes itself (a
//! string, a container or a literal): a number could go on with more digits in the next object.
//! And they are ASCII, which every text mode of the cursor reads alike.

use super::{Cursor, Object};

/// The most bytes remembered: longer leading members are read each time, so that an upstream
/// cannot make every chunk compare and copy a large prefix.
const MAX_REPEATED: usize = 1024;

/// The leading members of the last object read that its reader skipped, as bytes.
#[derive(Debug, Default)]
pub struct RepeatedPrefix {
    bytes: Vec<u8>,
}

/// The leading members of the object being read, while no member the reader wants has come.
pub struct Leading<'r> {
    prefix: &'r mut RepeatedPrefix,
    /// Where the skipped leading members end so far (after a value that closes itself).
    end: Option<usize>,
    /// Where reading resumed (0: from the start).
    resumed: usize,
}

impl RepeatedPrefix {
    /// For `obj`, the outermost value of `c`'s input, just entered: when the input starts with
    /// the remembered bytes, moves `c` past them as if they had been read.
    pub fn resume<'r>(&'r mut self, c: &mut Cursor<'_>, obj: &mut Object) -> Leading<'r> {
        let n = self.bytes.len();
        let resumed = if n > c.pos && c.bytes.starts_with(&self.bytes) {
            c.pos = n;
            obj.first = false;
            n
        } else {
            0
        };
        Leading {
            prefix: self,
            end: (resumed > 0).then_some(resumed),
            resumed,
        }
    }

    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Leading<'_> {
    /// A member the reader skipped was read: the leading members reach past it when its value
    /// closes itself.
    pub fn skipped(&mut self, c: &Cursor<'_>) {
        let last = c.pos.checked_sub(1).and_then(|i| c.bytes.get(i));
        if last.is_some_and(|b| !b.is_ascii_digit()) {
            self.end = Some(c.pos);
        }
    }

    /// The leading members are over (a member the reader wants came, or the object ended): they
    /// are remembered for the next object.
    pub fn end(self, c: &Cursor<'_>) {
        if self.resumed > 0 && self.end == Some(self.resumed) {
            return; // the same bytes as remembered
        }
        let start = self
            .end
            .and_then(|end| c.bytes.get(..end))
            .filter(|b| b.len() <= MAX_REPEATED && b.is_ascii())
            .unwrap_or_default();
        if start != self.prefix.bytes.as_slice() {
            self.prefix.bytes.clear();
            self.prefix.bytes.extend_from_slice(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the members of `data`'s object, skipping all but `want`, with `prefix`: whether it
    /// resumed, and the key of the first wanted member.
    fn read(prefix: &mut RepeatedPrefix, data: &str, want: &[u8]) -> (bool, Option<Vec<u8>>) {
        let c = &mut Cursor::new(data.as_bytes());
        let Ok(mut obj) = c.object() else {
            return (false, None);
        };
        let mut leading = Some(prefix.resume(c, &mut obj));
        let resumed = leading.as_ref().is_some_and(|l| l.resumed > 0);
        while let Ok(Some(key)) = obj.key(c) {
            if key.as_ref() == want {
                if let Some(l) = leading.take() {
                    l.end(c);
                }
                return (resumed, Some(key.into_owned()));
            }
            if c.skip().is_err() {
                break;
            }
            if let Some(l) = leading.as_mut() {
                l.skipped(c);
            }
        }
        (resumed, None)
    }

    #[test]
    fn the_next_object_resumes_after_the_same_leading_members() {
        let p = &mut RepeatedPrefix::default();
        let chunk = r#"{"id": "c", "created": 17, "model": "m", "want": 1}"#;
        assert_eq!(read(p, chunk, b"want"), (false, Some(b"want".to_vec())));
        assert_eq!(p.bytes(), br#"{"id": "c", "created": 17, "model": "m""#);
        assert_eq!(read(p, chunk, b"want"), (true, Some(b"want".to_vec())));
        // another id: read from the start, and its members remembered
        let other = r#"{"id": "d", "created": 17, "model": "m", "want": 1}"#;
        assert_eq!(read(p, other, b"want"), (false, Some(b"want".to_vec())));
        assert_eq!(p.bytes(), br#"{"id": "d", "created": 17, "model": "m""#);
    }

    #[test]
    fn a_number_is_never_the_last_byte_remembered() {
        let p = &mut RepeatedPrefix::default();
        assert!(read(p, r#"{"id": "c", "n": 1, "want": 1}"#, b"want")
            .1
            .is_some());
        assert_eq!(p.bytes(), br#"{"id": "c""#);
        assert_eq!(
            read(p, r#"{"id": "c", "n": 12, "want": 1}"#, b"want"),
            (true, Some(b"want".to_vec()))
        );
        // nothing but a number before the wanted member: nothing remembered
        assert!(!read(p, r#"{"n": 1, "want": 1}"#, b"want").0);
        assert_eq!(p.bytes(), b"");
    }

    #[test]
    fn only_ascii_and_short_prefixes_are_remembered() {
        let p = &mut RepeatedPrefix::default();
        read(p, r#"{"id": "café", "want": 1}"#, b"want");
        assert_eq!(p.bytes(), b"");
        let long = format!(r#"{{"id": "{}", "want": 1}}"#, "x".repeat(MAX_REPEATED));
        read(p, &long, b"want");
        assert_eq!(p.bytes(), b"");
        let short = format!(
            r#"{{"id": "{}", "want": 1}}"#,
            "x".repeat(MAX_REPEATED - 20)
        );
        read(p, &short, b"want");
        assert_eq!(p.bytes().len(), MAX_REPEATED - 20 + 9);
    }
}
