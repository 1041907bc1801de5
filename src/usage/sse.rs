//! Server-sent events as they pass: cut into events across chunk boundaries, read usage, and
//! optionally drop the usage-only chunk.
//!
//! Only complete events are forwarded (an event ends at a blank line; a line ends at `\r\n`, `\n`
//! or `\r`, the SSE specification's three), so the bytes the client gets are the upstream's
//! bytes, event for event; when nothing is dropped, a chunk made only of complete events is
//! forwarded without a copy. Each byte is searched once whatever the reads' sizes, and an event
//! larger than its cap is dropped and flagged ([`SseScanner::overflowed`]): the caller ends the
//! stream instead of buffering without limit. A `\r` that ends a read ends its line at once: the
//! event it completes is not held back for the byte after it.
//!
//! Each event's `data:` payload is read once with a borrowed view ([`payload`]): spacing,
//! key order, `\u` escapes, `data:` with or without its space, any line end, comments and missing
//! `event:` lines all give the same answer.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::payload::{self, Payload, StreamMemory};
use super::Usage;
use crate::tokens::stream::StreamText;
use crate::tokens::Encoding;

/// Default cap on one SSE event's size (`server.max_sse_event_bytes`).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Scans one SSE response.
#[derive(Debug)]
pub struct SseScanner {
    /// Bytes of an event that has not ended yet.
    pending: BytesMut,
    /// Where the line being read starts, in `pending`.
    line_start: usize,
    /// How much of `pending` was already searched for line ends.
    scanned: usize,
    max_event: usize,
    /// An event grew past `max_event`: its bytes were dropped.
    overflowed: bool,
    /// Drop the `choices: []` usage chunk: the client did not ask for `include_usage`.
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    /// `data: [DONE]` (chat, completions) or a terminal `response.*` event was seen.
    complete: bool,
    /// Complete events seen (forwarded or dropped).
    events: u64,
    /// Generated text seen (content, text deltas, tool arguments), counted in bounded memory: the
    /// basis of the estimate when a stream ends before its usage arrives.
    text: StreamText,
    /// Byte ranges of the current buffer that are not forwarded, in order.
    cuts: Vec<Range<usize>>,
    /// The last read ended with the `\r` that ended a dropped event: a `\n` that starts the next
    /// one is the rest of that line end, and is dropped too.
    cr_dropped: bool,
    /// What the stream's chunks repeat: their leading members, and the last one's shape.
    memory: StreamMemory,
}

/// What happens to one complete event.
enum Action {
    Keep,
    Drop,
    /// These bytes of the event are left out (a member of its payload).
    Cut(Range<usize>),
}

/// Where the complete events of a buffer end, and where its last, unfinished line starts.
struct Scanned {
    end: usize,
    line_start: usize,
}

impl SseScanner {
    /// A scanner with the default event cap.
    pub fn new(strip_usage_chunk: bool) -> SseScanner {
        SseScanner::with_limit(strip_usage_chunk, DEFAULT_MAX_EVENT_BYTES)
    }

    /// A scanner whose events may be at most `max_event` bytes.
    pub fn with_limit(strip_usage_chunk: bool, max_event: usize) -> SseScanner {
        SseScanner {
            pending: BytesMut::new(),
            line_start: 0,
            scanned: 0,
            max_event,
            overflowed: false,
            strip_usage_chunk,
            usage: None,
            complete: false,
            events: 0,
            text: StreamText::new(Encoding::O200kBase),
            cuts: Vec::new(),
            cr_dropped: false,
            memory: StreamMemory::default(),
        }
    }

    /// Counts the generated text with `encoding` (the answering model's) instead of o200k_base.
    pub fn with_encoding(mut self, encoding: Encoding) -> SseScanner {
        self.text = StreamText::new(encoding);
        self
    }

    /// The usage seen so far (the stream's last usage object wins).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether the stream's own end marker was seen.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Number of complete events seen.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes of generated text seen so far.
    pub fn text_bytes(&self) -> u64 {
        self.text.bytes()
    }

    /// The generated text seen so far, counted.
    pub fn text(&self) -> &StreamText {
        &self.text
    }

