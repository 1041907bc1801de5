//! Server-sent events as they pass: cut into events across chunk boundaries, read usage, and
//! optionally drop the usage-only chunk.
//!
//! Only complete events are forwarded (an event ends at a blank line, `\n\n` or `\r\n\r\n`), so the
//! bytes the client gets are the upstream's bytes, event for event; when nothing is dropped, a
//! chunk made only of complete events is forwarded without a copy.

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::{RawUsage, Usage};

/// Scans one SSE response.
#[derive(Debug, Default)]
pub struct SseScanner {
    /// Bytes of an event that has not ended yet.
    pending: BytesMut,
    /// Drop the `choices: []` usage chunk: the client did not ask for `include_usage`.
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    /// `data: [DONE]` (chat, completions) or a terminal `response.*` event was seen.
    complete: bool,
    /// Complete events seen (forwarded or dropped).
    events: u64,
    /// Bytes of generated text seen (content, text deltas, tool arguments): the basis of the
    /// estimate when a stream ends before its usage arrives.
    text_bytes: u64,
    /// Byte ranges of the current buffer forwarded differently: dropped (`None`) or replaced.
    edits: Option<Vec<Edit>>,
}

/// Bytes `start..end` of the buffer are replaced (`Some`) or dropped (`None`).
type Edit = (usize, usize, Option<Vec<u8>>);

/// What happens to one complete event.
enum Action {
    Keep,
    Drop,
    Replace(Vec<u8>),
}

/// What a data payload may carry that matters to us.
#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    response: Option<ResponseObj>,
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
struct ResponseObj {
    #[serde(default)]
    usage: Option<RawUsage>,
}

impl SseScanner {
    pub fn new(strip_usage_chunk: bool) -> SseScanner {
        SseScanner {
            strip_usage_chunk,
            ..Default::default()
        }
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
        self.text_bytes
    }

    /// Feeds one chunk; returns the bytes to forward now (possibly empty).
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.pending.is_empty() {
            let end = self.process(&chunk);
            let out = self.take_output(&chunk, end);
            if end < chunk.len() {
                self.pending.extend_from_slice(&chunk[end..]);
            }
            out
        } else {
            self.pending.extend_from_slice(&chunk);
            let buf = std::mem::take(&mut self.pending).freeze();
            let end = self.process(&buf);
            let out = self.take_output(&buf, end);
            if end < buf.len() {
                self.pending.extend_from_slice(&buf[end..]);
            }
            out
        }
    }

    /// At the end of the stream: an unterminated last event is forwarded as it is.
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending).freeze();
        if !rest.is_empty() {
            // inspect it for usage/[DONE] too, but never drop it
            let strip = std::mem::replace(&mut self.strip_usage_chunk, false);
            self.inspect(&rest);
            self.strip_usage_chunk = strip;
        }
        rest
    }

    /// Bytes `[0, end)` with the edits applied.
    fn take_output(&mut self, buf: &Bytes, end: usize) -> Bytes {
        match self.edits.take() {
            None => buf.slice(..end),
            Some(edits) => {
                let mut out = BytesMut::with_capacity(end);
                let mut at = 0;
                for (s, e, replacement) in edits {
                    out.extend_from_slice(&buf[at..s]);
                    if let Some(r) = replacement {
                        out.extend_from_slice(&r);
                    }
                    at = e;
                }
                out.extend_from_slice(&buf[at..end]);
                out.freeze()
            }
        }
    }

    /// Walks complete events in `buf`; returns where the last complete event ends.
    fn process(&mut self, buf: &[u8]) -> usize {
        let mut event_start = 0;
        let mut line_start = 0;
        let mut end = 0;
        for nl in memchr::memchr_iter(b'\n', buf) {
            let line = &buf[line_start..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                // a blank line right at the event start is a stray separator, not an event
                if line_start > event_start {
                    let event = &buf[event_start..nl + 1];
                    let edit = match self.inspect(event) {
                        Action::Keep => None,
                        Action::Drop => Some(None),
                        Action::Replace(r) => Some(Some(r)),
                    };
                    if let Some(e) = edit {
                        self.edits
                            .get_or_insert_with(Vec::new)
                            .push((event_start, nl + 1, e));
                    }
                }
                event_start = nl + 1;
                end = nl + 1;
            }
            line_start = nl + 1;
        }
        end
    }

    /// Looks at one complete event: reads usage and end markers, and, when the client did not ask
    /// for usage, drops the usage chunk and removes the `"usage":null` that `include_usage` adds to
    /// every other chunk, so the client gets the stream it would have got without it.
    fn inspect(&mut self, event: &[u8]) -> Action {
        self.events += 1;
        let mut data: Option<std::borrow::Cow<'_, [u8]>> = None;
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(v) = line.strip_prefix(b"data:") {
                let v = v.strip_prefix(b" ").unwrap_or(v);
                data = Some(match data {
                    None => std::borrow::Cow::Borrowed(v),
                    Some(prev) => {
                        let mut joined = prev.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(v);
                        std::borrow::Cow::Owned(joined)
                    }
                });
            } else if let Some(v) = line.strip_prefix(b"event:") {
                let v = v.strip_prefix(b" ").unwrap_or(v);
                if matches!(
                    v,
                    b"response.completed" | b"response.failed" | b"response.incomplete"
                ) {
                    self.complete = true;
                }
            }
        }
        let Some(data) = data else {
            return Action::Keep;
        };
        if data.as_ref() == b"[DONE]" {
            self.complete = true;
            return Action::Keep;
        }
        self.text_bytes += generated_text_len(&data);
        if !has_usage_object(&data) {
            if self.strip_usage_chunk {
                return without_null_usage(event).map_or(Action::Keep, Action::Replace);
            }
            return Action::Keep;
        }
        let Ok(p) = serde_json::from_slice::<Payload>(&data) else {
            return Action::Keep;
        };
        let top = p.usage.is_some();
        if let Some(u) = p.usage.or(p.response.and_then(|r| r.usage)) {
            self.usage = Some(u.into());
        }
        if self.strip_usage_chunk && top && p.choices.is_some_and(|c| c.is_empty()) {
            Action::Drop
        } else {
            Action::Keep
        }
    }
}

