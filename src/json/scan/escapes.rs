//! Strings' insides: finding where a body may end, the form of escapes, and their text.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use super::{Invalid, Result};

/// The bytes of `x` that are `"`, `\` or control characters: their top bits set. The lowest
/// one flagged is exact (a false flag only ever sits above a true one), which is all that is used.
#[inline(always)]
pub(super) fn special_bytes(x: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    let q = x ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let s = x ^ (ONES * u64::from(b'\\'));
    let backslash = s.wrapping_sub(ONES) & !s;
    (control | quote | backslash) & (ONES << 7)
}

/// Plain string bytes read eight at a time before [`find_special_long`] takes over: most keys and
/// values end sooner, and a call of it costs about 230 instructions (callgrind), what eight bytes
/// at a time spend on about 100 bytes.
pub(super) const SHORT_RUN: usize = 128;

/// Where the first `"`, `\` or control character of `rest` is (its length if none): the quote or
/// backslash with `memchr2` (SIMD), then the bytes before it checked for control characters 32 at
/// a time, in a loop the compiler vectorises.
#[inline(never)]
pub(super) fn find_special_long(rest: &[u8]) -> usize {
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let run = rest.get(..end).unwrap_or_default();
    let (blocks, _) = run.as_chunks::<32>();
    let mut at = 0;
    for block in blocks {
        if block.iter().fold(false, |any, &b| any | (b < 0x20)) {
            break;
        }
        at += 32;
    }
    let tail = run.get(at..).unwrap_or_default();
    tail.iter().position(|&b| b < 0x20).map_or(end, |k| at + k)
}

/// The length of the escape after a backslash, checked for its form only.
pub(super) fn escape_len(b: &[u8]) -> Result<usize> {
    match b.first() {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(1),
        Some(b'u') => hex4(b.get(1..5)).map(|_| 5),
        _ => Err(Invalid),
    }
}

fn hex4(digits: Option<&[u8]>) -> Result<u32> {
    digits
        .filter(|d| d.len() == 4)
        .ok_or(Invalid)?
        .iter()
        .try_fold(0u32, |n, &d| {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Invalid),
            };
            Ok(n << 4 | u32::from(v))
        })
}

/// The text of a string body whose escapes have the right form; a `\u` surrogate that is not
/// one of a pair is an error (serde_json's `parse_str`).
pub(super) fn unescape(raw: &str) -> Result<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(rest.get(..i).ok_or(Invalid)?);
        let escape = rest.get(i + 1..).ok_or(Invalid)?;
        let (c, len) = decode_escape(escape.as_bytes())?;
        out.push(c);
        rest = escape.get(len..).ok_or(Invalid)?;
    }
    out.push_str(rest);
    Ok(out)
}

/// One escape after its backslash: the character and how many bytes it took.
fn decode_escape(b: &[u8]) -> Result<(char, usize)> {
    let c = match b.first() {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\x08',
        Some(b'f') => '\x0c',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let n = hex4(b.get(1..5))?;
            if !(0xD800..=0xDBFF).contains(&n) {
                // a trailing surrogate alone has no char
                return char::from_u32(n).map(|c| (c, 5)).ok_or(Invalid);
            }
            // a leading surrogate: its trailing one must follow at once
            if b.get(5..7) != Some(b"\\u") {
                return Err(Invalid);
            }
            let m = hex4(b.get(7..11))?;
            if !(0xDC00..=0xDFFF).contains(&m) {
                return Err(Invalid);
            }
            let c = char::from_u32(0x1_0000 + ((n - 0xD800) << 10 | (m - 0xDC00)));
            return c.map(|c| (c, 11)).ok_or(Invalid);
        }
        _ => return Err(Invalid),
    };
    Ok((c, 1))
}