    /// Whether an event grew past the cap (its bytes were dropped; the stream must end).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds one chunk; returns the bytes to forward now (possibly empty): the events it
    /// completed. After it, check [`SseScanner::overflowed`].
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if chunk.is_empty() {
            // nothing read: what the last read left (a `\r` at its end) still holds
            return Bytes::new();
        }
        if self.pending.is_empty() {
            // the usual case: the chunk starts at an event boundary; complete events pass uncopied
            let s = self.scan(&chunk, 0, 0);
            let out = self.take_output(&chunk, s.end);
            if let Some(rest) = chunk.get(s.end..).filter(|r| !r.is_empty()) {
                self.pending.extend_from_slice(rest);
                self.line_start = s.line_start - s.end;
                self.scanned = rest.len();
            }
            self.check_size();
            return out;
        }
        self.pending.extend_from_slice(&chunk);
        let mut buf = std::mem::take(&mut self.pending);
        let s = self.scan(&buf, self.scanned, self.line_start);
        let len = buf.len();
        let done = buf.split_to(s.end).freeze();
        self.pending = buf;
        self.line_start = s.line_start - s.end;
        self.scanned = len - s.end;
        let out = self.take_output(&done, s.end);
        self.check_size();
        out
    }

    /// An unfinished event past the cap is dropped, never buffered further.
    fn check_size(&mut self) {
        if self.pending.len() > self.max_event {
            self.overflowed = true;
            self.pending = BytesMut::new();
            self.line_start = 0;
            self.scanned = 0;
        }
    }

    /// At the end of the stream: an unterminated last event is forwarded as it is.
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending).freeze();
        self.line_start = 0;
        self.scanned = 0;
        if !rest.is_empty() {
            // inspect it for usage/[DONE] too, but never drop it
            let strip = std::mem::replace(&mut self.strip_usage_chunk, false);
            self.inspect(&rest);
            self.strip_usage_chunk = strip;
        }
        rest
    }

    /// Bytes `[0, end)` without the cuts: one copy, and none when nothing is cut.
    fn take_output(&mut self, buf: &Bytes, end: usize) -> Bytes {
        if self.cuts.is_empty() {
            return buf.slice(..end);
        }
        let mut out = BytesMut::with_capacity(end);
        let mut at = 0;
        for cut in self.cuts.drain(..) {
            out.extend_from_slice(buf.get(at..cut.start).unwrap_or_default());
            at = cut.end;
        }
        out.extend_from_slice(buf.get(at..end).unwrap_or_default());
        out.freeze()
    }

    /// Leaves `r` out of the current buffer. The first cut makes room for 16: a buffer of short
    /// chunks has one `"usage": null` cut in each.
    fn cut(&mut self, r: Range<usize>) {
        if self.cuts.capacity() == 0 {
            self.cuts.reserve(16);
        }
        self.cuts.push(r);
    }

    /// Walks the lines of `buf` from `from` (the line being read starts at `line_start`) and
    /// inspects each event that ends; events start at 0, right after the previous one.
    fn scan(&mut self, buf: &[u8], from: usize, mut line_start: usize) -> Scanned {
        let mut event_start = 0;
        let mut end = 0;
        let mut pos = from;
        let cr_dropped = std::mem::take(&mut self.cr_dropped);
        let mut dropped_to = None;
        while let Some((at, next)) = line_end(buf, pos) {
            pos = next;
            if at == from && buf.get(at) == Some(&b'\n') {
                // the rest of a `\r\n` whose `\r` ended the last read, and the line with it
                if at > 0 && buf.get(at - 1) == Some(&b'\r') {
                    line_start = next;
                    continue;
                }
                // ... and the event it ended, which was dropped: this byte goes with it
                if at == 0 && cr_dropped {
                    self.cut(0..next);
                }
            }
            if at == line_start {
                // a blank line right at the event start is a stray separator, not an event
                if line_start > event_start {
                    let event = buf.get(event_start..next).unwrap_or_default();
                    match self.inspect(event) {
                        Action::Keep => {}
                        Action::Drop => {
                            self.cut(event_start..next);
                            dropped_to = Some(next);
                        }
                        Action::Cut(r) => self.cut(event_start + r.start..event_start + r.end),
                    }
                }
                event_start = next;
                end = next;
            }
            line_start = next;
        }
        self.cr_dropped = dropped_to == Some(buf.len()) && buf.last() == Some(&b'\r');
        Scanned { end, line_start }
    }

    /// Looks at one complete event: reads usage and end markers, and, when the client did not ask
    /// for usage, drops the usage chunk and removes the `"usage": null` member that
    /// `include_usage` adds to every other chunk, so the client gets the stream it would have got
    /// without it (every other byte as the upstream sent it).
    fn inspect(&mut self, event: &[u8]) -> Action {
        self.events += 1;
        let ev = Event::parse(event);
        if ev.name.is_some_and(payload::is_terminal_response_event) {
            self.complete = true;
        }
        let Some(data) = ev.data else {
            return Action::Keep;
        };
        if data.as_ref() == b"[DONE]" {
            self.complete = true;
            return Action::Keep;
        }
        let text = &mut self.text;
        let Some(p) = Payload::parse_next(&data, &mut self.memory, &mut |t| text.push(t)) else {
            return Action::Keep;
        };
        if p.kind
            .as_deref()
            .is_some_and(payload::is_terminal_response_event_str)
        {
            self.complete = true;
        }
        if let Some(u) = p.usage() {
            self.usage = Some(u);
        }
        if !self.strip_usage_chunk {
            return Action::Keep;
        }
        match p.top_usage {
            Some(u) if u == b"null" => {
                // a multi-line payload is not a slice of the event: leave it as it is
                let span = p.null_usage.or_else(|| payload::member_span(&data, u));
                let (Cow::Borrowed(d), Some(range)) = (&data, span) else {
                    return Action::Keep;
                };
                let at = (d.as_ptr() as usize).saturating_sub(event.as_ptr() as usize);
                Action::Cut(at + range.start..(at + range.end).min(event.len()))
            }
            Some(_) if p.choices == Some(0) => Action::Drop,
            Some(_) | None => Action::Keep,
        }
    }
}

