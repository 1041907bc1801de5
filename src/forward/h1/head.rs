//! The heads of tailor's own HTTP/1.1 client: the request head it writes, and the response head it
//! reads (RFC 9112), with how the response body is framed and whether the connection can be
//! reused. Everything here is pure: bytes in, a head or an error out.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

/// Most response header lines read (hyper's default too).
const MAX_HEADERS: usize = 100;

/// Largest response head read: OpenAI's are about 1.5 KB.
pub const MAX_HEAD: usize = 64 * 1024;

/// Why a response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("invalid response head: {0}")]
    Head(&'static str),
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("conflicting content-length values")]
    Length,
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    #[error("the connection closed before the body ended")]
    Incomplete,
    #[error("the upstream switched protocols, which tailor never asks for")]
    Upgrade,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (204, 304).
    Empty,
    /// `content-length` bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A response head, read.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection can carry another request once this body is read.
    pub keep_alive: bool,
}

/// Writes a request head for a body of `body_len` bytes: the request line, `headers` (less any
/// framing header: tailor sets `content-length` itself), `host` if `headers` has none.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &http::Method,
    path_and_query: &str,
    headers: &HeaderMap,
    authority: &str,
    body_len: usize,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    crate::logs::push_u64(out, body_len as u64);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Reads one response head from the front of `buf`: `Ok(None)` while it is incomplete, else the
/// head, split off `buf` (what follows it stays). Interim (1xx) heads are returned like any other:
/// the caller skips them.
pub fn read_response(buf: &mut BytesMut) -> Result<Option<Head>, ProtoError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    let n = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(ProtoError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ProtoError::Head("too many headers")),
        Err(_) => return Err(ProtoError::Head("malformed")),
    };
    if n > MAX_HEAD {
        return Err(ProtoError::HeadTooLarge);
    }
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ProtoError::Head("status code"))?;
    let version = match res.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // where each name and value lies in the head, so the values can share its bytes
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let spans: Vec<(Range<usize>, Range<usize>)> = res
        .headers
        .iter()
        .map(|h| (span(h.name.as_bytes()), span(h.value)))
        .collect();
    let head: Bytes = buf.split_to(n).freeze();
    // room for the few headers a proxy adds before passing the answer on, without a rehash
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    for (name, value) in spans {
        let name = HeaderName::from_bytes(&head[name]).map_err(|_| ProtoError::Head("name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| ProtoError::Head("value"))?;
        headers.append(name, value);
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ProtoError::Upgrade);
    }
    let (framing, reusable) = framing(status, &headers)?;
    // HTTP/1.0 has no transfer codings (RFC 9112 6.1): such a body is read, the connection closed
    let faulty = version == Version::HTTP_10 && headers.contains_key(header::TRANSFER_ENCODING);
    let keep_alive = reusable && !faulty && persistent(version, &headers);
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// How the body is framed (RFC 9112 6.3), and whether that framing lets the connection be reused.
fn framing(status: StatusCode, headers: &HeaderMap) -> Result<(Framing, bool), ProtoError> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // chunked must be the last coding; any other final coding runs until close. A length
        // beside it is ignored, and the connection is not trusted again.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty());
        let chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        let alone = !headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (Framing::Chunked, alone)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let n = decimal(part.trim_ascii()).ok_or(ProtoError::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(ProtoError::Length);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}

/// A `content-length` value: ASCII digits only (no sign, no spaces), within u64.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Whether the connection persists after this response: HTTP/1.1 unless `connection: close`,
/// HTTP/1.0 only with `connection: keep-alive`.
fn persistent(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &[u8]| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has(b"keep-alive")
    } else {
        !has(b"close")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<Option<Head>, ProtoError> {
        read_response(&mut BytesMut::from(s))
    }

    #[test]
    fn request_head_has_the_length_and_a_host() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer k"));
        h.insert("content-length", HeaderValue::from_static("999"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut out = Vec::new();
        write_request(&mut out, &http::Method::POST, "/v1/x?a=1", &h, "u:8", 12);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/x?a=1 HTTP/1.1\r\nauthorization: Bearer k\r\nhost: u:8\r\ncontent-length: 12\r\n\r\n"
        );
        h.insert("host", HeaderValue::from_static("given"));
        let mut out = Vec::new();
        write_request(&mut out, &http::Method::POST, "/", &h, "u:8", 0);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("host: given\r\n") && !s.contains("u:8"), "{s}");
    }

    #[test]
    fn heads_in_other_spellings_read_the_same() {
        for s in [
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\ncontent-type:application/json\r\ncontent-length:   2  \r\n\r\n{}",
            "HTTP/1.1 200 \r\nCONTENT-TYPE: application/json\r\nContent-Length: 2, 2\r\n\r\n{}",
            "HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-length: 2\n\n{}",
        ] {
            let mut buf = BytesMut::from(s);
            let h = read_response(&mut buf).unwrap().unwrap();
            assert_eq!(h.status, 200, "{s:?}");
            assert_eq!(h.headers["content-type"], "application/json", "{s:?}");
            assert_eq!(h.framing, Framing::Length(2), "{s:?}");
            assert!(h.keep_alive, "{s:?}");
            assert_eq!(&buf[..], b"{}", "{s:?}");
        }
    }

    #[test]
    fn a_head_cut_anywhere_waits_for_the_rest() {
        let s = "HTTP/1.1 200 OK\r\nx-request-id: req_1\r\ntransfer-encoding: chunked\r\n\r\n";
        for cut in 0..s.len() {
            assert!(read(&s[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let h = read(s).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(h.headers["x-request-id"], "req_1");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |s: &str| read(s).map(|h| h.map(|h| (h.framing, h.keep_alive)));
        let ok = |x, k| Ok(Some((x, k)));
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\n\r\n"),
            ok(Framing::Empty, true)
        );
        assert_eq!(
            f("HTTP/1.1 304 x\r\ncontent-length: 9\r\n\r\n"),
            ok(Framing::Empty, true)
        );
        assert_eq!(f("HTTP/1.1 100 Continue\r\n\r\n"), ok(Framing::Empty, true));
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), ok(Framing::UntilClose, false));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            ok(Framing::Chunked, true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
            ok(Framing::UntilClose, false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"),
            ok(Framing::Chunked, false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"),
            ok(Framing::Length(5), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n"),
            ok(Framing::Length(5), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: Keep-Alive\r\n\r\n"),
            ok(Framing::Length(5), true)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"),
            ok(Framing::Chunked, false)
        );
        for bad in ["5, 6", "+5", "-1", "5 5", "", "0x5", "99999999999999999999"] {
            let s = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert_eq!(f(&s), Err(ProtoError::Length), "{bad:?}");
        }
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"),
            Err(ProtoError::Length)
        );
    }

    #[test]
    fn hostile_heads_are_errors() {
        assert!(matches!(
            read("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
            Err(ProtoError::Upgrade)
        ));
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            read(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).unwrap_err(),
            ProtoError::Head("too many headers")
        );
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(read(&long).unwrap_err(), ProtoError::HeadTooLarge);
    }
}
