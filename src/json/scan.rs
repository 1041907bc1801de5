//! A cursor over untrusted JSON bytes that accepts exactly what serde_json (the version in
//! Cargo.lock) accepts when it reads the same bytes through a borrowed view, for a fraction of the
//! instructions: the usage readers walk each response with it and look only at the members they
//! need, skipping the rest.
//!
//! serde_json reads a value in one of two ways, and so does the cursor:
//! - *visited* ([`Cursor::object`], [`Cursor::array`], [`Cursor::string`], [`Cursor::scalar`]): a
//!   string must be text (valid UTF-8, `\u` surrogates in pairs), a number must fit an `f64`, and
//!   each container counts towards serde_json's nesting limit (127 levels read, the 128th is an
//!   error);
//! - *skipped* ([`Cursor::skip`], [`Cursor::raw`]), as serde_json reads `IgnoredAny` and
//!   `RawValue`: the grammar only, with no nesting limit (one bit per open container, on the heap
//!   past 64 levels) and strings checked for their form, not as text.
//!
//! The whole input is checked once, up front, for being ASCII (else UTF-8); when it is UTF-8, a
//! string is cut out of it without a check of its own (an ASCII input still runs std's quick
//! `from_utf8` on each string read as text). Nothing here recurses, and every byte is read with
//! `.get()`. The small steps are `#[inline(always)]`: per token they are most of the cost
//! (callgrind).

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::ops::Range;

use super::MAX_JSON_DEPTH;
use escapes::{escape_len, find_special_long, special_bytes, unescape, SHORT_RUN};
use frames::Frames;
pub use repeat::{Leading, RepeatedPrefix};

mod escapes;
mod frames;
mod repeat;

/// The input is not JSON as serde_json would read it here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

pub type Result<T> = std::result::Result<T, Invalid>;

/// A position in one JSON input.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    text: Text<'a>,
    pos: usize,
    /// serde_json's `remaining_depth`: visiting a container takes one, and none may be left at 0.
    depth_left: usize,
}

