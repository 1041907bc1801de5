//! tailor's own HTTP/1.1 client, for routed requests to plain `http://` upstreams (a fine-tune
//! behind vLLM or another OpenAI-compatible server on the local network). `https://` upstreams,
//! passthrough and tailor's side requests keep hyper's pooled client.
//!
//! ```text
//! send: idle connection of this thread (alive?) or connect (connect.rs: the name's addresses
//!     raced) ─▶ write head + body in one write
//!     (a body over 16 KiB: a second write, with the socket read meanwhile for an early answer)
//!     ─▶ read the response head (1xx skipped) ─▶ Response<H1Body>
//! H1Body: frames read off the socket in the request's own task ─▶ ended cleanly: back to idle
//! ```
//!
//! Why not hyper's client here: it runs every connection as a task of its own, fed through a
//! channel, so each request and each body chunk crosses two tasks, and each connection holds a
//! dispatch block and two 8 KiB buffers. Here the request's task reads and writes the socket
//! itself, and a connection holds one read buffer (benches/RESULTS.md, round 4).

mod body;
mod connect;
pub mod head;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use body::H1Body;
use connect::connect;
use head::ProtoError;
pub use pool::sweep as sweep_idle;

/// Room every read of a connection has (see [`make_room`]).
const READ_BUFFER: usize = 4096;

/// Bodies up to this size go out in the same write as the head (one copy, one system call).
const COPY_BODY: usize = 16 * 1024;

/// An idle connection is closed after this long unused (hyper's pool: 90 s as tailor set it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most idle connections kept per upstream on one thread.
const MAX_IDLE: usize = 512;

/// One upstream connection and what has been read from it but not yet used.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Moves what the kernel has already received into `buf`, with a system call past the event
    /// loop's cached readiness (a write can fail on a reset before the loop has seen the answer
    /// that came ahead of it); whether anything came.
    fn take_received(&mut self) -> bool {
        use std::io::Read;
        let sock = socket2::SockRef::from(&self.io);
        let mut from: &socket2::Socket = &sock;
        let mut chunk = [0u8; READ_BUFFER];
        let mut got = false;
        // as much as a response head may take: the rest, if any, is read as the body
        while self.buf.len() <= head::MAX_HEAD {
            match from.read(&mut chunk) {
                Ok(n @ 1..) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                _ => break,
            }
            got = true;
        }
        got
    }
}

/// Where requests for one `http://` upstream go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, as connected to and as the idle lists are keyed.
    pub authority: Arc<str>,
    pub connect_timeout: Duration,
}

impl Target {
    /// A target for an `http://` base URL; `None` for any other scheme.
    pub fn new(url: &str, connect_timeout: Duration) -> Option<Target> {
        let uri: http::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let a = uri.authority()?;
        if a.as_str().contains('@') {
            return None;
        }
        let authority = match a.port_u16() {
            Some(_) => a.as_str().to_owned(),
            None => format!("{}:80", a.as_str()),
        };
        Some(Target {
            authority: authority.into(),
            connect_timeout,
        })
    }

