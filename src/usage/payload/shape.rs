//! A stream's payloads, read one after another ([`Payload::parse_next`]). Their leading members
//! (`id`, `model`...) repeat and are read once ([`RepeatedPrefix`]). And after the first few, a
//! chunk differs from the one before only in some strings and numbers: the delta's text, an
//! `obfuscation` pad, a sequence number. So the last payload read whole is remembered with its
//! *places*: where it had a string or a number that changes nothing (a text handed on, a value
//! skipped). A payload with the same bytes everywhere else, and a string or a number at each place,
//! reads as that one did, with its own texts: it is checked token by token at the places and
//! compared byte for byte between them, not read member by member.
//!
//! The answer cannot change: the cursor's state after a run of bytes depends on those bytes only
//! (see `json::scan::repeat`), and after a whole string (or number) it is the same whatever the
//! string (or number) holds. A skipped place is checked for its form, as serde_json's `IgnoredAny`
//! checks it, and a text is read as text, as before. No place sits inside a value whose bytes the
//! reader keeps (`usage`, `response`), and the Responses `type` is not one: those bytes are
//! compared as they are.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::ops::Range;

use super::{member_span, Payload, RawUsage};
use crate::json::scan::{Cursor, RepeatedPrefix};
use crate::json::span_of;

/// The longest payload remembered (a stream keeps one): a longer one is read whole each time, so
/// that an upstream cannot make every payload compare and copy many bytes for nothing.
const MAX_BYTES: usize = 4096;

/// The most places a remembered payload may have, and the most of them texts: a payload with more
/// is not remembered.
const MAX_PLACES: usize = 16;
const MAX_TEXTS: usize = 4;

/// What reading a stream's payloads keeps from one to the next: the leading members they repeat,
/// and the last payload read whole.
#[derive(Debug, Default)]
pub struct StreamMemory {
    repeated: RepeatedPrefix,
    /// Boxed: a stream's scanner stays small (it sits in every metered body's state).
    shape: Box<Shape>,
}

impl<'a> Payload<'a> {
    /// [`Payload::parse_with`] for the next payload of a stream, with what the stream's earlier
    /// payloads left in `memory`: one shaped as the last payload read whole is checked against
    /// it, any other is read whole after the members it repeats ([`Payload::parse_after`]) and
    /// remembered. The answer is the same either way.
    pub fn parse_next(
        data: &'a [u8],
        memory: &mut StreamMemory,
        on_text: &mut dyn FnMut(&str),
    ) -> Option<Payload<'a>> {
        if let Some(p) = memory.shape.read(data, on_text) {
            return Some(p);
        }
        let marks = memory.shape.forget();
        let mut p = Payload::parse_marked(data, Some(&mut memory.repeated), Some(marks), on_text);
        if let Some(p) = &mut p {
            p.null_usage = memory.shape.keep(data, p);
        }
        p
    }
}

/// What a string or number at a place is to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// Generated text: read as text and handed on.
    Text,
    /// A string skipped.
    Str,
    /// A number skipped.
    Num,
}

impl Place {
    /// The place a skipped value that starts with `first` makes: a string or a number (any other
    /// value is part of the bytes compared).
    pub(super) fn skipped(first: u8) -> Option<Place> {
        match first {
            b'"' => Some(Place::Str),
            b'-' | b'0'..=b'9' => Some(Place::Num),
            _ => None,
        }
    }
}

/// The places a reading found, in the order read (which is their order in the input).
#[derive(Debug, Default)]
pub(super) struct Marks {
    places: Vec<(Range<usize>, Place)>,
    texts: usize,
    /// Where the Responses `type` the reading kept starts.
    kind_at: Option<usize>,
    /// More places than [`MAX_PLACES`], or more texts than [`MAX_TEXTS`].
    full: bool,
}

impl Marks {
    /// A place was read: these bytes, holding this.
    pub(super) fn place(&mut self, at: Range<usize>, place: Place) {
        if let Place::Text = place {
            self.texts += 1;
        }
        if self.places.len() < MAX_PLACES && self.texts <= MAX_TEXTS {
            self.places.push((at, place));
        } else {
            self.full = true;
        }
    }

    /// The Responses `type` the reading keeps starts at `at` (`None`: it keeps none).
    pub(super) fn kind_at(&mut self, at: Option<usize>) {
        self.kind_at = at;
    }
}

