//! A response body read straight off its upstream connection: [`Decoder`] frames it (pure, bytes
//! in and frames out), [`H1Body`] reads the socket in the request's own task and hands the
//! connection back to its thread's idle list once the body has ended cleanly.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::head::{Framing, ProtoError};
use super::{pool, Conn};

/// Longest chunk-size line (with its extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Most bytes of trailer lines after the last chunk (read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// Bytes left of a `content-length` body.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk; bytes of them read so far.
    Trailers(usize),
    /// Until the connection closes.
    UntilClose,
    /// The body has ended.
    Done,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// Nothing more can be read from the buffer: read the socket.
    NeedMore,
    End,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::ChunkSize,
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    /// The next frame from the front of `buf` (consumed), or why there is none.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, ProtoError> {
        loop {
            match *self {
                Decoder::Done => return Ok(Step::End),
                Decoder::Length(n) | Decoder::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let k = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    let left = n - k as u64;
                    *self = match (*self, left) {
                        (Decoder::Length(_), 0) => Decoder::Done,
                        (Decoder::Length(_), l) => Decoder::Length(l),
                        (_, 0) => Decoder::ChunkEnd,
                        (_, l) => Decoder::ChunkData(l),
                    };
                    return Ok(Step::Data(buf.split_to(k).freeze()));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Decoder::ChunkSize => {
                    let Some(line) = line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&buf[..line])?;
                    buf.advance(line + 2);
                    *self = match size {
                        0 => Decoder::Trailers(0),
                        n => Decoder::ChunkData(n),
                    };
                }
                Decoder::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtoError::Chunked("no CRLF after chunk data"));
                    }
                    buf.advance(2);
                    *self = Decoder::ChunkSize;
                }
                Decoder::Trailers(seen) => {
                    let Some(line) = line(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                        return Ok(Step::NeedMore);
                    };
                    buf.advance(line + 2);
                    *self = match line {
                        0 => Decoder::Done,
                        n => Decoder::Trailers(seen + n + 2),
                    };
                }
            }
        }
    }

    /// The connection closed: fine only for a body that runs until close, or one already ended.
    pub fn eof(&mut self) -> Result<(), ProtoError> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(ProtoError::Chunked(
                "connection closed before the body ended",
            )),
        }
    }
}

/// The length of the CRLF-ended line at the front of `buf` (without its CRLF), `None` while it
/// is incomplete; an error past `max` bytes or on a bare LF.
fn line(buf: &[u8], max: usize) -> Result<Option<usize>, ProtoError> {
    match memchr::memchr(b'\n', buf) {
        Some(lf) if lf > max => Err(ProtoError::Chunked("line too long")),
        Some(0) => Err(ProtoError::Chunked("bare LF")),
        Some(lf) if buf[lf - 1] != b'\r' => Err(ProtoError::Chunked("bare LF")),
        Some(lf) => Ok(Some(lf - 1)),
        None if buf.len() > max => Err(ProtoError::Chunked("line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional whitespace and `;` extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, ProtoError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ProtoError::Chunked("chunk size"));
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err(ProtoError::Chunked("chunk size"));
    }
    line[..digits].iter().try_fold(0u64, |n, b| {
        let d = (*b as char).to_digit(16).unwrap_or(0);
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(ProtoError::Chunked("chunk size overflows"))
    })
}

/// An upstream response body read in the request's task, off a connection of tailor's own pool.
pub struct H1Body {
    /// `None` once the body ended (the connection went back to the pool or was closed).
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    /// The idle list it returns to.
    authority: Arc<str>,
}

impl H1Body {
    pub(super) fn new(
        conn: Conn,
        framing: Framing,
        keep_alive: bool,
        authority: Arc<str>,
    ) -> H1Body {
        let mut body = H1Body {
            conn: Some(conn),
            decoder: Decoder::new(framing),
            keep_alive,
            authority,
        };
        if body.decoder == Decoder::Done {
            body.release();
        }
        body
    }

    /// The body ended: its connection goes back to the pool if it can carry another request.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            let reuse = self.keep_alive && conn.buf.is_empty();
            tracing::trace!(upstream = %self.authority, reuse, "upstream response body ended");
            if reuse {
                pool::put(&self.authority, conn);
            }
        }
    }

    /// After a data frame: ends the body now if what is buffered is exactly its end (the last
    /// chunk and no trailers), so the connection is free before the caller polls again.
    fn end_if_buffered(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        let rest: &[u8] = match self.decoder {
            Decoder::Done => b"",
            Decoder::ChunkEnd => b"\r\n0\r\n\r\n",
            Decoder::ChunkSize => b"0\r\n\r\n",
            _ => return,
        };
        if conn.buf[..] == *rest {
            conn.buf.clear();
            self.decoder = Decoder::Done;
            self.release();
        }
    }
}

