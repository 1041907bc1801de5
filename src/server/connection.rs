//! One connection, once accepted: HTTP/1.1 or HTTP/2 told apart by its first bytes, served by
//! hyper on the current runtime until it ends or the drain is over.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::MAX_HEADER_COUNT_LIMIT;

/// A service a connection can be served by, on any worker's runtime: hyper's bounds, named once.
pub trait ConnectionService:
    Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
    /// The response body.
    type Body: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
}

impl<S, B> ConnectionService for S
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static,
{
    type Body = B;
}

/// How connections are served: HTTP/1.1, or HTTP/2 with prior knowledge (h2c), told apart by
/// peeking at the first bytes. Peeking, not reading: hyper's own detection reads the first 24
/// bytes into a rewind buffer, and the read after it doubles the connection's 8 KiB read buffer
/// (16 KiB held by every open stream).
pub(super) struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    /// hyper-util's own detection, for a connection whose first bytes are only part of the
    /// HTTP/2 preface (rare: it waits on readiness for the rest).
    detect: auto::Builder<TokioExecutor>,
    /// How long a new connection may stay silent before it is closed.
    first_bytes: Duration,
    /// Turns true when the drain starts: a connection still silent then is closed.
    stop: watch::Receiver<bool>,
}

/// What a connection's first bytes say.
enum FirstBytes {
    Http1,
    Http2,
    /// A part of the HTTP/2 preface so far.
    Unsure,
}

/// The builders for a listener whose request heads must arrive within `header_read_timeout`;
/// `stop` turns true when its drain starts.
pub(super) fn http_builders(
    header_read_timeout: Option<Duration>,
    stop: watch::Receiver<bool>,
) -> Arc<Builders> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(MAX_HEADER_COUNT_LIMIT);
    if let Some(t) = header_read_timeout {
        builder.http1().header_read_timeout(t);
    }
    Arc::new(Builders {
        h1: builder.clone().http1_only(),
        h2: builder.clone().http2_only(),
        detect: builder,
        first_bytes: header_read_timeout.unwrap_or(Duration::from_secs(30)),
        stop,
    })
}

/// The HTTP/2 connection preface a prior-knowledge client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the connection's first bytes say (peeked, left in the socket). None: closed, or an
/// error, before a byte.
async fn first_bytes(stream: &TcpStream) -> Option<FirstBytes> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let n = stream.peek(&mut buf).await.ok()?;
    let got = buf.get(..n).filter(|got| !got.is_empty())?;
    Some(if !H2_PREFACE.starts_with(got) {
        FirstBytes::Http1
    } else if got.len() == H2_PREFACE.len() {
        FirstBytes::Http2
    } else {
        FirstBytes::Unsure
    })
}

/// Serves one connection on the current runtime until it ends (or the drain is over), holding
/// `held` (what it occupies: a place under a limit, a count) as long.
pub(super) fn spawn_connection<S>(
    builders: &Arc<Builders>,
    stream: TcpStream,
    service: S,
    held: impl Send + 'static,
    watcher: Watcher,
) where
    S: ConnectionService,
{
    let builders = builders.clone();
    tokio::spawn(async move {
        let _held = held;
        let mut stop = builders.stop.clone();
        let first = tokio::select! {
            first = tokio::time::timeout(builders.first_bytes, first_bytes(&stream)) => first,
            // the drain started before a byte came: nothing to finish
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let builder = match first {
            Ok(Some(FirstBytes::Http1)) => &builders.h1,
            Ok(Some(FirstBytes::Http2)) => &builders.h2,
            Ok(Some(FirstBytes::Unsure)) => &builders.detect,
            // silent past the header timeout, or gone: close
            _ => return,
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}
