//! W3C Trace Context (version 00): the client's `traceparent` is continued when it is well formed,
//! else a new trace starts; what goes upstream names tailor's span as the parent.
//!
//! Parsing is strict: exactly `00-{32 hex}-{16 hex}-{2 hex}`, lowercase, ids not all zero, one
//! header only. Anything else is ignored (and with it the `tracestate`), never echoed upstream.

use http::header::{HeaderMap, HeaderValue};

/// Longest `tracestate` passed on (W3C asks to propagate at least 512 characters).
const MAX_TRACESTATE: usize = 512;

/// A well-formed `traceparent` a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// One request's place in a trace: the trace it belongs to, tailor's own span, its parent.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The client's span, when it sent a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// Whether the span is recorded: the client's sampled flag (parent-based), else always.
    pub sampled: bool,
    /// The client's `tracestate`, passed on unchanged with a valid parent.
    pub tracestate: Option<HeaderValue>,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn decode<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

/// Parses a version-00 `traceparent`, strictly; `None` for anything else.
pub fn parse(v: &[u8]) -> Option<Parent> {
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id: [u8; 16] = decode(&v[3..35])?;
    let span_id: [u8; 8] = decode(&v[36..52])?;
    let [flags] = decode::<1>(&v[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        flags,
    })
}

/// Lowercase hex of `bytes` into `out`.
pub fn hex_into(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

impl TraceContext {
    /// Continues the client's trace (one valid `traceparent` header) or starts a new one;
    /// `random` gives the new ids.
    pub fn from_headers(headers: &HeaderMap, mut random: impl FnMut() -> u64) -> TraceContext {
        let mut values = headers.get_all("traceparent").iter();
        let parent = match (values.next(), values.next()) {
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        let mut span_id = random().to_be_bytes();
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        match parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id,
                parent: Some(p.span_id),
                sampled: p.flags & 1 == 1,
                tracestate: tracestate(headers),
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&random().to_be_bytes());
                trace_id[8..].copy_from_slice(&random().to_be_bytes());
                if trace_id == [0; 16] {
                    trace_id[15] = 1;
                }
                TraceContext {
                    trace_id,
                    span_id,
                    parent: None,
                    sampled: true,
                    tracestate: None,
                }
            }
        }
    }

    /// The `traceparent` sent upstream: this trace, tailor's span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_into(&self.trace_id, &mut s);
        s.push('-');
        hex_into(&self.span_id, &mut s);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000000-0000000000000000-00",
        ))
    }
}

/// The client's `tracestate` (its header lines joined), when it fits [`MAX_TRACESTATE`].
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all("tracestate").iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for v in values {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    if joined.len() > MAX_TRACESTATE {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn strict_version_00() {
        let p = parse(VALID.as_bytes()).unwrap();
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.span_id[7], 0xb7);
        assert_eq!(p.flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn continues_a_valid_parent_and_names_tailor_as_the_next() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(VALID));
        h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let mut n = 0x1111_u64;
        let ctx = TraceContext::from_headers(&h, || {
            n += 1;
            n
        });
        assert!(ctx.sampled);
        assert_eq!(ctx.parent, Some(parse(VALID.as_bytes()).unwrap().span_id));
        assert_eq!(
            ctx.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001112-01"
        );
        assert_eq!(ctx.tracestate.unwrap(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn a_malformed_or_doubled_parent_starts_a_new_trace() {
        for values in [
            vec!["00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"],
            vec![VALID, VALID],
            vec![],
        ] {
            let mut h = HeaderMap::new();
            for v in &values {
                h.append("traceparent", HeaderValue::from_static(v));
            }
            h.insert("tracestate", HeaderValue::from_static("a=b"));
            let ctx = TraceContext::from_headers(&h, || 0xabcd);
            assert_eq!(ctx.parent, None, "{values:?}");
            assert!(ctx.tracestate.is_none());
            let tp = ctx.traceparent();
            let tp = tp.to_str().unwrap();
            assert_eq!(
                tp,
                "00-000000000000abcd000000000000abcd-000000000000abcd-01"
            );
            assert!(!tp.contains("4bf92f") && !tp.contains("4BF92F"));
            assert!(parse(tp.as_bytes()).is_some());
        }
    }

    #[test]
    fn not_sampled_is_passed_on() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let ctx = TraceContext::from_headers(&h, || 7);
        assert!(!ctx.sampled);
        assert!(ctx.traceparent().to_str().unwrap().ends_with("-00"));
    }
}