/// What is known of the whole input as text.
#[derive(Clone, Copy)]
enum Text<'a> {
    /// All ASCII: any piece is text (the cheapest check, and the usual case).
    Ascii,
    /// Valid UTF-8: any piece cut next to ASCII bytes is text.
    Utf8(&'a str),
    /// Not UTF-8: each piece read as text is checked on its own, as serde_json checks it.
    Unchecked,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        let text = if bytes.is_ascii() {
            Text::Ascii
        } else {
            std::str::from_utf8(bytes).map_or(Text::Unchecked, Text::Utf8)
        };
        Cursor::with_text(bytes, text)
    }

    /// A cursor at the start of `text`, which is known to be UTF-8: no pass over it to find out,
    /// and a string read as text is cut out of it without a check of its own.
    pub fn from_text(text: &'a str) -> Cursor<'a> {
        Cursor::with_text(text.as_bytes(), Text::Utf8(text))
    }

    fn with_text(bytes: &'a [u8], text: Text<'a>) -> Cursor<'a> {
        Cursor {
            bytes,
            text,
            pos: 0,
            depth_left: MAX_JSON_DEPTH,
        }
    }

    /// Skips whitespace (space, `\n`, `\r`, `\t`); the next byte, if any.
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        match self.bytes.get(self.pos) {
            Some(&b) if b > b' ' => Some(b),
            _ => self.peek_past_whitespace(),
        }
    }

    fn peek_past_whitespace(&mut self) -> Option<u8> {
        const SPACES: u64 = u64::from_le_bytes(*b"        ");
        loop {
            match *self.bytes.get(self.pos)? {
                b' ' | b'\n' | b'\t' | b'\r' => {
                    self.pos += 1;
                    // the spaces that follow (indentation), eight at a time
                    while let Some(w) = self.word(self.pos) {
                        let n = (w ^ SPACES).trailing_zeros() as usize / 8;
                        self.pos += n;
                        if n < 8 {
                            break;
                        }
                    }
                }
                b => return Some(b),
            }
        }
    }

    /// The eight bytes at `i` (little-endian), if there are eight.
    #[inline(always)]
    fn word(&self, i: usize) -> Option<u64> {
        let w: [u8; 8] = self.bytes.get(i..i + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(w))
    }

    /// Only whitespace may follow the value read (serde_json's `Deserializer::end`).
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Invalid),
        }
    }

    /// Visits the object that comes next: read its members with [`Object::key`].
    pub fn object(&mut self) -> Result<Object> {
        if self.peek() != Some(b'{') {
            return Err(Invalid);
        }
        self.enter()?;
        Ok(Object { first: true })
    }

    /// Visits the array that comes next: step through it with [`Array::next`].
    pub fn array(&mut self) -> Result<Array> {
        if self.peek() != Some(b'[') {
            return Err(Invalid);
        }
        self.enter()?;
        Ok(Array { first: true })
    }

    fn enter(&mut self) -> Result<()> {
        self.depth_left = self.depth_left.saturating_sub(1);
        if self.depth_left == 0 {
            return Err(Invalid);
        }
        self.pos += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.pos += 1;
        self.depth_left += 1;
    }

    /// Visits the string that comes next: its text, borrowed unless it has escapes.
    #[inline(always)]
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return Err(Invalid);
        }
        let (body, escaped) = self.str_body()?;
        let text = self.text_at(body)?;
        if escaped {
            unescape(text).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(text))
        }
    }

    /// Visits the string that comes next as bytes: the same checks as [`Cursor::string`],
    /// without making text of it (keys are compared as bytes).
    #[inline(always)]
    pub fn string_bytes(&mut self) -> Result<Cow<'a, [u8]>> {
        if self.peek() != Some(b'"') {
            return Err(Invalid);
        }
        let (body, escaped) = self.str_body()?;
        if escaped {
            let text = self.text_at(body)?;
            return unescape(text).map(|s| Cow::Owned(s.into_bytes()));
        }
        if let Text::Unchecked = self.text {
            self.text_at(body.clone())?;
        }
        self.bytes.get(body).map(Cow::Borrowed).ok_or(Invalid)
    }

    /// Visits a number that must be a `u64` (serde_json's `deserialize_u64`): a plain integer
    /// in range; a sign, a fraction or an exponent is an error.
    pub fn u64(&mut self) -> Result<u64> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(Invalid);
        }
        let start = self.pos;
        self.skip_number()?;
        self.bytes
            .get(start..self.pos)
            .unwrap_or_default()
            .iter()
            .try_fold(0u64, |n, &d| {
                if !d.is_ascii_digit() {
                    return None;
                }
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or(Invalid)
    }

    /// Visits a `null`.
    pub fn null(&mut self) -> Result<()> {
        self.peek();
        self.literal(b"null")
    }

    /// Visits the value that comes next when it is neither a string nor a container: `null`,
    /// `true`, `false` or a number that fits an `f64`.
    pub fn scalar(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.skip_number()?;
                let number = self.bytes.get(start..self.pos).unwrap_or_default();
                if fits_f64(number) {
                    Ok(())
                } else {
                    Err(Invalid)
                }
            }
            _ => Err(Invalid),
        }
    }

    /// Skips the value that comes next (serde_json's `IgnoredAny`).
    #[inline(always)]
    pub fn skip(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'"') => self.str_body().map(drop),
            Some(b'{' | b'[') => self.skip_container(),
            _ => self.skip_scalar(),
        }
    }

    /// Skips a literal or a number (after whitespace).
    fn skip_scalar(&mut self) -> Result<()> {
        match self.byte() {
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'-' | b'0'..=b'9') => self.skip_number(),
            _ => Err(Invalid),
        }
    }

    /// Skips the array or object at the cursor: no recursion, one bit per open container.
    fn skip_container(&mut self) -> Result<()> {
        let mut open = Frames::default();
        'value: loop {
            match self.peek() {
                Some(b'"') => {
                    self.str_body()?;
                }
                Some(b @ (b'{' | b'[')) => {
                    self.pos += 1;
                    let object = b == b'{';
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.pos += 1;
                    } else {
                        open.push(object);
                        if object {
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                }
                _ => self.skip_scalar()?,
            }
            // a value ended: a comma before the next one, or the ends of the containers it closes
            while let Some(object) = open.top() {
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => self.pos += 1,
                    Some(b']') if !object => self.pos += 1,
                    _ => return Err(Invalid),
                }
                open.pop();
            }
            return Ok(());
        }
    }

    /// Skips the value that comes next and returns its bytes, which must be text as a whole
    /// (serde_json's `&RawValue`).
    pub fn raw(&mut self) -> Result<&'a [u8]> {
        let start = self.mark();
        self.skip()?;
        self.since(start)
    }

    /// [`Cursor::raw`] as text (cut out of a UTF-8 input without a check of its own).
    pub fn raw_text(&mut self) -> Result<&'a str> {
        let start = self.mark();
        self.skip()?;
        self.text_at(start.pos..self.pos)
    }

    /// Where the next value starts (after whitespace), to come back to or to take its bytes.
    pub fn mark(&mut self) -> Mark {
        self.peek();
        Mark {
            pos: self.pos,
            depth_left: self.depth_left,
        }
    }

    /// Where the cursor is (before any whitespace: [`Cursor::peek`] first for where a value
    /// starts).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Moves to `pos`, to read one value there that an input with the same bytes before it had
    /// there (the nesting depth stays as it is).
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// Goes back to `mark`, as if nothing after it had been read.
    pub fn rewind(&mut self, mark: Mark) {
        self.pos = mark.pos;
        self.depth_left = mark.depth_left;
    }

    /// The bytes read since `mark`, which must be text as a whole (as [`Cursor::raw`]'s).
    pub fn since(&self, mark: Mark) -> Result<&'a [u8]> {
        if let Text::Unchecked = self.text {
            self.text_at(mark.pos..self.pos)?;
        }
        self.bytes.get(mark.pos..self.pos).ok_or(Invalid)
    }

    /// A skipped object's key and the colon after it.
    fn member_key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return Err(Invalid);
        }
        self.str_body()?;
        if self.peek() != Some(b':') {
            return Err(Invalid);
        }
        self.pos += 1;
        Ok(())
    }

    /// Reads the string whose `"` is at the cursor: the range of its body, and whether it has
    /// escapes. Escapes are checked for their form only (serde_json's `ignore_str`); a control
    /// character, or the end of the input, inside a string is an error.
    #[inline(always)]
    fn str_body(&mut self) -> Result<(Range<usize>, bool)> {
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i = self.find_special(i);
            match self.bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok((start..i, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    i += 1 + escape_len(self.bytes.get(i + 1..).unwrap_or_default())?;
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// Where the next `"`, `\` or control character is from `i` (the input's length if none):
    /// eight bytes at a time as serde_json looks for them, then, past [`SHORT_RUN`] plain bytes
    /// (a long text, a prompt), with SIMD.
    #[inline(always)]
    fn find_special(&self, mut i: usize) -> usize {
        let short_end = i + SHORT_RUN;
        while let Some(w) = self.word(i) {
            let hits = special_bytes(w);
            if hits != 0 {
                return i + hits.trailing_zeros() as usize / 8;
            }
            i += 8;
            if i >= short_end {
                return i + find_special_long(self.bytes.get(i..).unwrap_or_default());
            }
        }
        while let Some(&b) = self.bytes.get(i) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            i += 1;
        }
        i
    }

    /// The bytes at `r` as text. The ranges asked for start and end next to ASCII bytes, so in
    /// valid UTF-8 they fall on character boundaries.
    fn text_at(&self, r: Range<usize>) -> Result<&'a str> {
        match self.text {
            Text::Utf8(t) => t.get(r).ok_or(Invalid),
            Text::Ascii | Text::Unchecked => {
                std::str::from_utf8(self.bytes.get(r).ok_or(Invalid)?).map_err(|_| Invalid)
            }
        }
    }

    /// `word` (`null`, `true`, `false`) at the cursor.
    fn literal<const N: usize>(&mut self, word: &[u8; N]) -> Result<()> {
        if self.bytes.get(self.pos..self.pos + N) != Some(&word[..]) {
            return Err(Invalid);
        }
        self.pos += N;
        Ok(())
    }

    fn byte(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn skip_number(&mut self) -> Result<()> {
        if self.byte() == Some(b'-') {
            self.pos += 1;
        }
        match self.byte() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.byte(), Some(b'0'..=b'9')) {
                    return Err(Invalid);
                }
            }
            Some(b'1'..=b'9') => {
                self.pos += 1;
                self.digits();
            }
            _ => return Err(Invalid),
        }
        if self.byte() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        if matches!(self.byte(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.byte(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }
}

/// A place in the input to come back to (see [`Cursor::mark`]).
#[derive(Clone, Copy)]
pub struct Mark {
    pos: usize,
    depth_left: usize,
}

/// An object being visited.
pub struct Object {
    first: bool,
}

impl Object {
    /// The next member's key (visited as a string, given as bytes) with the colon after it
    /// read, or `None` once the closing `}` is read.
    #[inline(always)]
    pub fn key<'a>(&mut self, c: &mut Cursor<'a>) -> Result<Option<Cow<'a, [u8]>>> {
        self.member(c, Cursor::string_bytes)
    }

    /// [`Object::key`] as text.
    #[inline(always)]
    pub fn key_text<'a>(&mut self, c: &mut Cursor<'a>) -> Result<Option<Cow<'a, str>>> {
        self.member(c, Cursor::string)
    }

    /// The separator before the next member, its key read by `read`, and the colon after it.
    #[inline(always)]
    fn member<'a, K>(
        &mut self,
        c: &mut Cursor<'a>,
        read: impl FnOnce(&mut Cursor<'a>) -> Result<K>,
    ) -> Result<Option<K>> {
        match c.peek() {
            Some(b'}') => {
                c.leave();
                return Ok(None);
            }
            Some(b'"') if self.first => self.first = false,
            Some(b',') if !self.first => {
                c.pos += 1;
                if c.peek() != Some(b'"') {
                    return Err(Invalid);
                }
            }
            _ => return Err(Invalid),
        }
        let key = read(c)?;
        if c.peek() != Some(b':') {
            return Err(Invalid);
        }
        c.pos += 1;
        Ok(Some(key))
    }

    /// Reads the rest of the object, skipping its values.
    pub fn skip_rest(mut self, c: &mut Cursor<'_>) -> Result<()> {
        while self.key(c)?.is_some() {
            c.skip()?;
        }
        Ok(())
    }
}

/// An array being visited.
pub struct Array {
    first: bool,
}

impl Array {
    /// Whether an element follows (the cursor is then before it), or `false` once the closing
    /// `]` is read.
    #[inline(always)]
    pub fn next(&mut self, c: &mut Cursor<'_>) -> Result<bool> {
        match c.peek() {
            Some(b']') => {
                c.leave();
                Ok(false)
            }
            Some(_) if self.first => {
                self.first = false;
                Ok(true)
            }
            Some(b',') => {
                c.pos += 1;
                match c.peek() {
                    Some(b']') | None => Err(Invalid),
                    Some(_) => Ok(true),
                }
            }
            _ => Err(Invalid),
        }
    }
}

/// Whether serde_json reads `number` (of the form [`Cursor::skip_number`] accepts) without an
/// out-of-range error. A plain integer of at most 20 characters always fits; anything else is
/// left to serde_json itself, whose float arithmetic decides (these are rare where it matters).
fn fits_f64(number: &[u8]) -> bool {
    let plain = number.len() <= 20 && !number.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    plain || serde_json::from_slice::<f64>(number).is_ok()
}

#[cfg(test)]
mod tests;