    /// Whether `uri` is on this target (requests are built from the same config, so always,
    /// unless a config changed under them).
    pub fn serves(&self, uri: &http::Uri) -> bool {
        uri.scheme_str() == Some("http")
            && uri.authority().is_some_and(|a| match a.port_u16() {
                Some(_) => a.as_str() == &*self.authority,
                None => self
                    .authority
                    .strip_suffix(":80")
                    .is_some_and(|h| h == a.as_str()),
            })
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {authority}: {source}")]
    Connect {
        authority: Arc<str>,
        source: io::Error,
    },
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("upstream response: {0}")]
    Proto(#[from] ProtoError),
}

/// Sends `req` (its URI's path and query; `host` from its headers or the target) and reads the
/// response head. The body is read as the caller polls it.
pub async fn send(target: &Target, req: Request<Bytes>) -> Result<Response<H1Body>, SendError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut wire = Vec::with_capacity(512 + parts.headers.len() * 64 + body.len().min(COPY_BODY));
    head::write_request(
        &mut wire,
        &parts.method,
        path,
        &parts.headers,
        &target.authority,
        body.len(),
    );
    let whole = body.len() <= COPY_BODY;
    if whole {
        wire.extend_from_slice(&body);
    }
    let rest: &[u8] = if whole { &[] } else { &body };
    let conn = loop {
        // an idle connection the upstream closed while the request was being written is replaced;
        // a fresh one that fails is the answer
        // the rare and large futures (a new connection, a body written while the answer is
        // watched for) on the heap: held inline, every request's future would be as large as
        // they are, and a future is copied whole each time it moves
        let (mut conn, reused) = match pool::take(&target.authority) {
            Some(c) => (c, true),
            None => (Box::pin(connect(target)).await?, false),
        };
        let written = if rest.is_empty() {
            conn.io
                .write_all(&wire)
                .await
                .map(|()| None)
                .map_err(SendError::from)
        } else {
            Box::pin(write_request(&mut conn, &wire, rest)).await
        };
        match written {
            Ok(None) => {
                tracing::trace!(upstream = %target.authority, reused, bytes = wire.len() + rest.len(), "upstream request written");
                break conn;
            }
            // answered before the whole body was taken (413): the answer is what the client
            // gets, and the connection, out of step, is closed after it
            Ok(Some(head)) => {
                tracing::debug!(upstream = %target.authority, status = head.status.as_u16(), "upstream answered before the whole request body was written");
                // the body still queued is dropped with a reset on close, not held in the
                // kernel for an upstream that stopped reading
                let _ = socket2::SockRef::from(&conn.io).set_linger(Some(Duration::ZERO));
                return Ok(response(conn, head, false, target));
            }
            // the upstream closed the idle connection before it read this request, and sent
            // nothing: the request goes out on another
            Err(SendError::Io(e)) if reused && conn.buf.is_empty() && !conn.take_received() => {
                tracing::debug!(upstream = %target.authority, error = %e, "idle upstream connection failed: trying another");
                continue;
            }
            Err(e @ SendError::Proto(_)) => return Err(e),
            // an upstream may answer (413) and close before it has read a large body: its answer
            // is what the client gets, if it arrived
            Err(e) => return read_head(conn, target, false).await.map_err(|_| e),
        }
    };
    read_head(conn, target, true).await
}

/// Writes a request with a large body: `wire` (the head), then `rest` (the body). The connection
/// is read meanwhile: an upstream that answers before it has taken the whole body (413), and
/// stops reading without closing, is heard at once instead of leaving the write stuck until the
/// header timeout. `Some(head)`: that early final answer.
async fn write_request(
    conn: &mut Conn,
    wire: &[u8],
    rest: &[u8],
) -> Result<Option<head::Head>, SendError> {
    let (mut rd, mut wr) = conn.io.split();
    let buf = &mut conn.buf;
    for part in [wire, rest] {
        let mut at = 0;
        while let Some(left) = part.get(at..).filter(|l| !l.is_empty()) {
            // reading first: an answer and the reset after it can arrive in one wake-up, and the
            // kernel hands over the answer before it reports the reset
            tokio::select! {
                biased;
                n = read_more(&mut rd, buf) => {
                    if n? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the upstream closed the connection while the request body was written").into());
                    }
                    if let Some(h) = final_head(buf)? {
                        return Ok(Some(h));
                    }
                }
                n = wr.write(left) => match n? {
                    0 => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    n => at += n,
                },
            }
        }
    }
    Ok(None)
}

/// Room for the next read of `buf`: [`READ_BUFFER`] bytes when the frames already read from it
/// are all dropped (reclaimed without an allocation), so an answer that fits is read in one system
/// call, not in what the last answer left over. While a frame is still held (on its way to the
/// client, or kept for a subscriber), what is left is used down to 512 bytes before new memory is
/// taken, so a stream does not allocate a buffer per event.
fn make_room(buf: &mut BytesMut) {
    let room = buf.capacity() - buf.len();
    if room < READ_BUFFER && !buf.try_reclaim(READ_BUFFER) && room < 512 {
        buf.reserve(READ_BUFFER);
    }
}