fn invalid(e: ProtoError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads what the socket has into `buf` (0 at end of stream). Through `AsyncRead`, whose read
/// that leaves room in `buf` tells the event loop the socket is drained (tokio's rule for
/// edge-triggered readiness): the next poll after an event waits without a system call, where
/// a `try_read` would make one more that finds nothing (one per event of a paced stream).
pub(super) fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    super::make_room(&mut conn.buf);
    tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Ok(Step::Data(d)) => {
                    this.end_if_buffered();
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Ok(Step::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Err(e) => {
                    tracing::debug!(upstream = %this.authority, error = %e, "upstream response body malformed");
                    this.conn = None;
                    return Poll::Ready(Some(Err(invalid(e))));
                }
                Ok(Step::NeedMore) => {}
            }
            let read = ready!(poll_fill(conn, cx));
            let ended = match read {
                Ok(0) => this.decoder.eof().map_err(invalid),
                Ok(_) => continue,
                Err(e) => Err(e),
            };
            // a closed connection is never reused
            this.conn = None;
            return Poll::Ready(ended.err().map(Err));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes: the body, or the first error.
    fn decode_in_steps(framing: Framing, wire: &[u8], step: usize) -> Result<Vec<u8>, ProtoError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::End => return Ok(out),
                Step::NeedMore if fed == wire.len() => {
                    d.eof()?;
                    return Ok(out);
                }
                Step::NeedMore => {
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_read_the_same_however_they_are_cut() {
        let wire =
            b"5\r\nhello\r\n1;name=value\r\n \r\n00A  \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(
                decode_in_steps(Framing::Chunked, wire, step).as_deref(),
                Ok(&b"hello 0123456789"[..]),
                "step {step}"
            );
        }
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        for step in 1..12 {
            assert_eq!(
                decode_in_steps(Framing::Length(5), b"hello", step).as_deref(),
                Ok(&b"hello"[..])
            );
            assert_eq!(
                decode_in_steps(Framing::UntilClose, b"hello world", step).as_deref(),
                Ok(&b"hello world"[..])
            );
        }
        assert!(decode_in_steps(Framing::Length(6), b"hello", 2).is_err());
        assert_eq!(
            decode_in_steps(Framing::Empty, b"", 1).as_deref(),
            Ok(&b""[..])
        );
        // what follows a body is not part of it
        let mut buf = BytesMut::from(&b"abcEXTRA"[..]);
        let mut d = Decoder::new(Framing::Length(3));
        assert_eq!(
            d.decode(&mut buf),
            Ok(Step::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.decode(&mut buf), Ok(Step::End));
        assert_eq!(&buf[..], b"EXTRA");
    }

    #[test]
    fn hostile_chunked_bodies_are_errors() {
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        let long_trailer = format!("0\r\nx: {}\r\n\r\n", "t".repeat(MAX_TRAILERS));
        for bad in [
            &b"g\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"5\r\nhel",
            b"0\r\n",
            long_ext.as_bytes(),
            long_trailer.as_bytes(),
        ] {
            for step in [1, 3, bad.len()] {
                assert!(
                    decode_in_steps(Framing::Chunked, bad, step).is_err(),
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        assert_eq!(chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
    }
}
