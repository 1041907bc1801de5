//! Server-sent events as they pass: cut into events across chunk boundaries, read usage, and
//! optionally drop the usage-only chunk.
//!
//! Only complete events are forwarded (an event ends at a blank line, `\n\n` or `\r\n\r\n`), so the
//! bytes the client gets are the upstream's bytes, event for event; when nothing is dropped, a
//! chunk made only of complete events is forwarded without a copy. Each byte is searched once
//! whatever the reads' sizes, and an event larger than its cap is dropped and flagged
//! ([`SseScanner::overflowed`]): the caller ends the stream instead of buffering without limit.
//!
//! Each event's `data:` payload is read once with a borrowed view ([`payload`]): spacing,
//! key order, `\u` escapes, `data:` with or without its space, `\r\n`, comments and missing
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
        let tail = buf.get(from..).unwrap_or_default();
        for nl in memchr::memchr_iter(b'\n', tail).map(|i| i + from) {
            let line = buf.get(line_start..nl).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                // a blank line right at the event start is a stray separator, not an event
                if line_start > event_start {
                    let event = buf.get(event_start..=nl).unwrap_or_default();
                    match self.inspect(event) {
                        Action::Keep => {}
                        Action::Drop => self.cut(event_start..nl + 1),
                        Action::Cut(r) => self.cut(event_start + r.start..event_start + r.end),
                    }
                }
                event_start = nl + 1;
                end = nl + 1;
            }
            line_start = nl + 1;
        }
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
    /// Reads one event's lines: `\n` or `\r\n` ends a line, `data:` and `event:` take one
    /// optional space after the colon, lines starting with `:` are comments.
    pub fn parse(event: &'a [u8]) -> Event<'a> {
        if let Some(one) = Event::one_data_line(event) {
            return one;
        }
        let mut name = None;
        let mut data: Option<Cow<'a, [u8]>> = None;
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', event).chain(std::iter::once(event.len()));
        for end in ends {
            let line = event.get(start..end).unwrap_or_default();
            start = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
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
        let nl = memchr::memchr(b'\n', rest)?;
        if !matches!(rest.get(nl + 1..)?, b"" | b"\n" | b"\r\n") {
            return None;
        }
        let line = rest.get(..nl)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some(Event {
            name: None,
            data: Some(Cow::Borrowed(line.strip_prefix(b" ").unwrap_or(line))),
        })
    }
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
        for nl in memchr::memchr_iter(b'\n', rest) {
            let line = rest.get(at..nl).unwrap_or_default();
            if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
                cut = at;
                next = nl + 1;
                break;
            }
            at = nl + 1;
        }
        let event = rest.get(..cut).unwrap_or_default();
        rest = rest.get(next..).unwrap_or_default();
        if !event.is_empty() {
            return Some(Event::parse(event));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    const USAGE: Usage = Usage {
        input: 9,
        cached: 0,
        output: 2,
        reasoning: 0,
    };

    fn run(input: &[u8], split_every: usize, strip: bool) -> (Vec<u8>, SseScanner) {
        let mut s = SseScanner::new(strip);
        let mut out = Vec::new();
        for piece in input.chunks(split_every) {
            out.extend_from_slice(&s.feed(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&s.finish());
        (out, s)
    }

    #[test]
    fn passes_bytes_unchanged_at_every_split() {
        for n in 1..CHAT.len() {
            let (out, s) = run(CHAT.as_bytes(), n, false);
            assert_eq!(out, CHAT.as_bytes(), "split {n}");
            assert_eq!(s.usage(), Some(USAGE));
            assert!(s.complete());
            assert_eq!(s.events(), 5);
        }
    }

    #[test]
    fn strip_mode_gives_the_stream_without_include_usage() {
        let expected = stripped_chat();
        assert!(!expected.contains("usage"));
        for n in [1, 7, 64, CHAT.len()] {
            let (out, s) = run(CHAT.as_bytes(), n, true);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "split {n}");
            assert_eq!(s.usage().unwrap().input, 9);
        }
    }

    fn stripped_chat() -> String {
        CHAT.replace(
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
            "",
        )
        .replace(",\"usage\":null", "")
    }

    /// The same stream as other servers write it: every reading must agree, and stripping must
    /// leave every byte but the usage members and the usage chunk.
    #[test]
    fn every_format_reads_the_same() {
        let spaced = |s: &str| {
            s.replace("\":", "\": ")
                .replace(",\"", ", \"")
                .replace("\"Hi\"", "\"H\\u0069\"")
        };
        let crlf = |s: &str| s.replace('\n', "\r\n");
        let nospace = |s: &str| s.replace("data: ", "data:");
        let comments = |s: &str| s.replace("data: ", ": keep-alive\n\ndata: ");
        let usage_first = CHAT
            .replace(
                "{\"id\":\"c\",\"choices\":[{",
                "{\"usage\":null,\"id\":\"c\",\"choices\":[{",
            )
            .replace("}],\"usage\":null}", "}]}");
        let e = stripped_chat();
        for (name, input, expected) in [
            ("spaced", spaced(CHAT), spaced(&e)),
            ("crlf", crlf(CHAT), crlf(&e)),
            ("nospace", nospace(CHAT), nospace(&e)),
            (
                "comments",
                comments(CHAT),
                // the usage chunk's comment stays: only the event itself goes
                comments(&e).replace("data: [DONE]", ": keep-alive\n\ndata: [DONE]"),
            ),
            ("usage-first", usage_first, e.clone()),
        ] {
            for n in [1, 13, input.len()] {
                let (out, s) = run(input.as_bytes(), n, false);
                assert_eq!(out, input.as_bytes(), "{name}");
                assert_eq!(s.usage(), Some(USAGE), "{name}");
                assert!(s.complete(), "{name}");
                assert_eq!(s.text_bytes(), 2, "{name}");
                let (stripped, s) = run(input.as_bytes(), n, true);
                assert_eq!(
                    String::from_utf8(stripped).unwrap(),
                    expected,
                    "{name} split {n}"
                );
                assert_eq!(s.usage(), Some(USAGE), "{name}");
            }
        }
    }

    #[test]
    fn crlf_and_responses_api_events_with_or_without_event_lines() {
        let input = "event: response.created\r\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\r\n\r\nevent: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":7,\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":4,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}\r\n\r\n";
        let no_event_lines: String = input
            .split("\r\n")
            .filter(|l| !l.starts_with("event:"))
            .collect::<Vec<_>>()
            .join("\r\n");
        for text in [input, no_event_lines.as_str()] {
            for n in [1, 5, text.len()] {
                let (out, s) = run(text.as_bytes(), n, true);
                assert_eq!(out, text.as_bytes());
                assert_eq!(
                    s.usage(),
                    Some(Usage {
                        input: 7,
                        cached: 3,
                        output: 4,
                        reasoning: 1
                    })
                );
                assert!(s.complete(), "{text}");
            }
        }
    }

    #[test]
    fn truncated_stream_is_not_complete_and_tail_is_forwarded() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi";
        let (out, s) = run(input.as_bytes(), 3, false);
        assert_eq!(out, input.as_bytes());
        assert!(!s.complete());
        assert_eq!(s.usage(), None);
        assert_eq!(s.text_bytes(), 1);
    }

    #[test]
    fn a_whole_chunk_of_complete_events_is_not_copied() {
        let mut s = SseScanner::new(false);
        let chunk = Bytes::from_static(CHAT.as_bytes());
        let out = s.feed(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn an_event_over_the_cap_is_dropped_and_flagged() {
        let mut s = SseScanner::with_limit(false, 100);
        let first = s.feed(Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":\""));
        assert_eq!(first.as_ref(), b"data: {\"a\":1}\n\n");
        assert!(!s.overflowed());
        for _ in 0..20 {
            assert!(s.feed(Bytes::from_static(b"xxxxxxxxxx")).is_empty());
        }
        assert!(s.overflowed());
        assert!(
            s.finish().is_empty(),
            "the oversized event is never forwarded"
        );
    }

    #[test]
    fn events_of_a_whole_body() {
        let body = b": hi\r\n\r\nevent:x\r\ndata:{\"a\":1}\r\ndata: 2\r\n\r\ndata: [DONE]";
        let evs: Vec<_> = events(body).collect();
        assert_eq!(evs.len(), 3);
        assert!(evs[0].data.is_none());
        assert_eq!(evs[1].name, Some(&b"x"[..]));
        assert_eq!(evs[1].data.as_deref(), Some(&b"{\"a\":1}\n2"[..]));
        assert_eq!(evs[2].data.as_deref(), Some(&b"[DONE]"[..]));
    }
}