/// Reads what the upstream sent into `buf`; 0 at end of stream.
async fn read_more<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    make_room(buf);
    io.read_buf(buf).await
}

/// The final response head at the front of `buf`, interim (1xx) heads before it skipped; `None`
/// while it is incomplete.
fn final_head(buf: &mut BytesMut) -> Result<Option<head::Head>, ProtoError> {
    while !buf.is_empty() {
        match head::read_response(buf)? {
            Some(h) if h.status.is_informational() => continue,
            found => return Ok(found),
        }
    }
    Ok(None)
}

/// The response for `head`; its body is read off `conn` as the caller polls it. `reusable`: the
/// whole request went out (else the connection is closed after this answer).
fn response(conn: Conn, h: head::Head, reusable: bool, target: &Target) -> Response<H1Body> {
    tracing::trace!(upstream = %target.authority, status = h.status.as_u16(), framing = ?h.framing, keep_alive = h.keep_alive, "upstream response head");
    let mut resp = Response::new(H1Body::new(
        conn,
        h.framing,
        h.keep_alive && reusable,
        target.authority.clone(),
    ));
    *resp.status_mut() = h.status;
    *resp.headers_mut() = h.headers;
    resp
}

/// Reads the response head off `conn` (interim 1xx answers skipped); the body follows. `reusable`:
/// the whole request went out. Only POST is sent: an answer to HEAD would be framed differently.
async fn read_head(
    mut conn: Conn,
    target: &Target,
    reusable: bool,
) -> Result<Response<H1Body>, SendError> {
    loop {
        if let Some(h) = final_head(&mut conn.buf)? {
            return Ok(response(conn, h, reusable, target));
        }
        if read_more(&mut conn.io, &mut conn.buf).await? == 0 {
            return Err(SendError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upstream closed the connection before its response head",
            )));
        }
    }
}

/// Idle connections, per thread and upstream: a request's task and the connection it uses stay
/// on one API worker (and one runtime), and taking or returning one takes no lock.
mod pool {
    use super::*;

    struct Idle {
        conn: Conn,
        since: Instant,
    }

    impl Idle {
        /// Not past the idle timeout at `now`, and still open.
        fn usable(&self, now: Instant) -> bool {
            now.duration_since(self.since) < IDLE_TIMEOUT && open(&self.conn)
        }
    }

    thread_local! {
        static IDLE: RefCell<HashMap<Arc<str>, Vec<Idle>>> = RefCell::new(HashMap::new());
    }

    /// The most recently used idle connection to `authority` that is still open.
    pub fn take(authority: &str) -> Option<Conn> {
        IDLE.try_with(|m| {
            let mut m = m.borrow_mut();
            let list = m.get_mut(authority)?;
            let now = Instant::now();
            while let Some(i) = list.pop() {
                if i.usable(now) {
                    return Some(i.conn);
                }
                tracing::trace!(
                    upstream = authority,
                    "idle upstream connection closed or expired: dropped"
                );
            }
            None
        })
        .ok()
        .flatten()
    }

    /// Keeps `conn` for the next request to `authority`; the oldest beyond the limit, and any
    /// past the idle timeout, are closed.
    pub fn put(authority: &Arc<str>, conn: Conn) {
        let now = Instant::now();
        let _ = IDLE.try_with(|m| {
            let mut m = m.borrow_mut();
            let list = match m.get_mut(&**authority) {
                Some(l) => l,
                None => m.entry(authority.clone()).or_default(),
            };
            if list
                .first()
                .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
            {
                list.retain(|i| i.usable(now));
            }
            if list.len() >= MAX_IDLE {
                list.remove(0);
            }
            list.push(Idle { conn, since: now });
        });
    }

    /// Closes every idle connection of this thread that expired or that its upstream closed
    /// (one that is never asked for again, after a reload moved its upstream, would stay open).
    pub fn sweep() {
        let now = Instant::now();
        let _ = IDLE.try_with(|m| {
            let mut m = m.borrow_mut();
            for list in m.values_mut() {
                list.retain(|i| i.usable(now));
            }
            m.retain(|_, list| !list.is_empty());
        });
    }