/// The event without its `"usage":null` member (as OpenAI writes it: compact), if it has one.
/// A quote inside a JSON string is escaped, so the pattern can only be a key.
fn without_null_usage(event: &[u8]) -> Option<Vec<u8>> {
    for pat in [&b",\"usage\":null"[..], &b"\"usage\":null,"[..]] {
        if let Some(i) = memchr::memmem::find(event, pat) {
            let mut out = Vec::with_capacity(event.len());
            out.extend_from_slice(&event[..i]);
            out.extend_from_slice(&event[i + pat.len()..]);
            return Some(out);
        }
    }
    None
}

/// Length of the generated text in one chunk, without parsing it: the JSON string values of
/// `content` (chat), `delta` (Responses text deltas), `arguments` (tool calls) and, for legacy
/// completions, `text`. Escapes count as their escaped length: an estimate.
fn generated_text_len(data: &[u8]) -> u64 {
    let mut keys: [&[u8]; 4] = [b"\"content\":\"", b"\"delta\":\"", b"\"arguments\":\"", b""];
    if memchr::memmem::find(data, b"\"text_completion\"").is_some() {
        keys[3] = b"\"text\":\"";
    }
    let mut total = 0u64;
    for key in keys.into_iter().filter(|k| !k.is_empty()) {
        for start in memchr::memmem::find_iter(data, key) {
            let body = &data[start + key.len()..];
            let mut i = 0;
            while let Some(q) = memchr::memchr2(b'"', b'\\', &body[i..]) {
                if body[i + q] == b'\\' {
                    i += q + 2;
                } else {
                    total += (i + q) as u64;
                    break;
                }
            }
        }
    }
    total
}

/// Cheap pre-check: does the payload contain a `"usage"` key with an object value?
fn has_usage_object(data: &[u8]) -> bool {
    memchr::memmem::find_iter(data, b"\"usage\"")
        .any(|p| super::object_after_key(data, p + 7).is_some())
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
            assert_eq!(
                s.usage(),
                Some(Usage {
                    input: 9,
                    cached: 0,
                    output: 2,
                    reasoning: 0
                })
            );
            assert!(s.complete());
            assert_eq!(s.events(), 5);
        }
    }

    #[test]
    fn strip_mode_gives_the_stream_without_include_usage() {
        let expected = CHAT
            .replace(
                "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
                "",
            )
            .replace(",\"usage\":null", "");
        assert!(!expected.contains("usage"));
        for n in [1, 7, 64, CHAT.len()] {
            let (out, s) = run(CHAT.as_bytes(), n, true);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "split {n}");
            assert_eq!(s.usage().unwrap().input, 9);
        }
    }

    #[test]
    fn counts_generated_text() {
        let (_, s) = run(CHAT.as_bytes(), 7, false);
        assert_eq!(s.text_bytes(), 2, "\"\" + \"Hi\"");
        assert_eq!(generated_text_len(br#"{"delta":"a\"b","x":1}"#), 4);
        assert_eq!(
            generated_text_len(br#"{"object":"text_completion","choices":[{"text":"abc"}]}"#),
            3
        );
        assert_eq!(
            generated_text_len(br#"{"tool_calls":[{"function":{"arguments":"{\"q\":1}"}}]}"#),
            9
        );
    }

    #[test]
    fn crlf_and_responses_api_events() {
        let input = "event: response.created\r\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\r\n\r\nevent: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":7,\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":4,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}\r\n\r\n";
        for n in [1, 5, input.len()] {
            let (out, s) = run(input.as_bytes(), n, true);
            assert_eq!(out, input.as_bytes());
            assert_eq!(
                s.usage(),
                Some(Usage {
                    input: 7,
                    cached: 3,
                    output: 4,
                    reasoning: 1
                })
            );
            assert!(s.complete());
        }
    }

    #[test]
    fn truncated_stream_is_not_complete_and_tail_is_forwarded() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi";
        let (out, s) = run(input.as_bytes(), 3, false);
        assert_eq!(out, input.as_bytes());
        assert!(!s.complete());
        assert_eq!(s.usage(), None);
    }

    #[test]
    fn a_whole_chunk_of_complete_events_is_not_copied() {
        let mut s = SseScanner::new(false);
        let chunk = Bytes::from_static(CHAT.as_bytes());
        let out = s.feed(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }
}
