//! One SSE `data:` payload read in a single pass with the JSON cursor ([`crate::json::scan`]):
//! usage (top-level, or a Responses event's `response.usage`), the number of `choices`, the
//! generated text (handed on as it is read), and the event `type`. Whatever the spacing, key order
//! or escapes, the answer is the same, and it is the answer serde_json gives for the same bytes
//! (`usage::oracle` keeps the serde readers this replaced, and `usage::equivalence` compares the
//! two on any input). A stream's payloads are read one after another with what the earlier ones
//! left ([`shape`]).

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::ops::Range;

use super::{InputDetails, OutputDetails, RawUsage, Usage};
use crate::json::scan::{Cursor, Invalid, RepeatedPrefix, Result};
use crate::json::span_of;
pub use shape::StreamMemory;
use shape::{Marks, Place};

mod shape;

/// What a data payload says that matters to metering.
#[derive(Default)]
pub struct Payload<'a> {
    /// The last top-level `usage` member's raw bytes (`null` included), borrowed from the
    /// payload.
    pub top_usage: Option<&'a [u8]>,
    /// What that member says (`None` for `null` or a malformed usage).
    top_parsed: Option<RawUsage>,
    /// `response.usage` of a Responses event.
    response_usage: Option<RawUsage>,
    /// How many `choices` (when it is an array).
    pub choices: Option<usize>,
    /// Bytes of generated text (decoded): `choices[].delta.content`, `choices[].text`, tool call
    /// `arguments`, a Responses `delta`, refusals.
    pub text_bytes: u64,
    /// The Responses event `type`.
    pub kind: Option<Cow<'a, str>>,
    /// Where a top-level `"usage": null` member is, as [`member_span`] finds it, when the reading
    /// knows it already (a stream's payload read by its shape, or remembered as one).
    pub null_usage: Option<Range<usize>>,
}

impl<'a> Payload<'a> {
    /// Reads a payload; `None` when it is not a JSON object.
    pub fn parse(data: &'a [u8]) -> Option<Payload<'a>> {
        Payload::parse_with(data, &mut |_| {})
    }

    /// [`Payload::parse`], handing each piece of generated text (decoded) to `on_text` as it is
    /// read: no copy or allocation unless the text has escapes. When the payload turns out not to
    /// be JSON, the pieces before the fault have been handed on (as serde_json would have).
    pub fn parse_with(data: &'a [u8], on_text: &mut dyn FnMut(&str)) -> Option<Payload<'a>> {
        Payload::parse_after(data, None, on_text)
    }

    /// [`Payload::parse_with`] for the next payload of a stream: when it starts with the leading
    /// members in `repeated` (`id`, `object`, `created`, `model`..., the same in every chunk),
    /// reading resumes after them. Once this payload's leading members are read, `repeated` holds
    /// them.
    pub fn parse_after(
        data: &'a [u8],
        repeated: Option<&mut RepeatedPrefix>,
        on_text: &mut dyn FnMut(&str),
    ) -> Option<Payload<'a>> {
        Payload::parse_marked(data, repeated, None, on_text)
    }

    /// [`Payload::parse_after`], marking in `marks` the places a next payload may change.
    fn parse_marked(
        data: &'a [u8],
        repeated: Option<&mut RepeatedPrefix>,
        marks: Option<&mut Marks>,
        on_text: &mut dyn FnMut(&str),
    ) -> Option<Payload<'a>> {
        let mut bytes = 0u64;
        let mut sink = |t: &str| {
            bytes += t.len() as u64;
            on_text(t);
        };
        let mut c = Cursor::new(data);
        let out = &mut Out {
            sink: &mut sink,
            marks,
        };
        let mut p = read_payload(&mut c, out, repeated).ok()?;
        c.end().ok()?;
        p.text_bytes = bytes;
        Some(p)
    }

    /// The usage this payload reports, if any.
    pub fn usage(&self) -> Option<Usage> {
        let top = self.top_parsed.clone();
        top.or_else(|| self.response_usage.clone()).map(Usage::from)
    }

    /// `response.usage` alone (what [`Payload::usage`] falls back on), for the equivalence tests.
    #[cfg(test)]
    pub(super) fn response_usage(&self) -> Option<Usage> {
        self.response_usage.clone().map(Usage::from)
    }
}

/// The Responses API's terminal events: the stream is complete after one of them.
pub fn is_terminal_response_event(name: &[u8]) -> bool {
    matches!(
        name,
        b"response.completed" | b"response.failed" | b"response.incomplete"
    )
}

