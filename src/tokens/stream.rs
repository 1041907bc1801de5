//! [`StreamText`]: the generated text of a stream, counted in tokens in bounded memory, for the
//! estimate of a stream that ends before its usage arrives.
//!
//! Text is kept until [`FLUSH_BYTES`] have gathered (most answers never get there: nothing is
//! tokenized on the request path unless the stream breaks), then the part before the last safe
//! cut is tokenized and dropped. A cut is safe where tiktoken's pre-tokenizer splits anyway
//! whatever follows: between an ASCII letter and a space followed by an ASCII letter (`word| word`),
//! in both o200k_base's and cl100k_base's patterns a word piece ends at the letter and the next
//! starts with the space; so the pieces, hence the tokens, are those of the whole text. Text with
//! no such cut in [`MAX_PENDING_BYTES`] (long CJK runs, minified code) is cut at a character
//! boundary: at most a token or two off per cut.
//!
//! Before the encoder is loaded (the first moments after start), text that must be counted is
//! counted as bytes / 4, like the estimate before tailor had a tokenizer.

use super::Encoding;

/// Text kept before the first tokenization: longer than most answers (about 2,000 tokens), which
/// so cost a copy of their text (~8 ns an event) and no tokenizing unless the stream breaks;
/// tokenizing costs ~25 ns a byte, more than the rest of proxying a stream (benches/tokens.rs).
pub const FLUSH_BYTES: usize = 8 * 1024;
/// Room taken at the first text: a short answer's whole text.
const FIRST_ROOM: usize = 256;
/// The most text kept: past it, text is cut where it must.
pub const MAX_PENDING_BYTES: usize = 4 * FLUSH_BYTES;

/// A stream's generated text, counted.
#[derive(Debug)]
pub struct StreamText {
    encoding: Encoding,
    /// Text not counted yet.
    pending: String,
    /// Tokens of the text already counted and dropped.
    counted: u64,
    /// All text bytes seen.
    bytes: u64,
    /// Pending length at which to try the next cut (later after a failed try: no rescans).
    next_flush: usize,
}

impl StreamText {
    pub fn new(encoding: Encoding) -> StreamText {
        StreamText {
            encoding,
            pending: String::new(),
            counted: 0,
            bytes: 0,
            next_flush: FLUSH_BYTES,
        }
    }

    /// Adds generated text (a delta's content, a tool call's arguments).
    pub fn push(&mut self, text: &str) {
        self.bytes += text.len() as u64;
        if self.pending.capacity() == 0 {
            // room for a short answer at once (one allocation, not one per doubling from 8)
            self.pending.reserve(FIRST_ROOM.max(text.len()));
        }
        self.pending.push_str(text);
        if self.pending.len() >= self.next_flush {
            self.flush();
        }
    }

    /// Bytes of generated text seen.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Tokens of all the text seen.
    pub fn tokens(&self) -> u64 {
        self.counted + self.encoding.count_if_loaded(&self.pending)
    }

    /// Counts and drops the text before the last safe cut (or a forced cut when the text is long).
    fn flush(&mut self) {
        let cut = match safe_cut(self.pending.as_bytes()) {
            Some(c) => c,
            None if self.pending.len() < MAX_PENDING_BYTES => {
                self.next_flush = (self.pending.len() + FLUSH_BYTES / 4).min(MAX_PENDING_BYTES);
                return;
            }
            None => {
                // a char boundary near the end: `is_char_boundary(len)` is true, so one is found
                let mut c = self.pending.len() - 1;
                while c > 0 && !self.pending.is_char_boundary(c) {
                    c -= 1;
                }
                c
            }
        };
        let head = self.pending.get(..cut).unwrap_or_default();
        self.counted += self.encoding.count_if_loaded(head);
        self.pending.drain(..cut);
        self.next_flush = FLUSH_BYTES;
    }
}

/// The last position `i` with an ASCII letter before it and a space then an ASCII letter from it.
fn safe_cut(b: &[u8]) -> Option<usize> {
    b.windows(3)
        .rposition(|w| w[0].is_ascii_alphabetic() && w[1] == b' ' && w[2].is_ascii_alphabetic())
        .map(|i| i + 1)
        .filter(|&i| i > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> String {
        let words = [
            "Sure",
            "here",
            "is",
            "the",
            "refund",
            "policy:",
            "items",
            "bought",
            "in",
            "the",
            "last",
            "30",
            "days",
            "can",
            "be",
            "returned,",
            "unopened",
            "—",
            "see",
            "§4.2",
            "of",
            "the",
            "terms",
            "(",
            "naïve",
            "café",
            "😀",
            ")",
            "and\nnew",
            "lines,",
            "tabs\tor",
            "  double",
            "spaces",
            "don't",
            "matter",
            "MUCH",
            "CamelCase",
            "x=1;y=22;z=333",
        ];
        let mut s = String::new();
        let mut i = 0;
        while s.len() < n {
            s.push_str(words[i % words.len()]);
            s.push(' ');
            i += 1;
        }
        s
    }

    #[test]
    fn counted_in_pieces_equals_counted_whole() {
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            enc.load();
            for (len, step) in [
                (100, 7),
                (5_000, 13),
                (40_000, 1),
                (40_000, 200),
                (9_000, 4096),
            ] {
                let whole = text(len);
                let mut st = StreamText::new(enc);
                let mut rest = whole.as_str();
                while !rest.is_empty() {
                    let mut at = step.min(rest.len());
                    while !rest.is_char_boundary(at) {
                        at += 1;
                    }
                    st.push(&rest[..at]);
                    rest = &rest[at..];
                }
                assert_eq!(st.tokens(), enc.count(&whole), "{enc:?} {len} {step}");
                assert_eq!(st.bytes(), whole.len() as u64);
                assert!(st.pending.len() < MAX_PENDING_BYTES);
            }
        }
    }

    #[test]
    fn text_without_a_safe_cut_stays_bounded_and_close() {
        let enc = Encoding::O200kBase;
        // loaded before the text comes (alone, this test ran on the bytes / 4 fallback)
        enc.load();
        let whole = "お誕生日おめでとう".repeat(2000);
        let mut st = StreamText::new(enc);
        for c in whole.chars() {
            st.push(c.encode_utf8(&mut [0; 4]));
            assert!(st.pending.len() <= MAX_PENDING_BYTES);
        }
        let (got, exact) = (st.tokens(), enc.count(&whole));
        assert!(got.abs_diff(exact) <= 2 * (whole.len() / MAX_PENDING_BYTES + 1) as u64);
    }

    #[test]
    fn cuts_fall_between_words_only() {
        assert_eq!(safe_cut(b"ab cd ef"), Some(5));
        assert_eq!(safe_cut(b"ab  cd"), None);
        assert_eq!(safe_cut(b"1 2"), None);
        assert_eq!(safe_cut(b""), None);
    }
}