/// The last payload of a stream read whole, and what its reading found.
#[derive(Debug, Default)]
struct Shape {
    /// Its bytes; empty when nothing is remembered.
    bytes: Vec<u8>,
    marks: Marks,
    /// Where its top-level `usage` value sits.
    top_usage: Option<Range<usize>>,
    /// Where its `"usage": null` member sits ([`Payload::null_usage`]).
    null_usage: Option<Range<usize>>,
    top_parsed: Option<RawUsage>,
    response_usage: Option<RawUsage>,
    choices: Option<usize>,
}

impl Shape {
    /// Forgets the last payload, for a reading that marks its places in what is returned.
    fn forget(&mut self) -> &mut Marks {
        self.bytes.clear();
        let m = &mut self.marks;
        m.places.clear();
        m.texts = 0;
        m.kind_at = None;
        m.full = false;
        m
    }

    /// Remembers `data`, whose reading (marking its places) gave `p`: where its `"usage": null`
    /// member sits, when it is remembered.
    fn keep(&mut self, data: &[u8], p: &Payload<'_>) -> Option<Range<usize>> {
        if self.marks.full || data.len() > MAX_BYTES {
            return None;
        }
        self.bytes.extend_from_slice(data);
        self.top_usage = p.top_usage.map(|u| span_of(data, u));
        // bytes that hold no place (a key, `null`, a comma, spaces): moved as a whole
        self.null_usage = p
            .top_usage
            .filter(|u| *u == b"null")
            .and_then(|u| member_span(data, u));
        self.top_parsed = p.top_parsed.clone();
        self.response_usage = p.response_usage.clone();
        self.choices = p.choices;
        self.null_usage.clone()
    }

    /// Reads `data` as the remembered payload was read, handing its texts to `sink`, when it is
    /// shaped as that one; `None` (and nothing handed on) when it is not.
    fn read<'a>(&self, data: &'a [u8], sink: &mut dyn FnMut(&str)) -> Option<Payload<'a>> {
        if self.bytes.is_empty() {
            return None;
        }
        // made once the first bytes match (it looks at all of them)
        let mut cursor = None;
        let mut texts: [Cow<'a, str>; MAX_TEXTS] = Default::default();
        let mut n_texts = 0;
        // each place's end, in the remembered payload and in this one
        let mut ends = [(0usize, 0usize); MAX_PLACES];
        let (mut old, mut new) = (0, 0);
        for (i, (at, place)) in self.marks.places.iter().enumerate() {
            let same = self.bytes.get(old..at.start)?;
            if data.get(new..new + same.len())? != same {
                return None;
            }
            new += same.len();
            let first = *data.get(new)?;
            let c = cursor.get_or_insert_with(|| Cursor::new(data));
            c.seek(new);
            match place {
                Place::Text if first == b'"' => {
                    *texts.get_mut(n_texts)? = c.string().ok()?;
                    n_texts += 1;
                }
                Place::Str | Place::Num if Place::skipped(first) == Some(*place) => {
                    c.skip().ok()?
                }
                _ => return None,
            }
            (old, new) = (at.end, c.pos());
            *ends.get_mut(i)? = (old, new);
        }
        if data.get(new..)? != self.bytes.get(old..)? {
            return None;
        }
        // it reads as the remembered one: its positions moved by the places before them
        let ends = ends.get(..self.marks.places.len())?;
        let moved = |pos: usize| {
            ends.iter()
                .rev()
                .find(|(old, _)| *old <= pos)
                .map_or(pos, |(old, new)| new + (pos - old))
        };
        let kind = match self.marks.kind_at {
            Some(at) => {
                let c = cursor.get_or_insert_with(|| Cursor::new(data));
                c.seek(moved(at));
                Some(c.string().ok()?)
            }
            None => None,
        };
        let top_usage = match &self.top_usage {
            Some(r) => Some(data.get(moved(r.start)..moved(r.end))?),
            None => None,
        };
        let mut text_bytes = 0;
        for text in texts.get(..n_texts)? {
            text_bytes += text.len() as u64;
            sink(text);
        }
        Some(Payload {
            top_usage,
            top_parsed: self.top_parsed.clone(),
            response_usage: self.response_usage.clone(),
            choices: self.choices,
            text_bytes,
            kind,
            null_usage: (self.null_usage.as_ref()).map(|r| moved(r.start)..moved(r.end)),
        })
    }
}

#[cfg(test)]
mod tests;