/// [`is_terminal_response_event`] for a payload's `type`.
pub fn is_terminal_response_event_str(kind: &str) -> bool {
    is_terminal_response_event(kind.as_bytes())
}

/// Where the texts found go, as they are read (no collection in between).
type Sink<'s> = &'s mut dyn FnMut(&str);

/// Where a reading hands what it finds as it reads: each text to the sink and, when the payload's
/// shape is being taken ([`shape`]), the places (strings and numbers) the next payload may change
/// without changing the reading.
struct Out<'s> {
    sink: Sink<'s>,
    marks: Option<&'s mut Marks>,
}

impl Out<'_> {
    /// Skips the value that comes next (a string or a number there is a place).
    fn skip(&mut self, c: &mut Cursor<'_>) -> Result<()> {
        let Some(marks) = self.marks.as_deref_mut() else {
            return c.skip();
        };
        let Some(place) = c.peek().and_then(Place::skipped) else {
            return c.skip();
        };
        let start = c.pos();
        c.skip()?;
        marks.place(start..c.pos(), place);
        Ok(())
    }

    /// Reads the string that comes next as generated text (a place).
    fn text(&mut self, c: &mut Cursor<'_>) -> Result<()> {
        let start = c.pos();
        let text = c.string()?;
        if let Some(marks) = self.marks.as_deref_mut() {
            marks.place(start..c.pos(), Place::Text);
        }
        (self.sink)(&text);
        Ok(())
    }
}

/// The payload object's members; the last of each name wins. With `repeated`, the leading members
/// that say nothing here (`id`, `object`, `created`...) are not read again when they are the same
/// bytes as the last payload's, and are remembered for the next one.
fn read_payload<'a>(
    c: &mut Cursor<'a>,
    out: &mut Out,
    repeated: Option<&mut RepeatedPrefix>,
) -> Result<Payload<'a>> {
    let mut p = Payload::default();
    let mut obj = c.object()?;
    let mut leading = repeated.map(|r| r.resume(c, &mut obj));
    while let Some(key) = obj.key(c)? {
        match key.as_ref() {
            b"usage" => {
                let (raw, usage) = top_usage(c)?;
                p.top_usage = Some(raw);
                p.top_parsed = usage;
            }
            b"choices" => p.choices = choices(c, out)?,
            // a Responses event's object; any other shape carries no usage
            b"response" => p.response_usage = response_usage(c.raw()?),
            b"delta" => text(c, out)?,
            b"type" => {
                let next = c.peek();
                let at = c.pos();
                p.kind = match next {
                    Some(b'n') => c.null().map(|()| None)?,
                    _ => Some(c.string()?),
                };
                if let Some(marks) = out.marks.as_deref_mut() {
                    marks.kind_at(p.kind.as_ref().map(|_| at));
                }
            }
            _ => {
                out.skip(c)?;
                if let Some(l) = &mut leading {
                    l.skipped(c);
                }
                continue;
            }
        }
        // a member read: the leading ones ended before it
        if let Some(l) = leading.take() {
            l.end(c);
        }
    }
    if let Some(l) = leading {
        l.end(c);
    }
    Ok(p)
}

/// The top-level `usage` member's raw bytes (as serde's `&RawValue` takes them) and what it says
/// (as serde reads a `RawUsage` from them), in one pass when it is a well-formed usage.
fn top_usage<'a>(c: &mut Cursor<'a>) -> Result<(&'a [u8], Option<RawUsage>)> {
    let start = c.mark();
    let usage = match c.peek() {
        Some(b'n') => None,
        _ => raw_usage(c).ok(),
    };
    if usage.is_none() {
        // `null`, or not a usage: only its form matters now
        c.rewind(start);
        c.skip()?;
    }
    Ok((c.since(start)?, usage))
}

/// `choices`: how many (when it is an array), their generated text into the sink.
fn choices(c: &mut Cursor<'_>, out: &mut Out) -> Result<Option<usize>> {
    match c.peek() {
        Some(b'[') => {
            let mut arr = c.array()?;
            let mut n = 0;
            while arr.next(c)? {
                texts(c, out)?;
                n += 1;
            }
            Ok(Some(n))
        }
        Some(b'{') => c.object()?.skip_rest(c).map(|()| None),
        Some(b'"') => c.string().map(|_| None),
        _ => c.scalar().map(|()| None),
    }
}