    /// How many idle connections to `authority` this thread holds.
    #[cfg(test)]
    pub fn idle(authority: &str) -> usize {
        IDLE.with(|m| m.borrow().get(authority).map_or(0, Vec::len))
    }

    /// Whether an idle connection is still open with nothing unasked-for to read (a closed one
    /// reads end of stream; one with bytes waiting is out of step). Without a system call when
    /// the event loop has seen nothing arrive: after any answer whose last read left room in the
    /// buffer, a close the loop has not yet seen shows at the next request's read, as an error.
    fn open(conn: &Conn) -> bool {
        let mut probe = [0u8; 1];
        matches!(conn.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_http_with_a_port() {
        let t = Target::new("http://localhost:8000/v1", Duration::from_secs(1)).unwrap();
        assert_eq!(&*t.authority, "localhost:8000");
        let t = Target::new("http://10.0.0.7/openai", Duration::from_secs(1)).unwrap();
        assert_eq!(&*t.authority, "10.0.0.7:80");
        assert!(t.serves(&"http://10.0.0.7/openai/chat/completions".parse().unwrap()));
        assert!(t.serves(&"http://10.0.0.7:80/x".parse().unwrap()));
        assert!(!t.serves(&"http://10.0.0.8/x".parse().unwrap()));
        assert!(!t.serves(&"https://10.0.0.7/x".parse().unwrap()));
        let t = Target::new("http://[::1]:9/v1", Duration::from_secs(1)).unwrap();
        assert_eq!(&*t.authority, "[::1]:9");
        assert!(Target::new("https://api.openai.com/v1", Duration::from_secs(1)).is_none());
        assert!(Target::new("http://u:p@host/v1", Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_read_has_a_full_buffer_of_room_once_the_last_answer_is_dropped() {
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let at = buf.as_ptr();
        // a 3 KB answer read and handed on leaves 1 KB of room behind it
        buf.extend_from_slice(&[b'x'; 3000]);
        drop(buf.split_to(3000).freeze());
        make_room(&mut buf);
        assert!(
            buf.capacity() >= READ_BUFFER,
            "not what the last answer left"
        );
        assert_eq!(buf.as_ptr(), at, "its memory reused, not a new buffer");
        // an answer still held (a frame on its way to the client): the rest of the buffer is used
        // first, no allocation per read
        buf.extend_from_slice(&[b'y'; 3000]);
        let held = buf.split_to(3000).freeze();
        make_room(&mut buf);
        assert_eq!(buf.as_ptr(), at.wrapping_add(3000), "the same buffer");
        buf.extend_from_slice(&[b'z'; 900]);
        let held_too = buf.split_to(900).freeze();
        make_room(&mut buf);
        assert!(
            buf.capacity() >= READ_BUFFER,
            "new memory once under 512 bytes are left"
        );
        assert!(held.iter().all(|b| *b == b'y') && held_too.iter().all(|b| *b == b'z'));
    }

    #[tokio::test]
    async fn the_sweep_closes_idle_connections_the_upstream_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Target::new(&format!("http://{addr}/v1"), Duration::from_secs(1)).unwrap();
        let first = connect(&target).await.unwrap();
        let (closed_by_upstream, _) = listener.accept().await.unwrap();
        let second = connect(&target).await.unwrap();
        let (still_open, _) = listener.accept().await.unwrap();
        pool::put(&target.authority, first);
        pool::put(&target.authority, second);
        drop(closed_by_upstream);
        // the event loop sees the first one's end of stream
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            pool::idle(&target.authority),
            2,
            "nothing is dropped before a sweep"
        );
        sweep_idle();
        assert_eq!(pool::idle(&target.authority), 1);
        // the one kept is the one still open
        let kept = pool::take(&target.authority).unwrap();
        assert_eq!(
            kept.io.local_addr().unwrap(),
            still_open.peer_addr().unwrap()
        );
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error_naming_the_upstream() {
        // a port nothing listens on: refused at once, reported as a connect error
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = Target::new(&format!("http://{addr}/v1"), Duration::from_secs(1)).unwrap();
        match connect(&target).await {
            Err(SendError::Connect { authority, .. }) => {
                assert_eq!(&*authority, &*target.authority)
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