/// The fields of one SSE event that matter here.
pub struct Event<'a> {
    /// The `event:` field, if any.
    pub name: Option<&'a [u8]>,
    /// The `data:` lines, joined by `\n` (borrowed when there is one).
    pub data: Option<Cow<'a, [u8]>>,
}

impl<'a> Event<'a> {
    /// Reads one event's lines: `\r\n`, `\n` or `\r` ends a line (the SSE specification's
    /// three), `data:` and `event:` take one optional space after the colon, lines starting with
    /// `:` are comments.
    pub fn parse(event: &'a [u8]) -> Event<'a> {
        if let Some(one) = Event::one_data_line(event) {
            return one;
        }
        let mut name = None;
        let mut data: Option<Cow<'a, [u8]>> = None;
        for line in lines(event) {
            let field = |prefix: &[u8]| {
                line.strip_prefix(prefix)
                    .map(|v| v.strip_prefix(b" ").unwrap_or(v))
            };
            if let Some(v) = field(b"data:") {
                data = Some(match data {
                    None => Cow::Borrowed(v),
                    Some(prev) => {
                        let mut joined = prev.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(v);
                        Cow::Owned(joined)
                    }
                });
            } else if let Some(v) = field(b"event:") {
                name = Some(v);
            }
        }
        Event { name, data }
    }

    /// The usual event, one `data:` line and nothing after it but the blank line, read without
    /// walking its lines again; `None` for any other.
    fn one_data_line(event: &'a [u8]) -> Option<Event<'a>> {
        let rest = event.strip_prefix(b"data:")?;
        let (at, next) = line_end(rest, 0)?;
        let blank = match line_end(rest, next) {
            None => next == rest.len(),
            Some((b, after)) => b == next && after == rest.len(),
        };
        if !blank {
            return None;
        }
        let line = rest.get(..at)?;
        Some(Event {
            name: None,
            data: Some(Cow::Borrowed(line.strip_prefix(b" ").unwrap_or(line))),
        })
    }
}

/// Where the line that starts at `from` ends, and where the next one starts: after `\r\n`, `\n`
/// or `\r`; `None` when no line end follows. A `\r` at the very end of `buf` ends its line: a
/// `\n` that comes after it in a later read is the rest of the same line end.
fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let at = from + memchr::memchr2(b'\n', b'\r', buf.get(from..)?)?;
    let next = if buf.get(at..at + 2) == Some(b"\r\n") {
        at + 2
    } else {
        at + 1
    };
    Some((at, next))
}

/// The lines of one event, the last one unterminated (empty when the event ends with a line end).
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let (end, next) = match line_end(event, from) {
            Some(e) => (e.0, Some(e.1)),
            None => (event.len(), None),
        };
        start = next;
        event.get(from..end)
    })
}

/// The events of a whole SSE body (a blank line ends each; a last unterminated one counts too).
pub fn events(body: &[u8]) -> impl Iterator<Item = Event<'_>> {
    let mut rest = body;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut at = 0;
        let mut cut = rest.len();
        let mut next = rest.len();
        while let Some((end, after)) = line_end(rest, at) {
            if end == at {
                cut = at;
                next = after;
                break;
            }
            at = after;
        }
        let event = rest.get(..cut).unwrap_or_default();
        rest = rest.get(next..).unwrap_or_default();
        if !event.is_empty() {
            return Some(Event::parse(event));
        }
    })
}

#[cfg(test)]
mod tests;