/// The generated text in a choice, a delta, a message, a tool call or its function: the string
/// values of `content`, `text`, `refusal` and `arguments`, at any depth of `delta`, `message`,
/// `tool_calls` and `function` (each level a container visited, so at most serde_json's 127).
fn texts(c: &mut Cursor<'_>, out: &mut Out) -> Result<()> {
    match c.peek() {
        Some(b'{') => {
            let mut obj = c.object()?;
            while let Some(key) = obj.key(c)? {
                match key.as_ref() {
                    b"content" | b"text" | b"refusal" | b"arguments" => text(c, out)?,
                    b"delta" | b"message" | b"function" | b"tool_calls" => texts(c, out)?,
                    _ => out.skip(c)?,
                }
            }
            Ok(())
        }
        Some(b'[') => {
            let mut arr = c.array()?;
            while arr.next(c)? {
                texts(c, out)?;
            }
            Ok(())
        }
        Some(b'"') => c.string().map(drop),
        _ => c.scalar(),
    }
}

/// A string value is generated text; anything else is not.
fn text(c: &mut Cursor<'_>, out: &mut Out) -> Result<()> {
    match c.peek() {
        Some(b'"') => out.text(c),
        Some(b'{') => c.object()?.skip_rest(c),
        Some(b'[') => {
            let mut arr = c.array()?;
            while arr.next(c)? {
                c.skip()?;
            }
            Ok(())
        }
        _ => c.scalar(),
    }
}

/// `response.usage` as serde reads a struct `{ usage: Option<RawUsage> }` (unknown fields
/// ignored) from the `response` value: an object's `usage` member, or the one element of an
/// array. A repeated `usage`, a key that is not text or a malformed usage give none.
fn response_usage(raw: &[u8]) -> Option<RawUsage> {
    let c = &mut Cursor::new(raw);
    match c.peek()? {
        b'{' => {
            let mut obj = c.object().ok()?;
            let mut usage = None;
            while let Some(key) = obj.key(c).ok()? {
                if key.as_ref() != b"usage" {
                    c.skip().ok()?;
                } else if usage.is_some() {
                    return None;
                } else {
                    usage = Some(opt_usage(c).ok()?);
                }
            }
            usage.flatten()
        }
        b'[' => {
            let mut arr = c.array().ok()?;
            let usage = if arr.next(c).ok()? {
                opt_usage(c).ok()?
            } else {
                None
            };
            // a second element is one too many
            if arr.next(c).ok()? {
                return None;
            }
            usage
        }
        _ => None,
    }
}

/// `Option<RawUsage>`: `null`, or [`raw_usage`].
fn opt_usage(c: &mut Cursor<'_>) -> Result<Option<RawUsage>> {
    if c.peek() == Some(b'n') {
        return c.null().map(|()| None);
    }
    raw_usage(c).map(Some)
}

/// A [`RawUsage`] read in place as serde's derive reads it: an object (fields by name or alias,
/// a repeated one an error, unknown ones skipped, missing ones `None`), or an array of the fields
/// in declaration order (missing ones `None`, more than four an error).
fn raw_usage(c: &mut Cursor<'_>) -> Result<RawUsage> {
    let mut u = RawUsage::default();
    if c.peek() == Some(b'[') {
        let mut arr = c.array()?;
        for field in 0..4 {
            if !arr.next(c)? {
                return Ok(u);
            }
            usage_field(c, &mut u, field)?;
        }
        return if arr.next(c)? { Err(Invalid) } else { Ok(u) };
    }
    let mut obj = c.object()?;
    let mut seen = [false; 4];
    while let Some(key) = obj.key(c)? {
        let field = match key.as_ref() {
            b"prompt_tokens" | b"input_tokens" => 0,
            b"completion_tokens" | b"output_tokens" => 1,
            b"prompt_tokens_details" | b"input_tokens_details" => 2,
            b"completion_tokens_details" | b"output_tokens_details" => 3,
            _ => {
                c.skip()?;
                continue;
            }
        };
        match seen.get_mut(field) {
            Some(s) if !*s => *s = true,
            _ => return Err(Invalid),
        }
        usage_field(c, &mut u, field)?;
    }
    Ok(u)
}

/// Field `field` of a [`RawUsage`] (in declaration order).
fn usage_field(c: &mut Cursor<'_>, u: &mut RawUsage, field: usize) -> Result<()> {
    match field {
        0 => u.prompt_tokens = opt_count(c)?,
        1 => u.completion_tokens = opt_count(c)?,
        2 => {
            u.prompt_tokens_details =
                details(c, b"cached_tokens")?.map(|cached_tokens| InputDetails { cached_tokens })
        }
        _ => {
            u.completion_tokens_details = details(c, b"reasoning_tokens")?
                .map(|reasoning_tokens| OutputDetails { reasoning_tokens })
        }
    }
    Ok(())
}

/// `Option<u64>`: `null` or a plain integer in range.
fn opt_count(c: &mut Cursor<'_>) -> Result<Option<u64>> {
    if c.peek() == Some(b'n') {
        return c.null().map(|()| None);
    }
    c.u64().map(Some)
}

/// `Option<{ field: Option<u64> }>` (the token details): `null`, an object whose `field` may
/// appear once, or an array of at most one element. `Some(count)` when it is not `null`.
fn details(c: &mut Cursor<'_>, field: &[u8]) -> Result<Option<Option<u64>>> {
    match c.peek() {
        Some(b'n') => c.null().map(|()| None),
        Some(b'[') => {
            let mut arr = c.array()?;
            let mut n = None;
            if arr.next(c)? {
                n = opt_count(c)?;
                if arr.next(c)? {
                    return Err(Invalid);
                }
            }
            Ok(Some(n))
        }
        _ => {
            let mut obj = c.object()?;
            let mut n = None;
            let mut seen = false;
            while let Some(key) = obj.key(c)? {
                if key.as_ref() != field {
                    c.skip()?;
                } else if std::mem::replace(&mut seen, true) {
                    return Err(Invalid);
                } else {
                    n = opt_count(c)?;
                }
            }
            Ok(Some(n))
        }
    }
}

/// The bytes to remove to take the member whose value is `value` out of the JSON object `obj`,
/// leaving every other byte as it was: from the end of the previous member's value (its comma
/// and spacing included) to the end of this one; for a first member, from its key to the next
/// key. `None` if `obj` is not shaped as expected (then nothing is removed).
pub fn member_span(obj: &[u8], value: &[u8]) -> Option<Range<usize>> {
    let v = span_of(obj, value);
    if obj.get(v.clone())? != value {
        return None;
    }
    // back from the value: spaces, ':', spaces, the key's closing quote
    let mut i = v.start;
    i = skip_ws_back(obj, i);
    if *obj.get(i.checked_sub(1)?)? != b':' {
        return None;
    }
    i = skip_ws_back(obj, i - 1);
    if *obj.get(i.checked_sub(1)?)? != b'"' {
        return None;
    }
    // the key's opening quote: the previous quote not escaped (keys hold no raw quotes)
    let mut k = i - 1;
    loop {
        k = memchr::memrchr(b'"', obj.get(..k)?)?;
        let slashes = obj
            .get(..k)?
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if slashes % 2 == 0 {
            break;
        }
    }
    let before = skip_ws_back(obj, k);
    match *obj.get(before.checked_sub(1)?)? {
        // a member before it: take its comma and what follows, up to this value's end
        b',' => Some(before - 1..v.end),
        // the first member: take it and the comma after it, up to the next key
        b'{' => {
            let after = skip_ws(obj, v.end);
            match *obj.get(after)? {
                b',' => Some(k..skip_ws(obj, after + 1)),
                b'}' => Some(k..v.end),
                _ => None,
            }
        }
        _ => None,
    }
}

fn skip_ws_back(b: &[u8], mut i: usize) -> usize {
    while i > 0 && b.get(i - 1).is_some_and(u8::is_ascii_whitespace) {
        i -= 1;
    }
    i
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The top-level `usage` of a whole JSON body (the last non-null one), read with a borrowed view
/// whatever the spacing and key order. `None` when the body is not one whole JSON object (a body
/// longer than the kept window, say): the caller may then look for it by other means.
pub fn json_body_usage(body: &[u8]) -> Option<Option<Usage>> {
    let c = &mut Cursor::new(body);
    let mut usage = None;
    let mut obj = c.object().ok()?;
    while let Some(key) = obj.key(c).ok()? {
        if key.as_ref() == b"usage" {
            if let Some(u) = opt_usage(c).ok()? {
                usage = Some(Usage::from(u));
            }
        } else {
            c.skip().ok()?;
        }
    }
    c.end().ok()?;
    Some(usage)
}

#[cfg(test)]
mod tests;
