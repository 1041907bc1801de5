//! The upstream HTTP client: one pool set per API worker thread, so a request and its upstream
//! connection stay on one thread (no cross-thread wake-ups per request).

use std::cell::Cell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::h1::{self, H1Body, Target};
use crate::config::Upstream;

/// The shared upstream client (HTTP/1.1 and HTTP/2 over TLS, or plain HTTP), pooled.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The passthrough client: request bodies stream (uploads of up to `passthrough.max_body_bytes`).
pub type StreamingClient = Client<HttpsConnector<HttpConnector>, StreamingBody>;

/// A request body that streams from the client to the upstream.
pub type StreamingBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Builds a pooled client. TCP_NODELAY is on so SSE events are not held back by Nagle. The client
/// follows no redirects: where a request goes is decided by the config alone.
/// Fails only if the TLS provider supports no protocol version (a build defect).
pub fn client<B>(
    connect_timeout: Duration,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, rustls::Error>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

thread_local! {
    /// Which API worker thread this is (0 outside them: admin, tests, the simulator).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as API worker `i`: its requests use the `i`th pool set.
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// Clients kept across reloads, by connect timeout (the only client setting an upstream has): a
/// reload that keeps an upstream's settings keeps its pooled connections. A client pools per
/// host, so upstreams that share a timeout share a client.
#[derive(Default)]
pub struct ClientCache {
    pools: Mutex<HashMap<Duration, Vec<HttpClient>>>,
    streaming: Mutex<HashMap<(Duration, usize), StreamingClient>>,
}

impl ClientCache {
    /// The calling worker's passthrough client for `connect_timeout` (one per thread, as for
    /// the pools: a connection's task runs on the thread that opened it).
    pub fn streaming(&self, connect_timeout: Duration) -> Result<StreamingClient, rustls::Error> {
        let key = (connect_timeout, WORKER.with(Cell::get));
        let mut map = self.streaming.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = client(connect_timeout)?;
        map.insert(key, c.clone());
        Ok(c)
    }
}

/// An upstream's response body: from tailor's own HTTP/1.1 client (`http://` upstreams) or
/// hyper's (`https://`).
pub enum UpstreamBody {
    Own(H1Body),
    Hyper(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Own(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Own(b) => b.is_end_stream(),
            UpstreamBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Own(b) => b.size_hint(),
            UpstreamBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made.
    #[error("{0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed, or the response could not be read.
    #[error("{0}")]
    Transport(Box<dyn std::error::Error + Send + Sync>),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

/// The upstream clients, one per upstream for each API worker thread. A pooled connection is
/// driven by a task on the thread that opened it; each worker having its own pools keeps a
/// request and its upstream connection on one thread (no cross-thread wake-ups per request).
/// `http://` upstreams are sent to by tailor's own client ([`h1`]), whose idle connections are
/// kept per thread as well.
pub struct Pools {
    hyper: Vec<Vec<HttpClient>>,
    /// Per upstream: its target when it is plain `http://`.
    own: Vec<Option<Target>>,
}

impl Pools {
    /// Clients for `workers` threads, each with every upstream's connect timeout, taken from
    /// `cache` where it has them.
    pub fn build(
        upstreams: &[Upstream],
        workers: usize,
        cache: &ClientCache,
    ) -> Result<Pools, rustls::Error> {
        let workers = workers.max(1);
        let mut cache = cache.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut sets: Vec<Vec<HttpClient>> = vec![Vec::with_capacity(upstreams.len()); workers];
        for u in upstreams {
            let t = u.timeouts.connect;
            let per_worker = match cache.get(&t).filter(|c| c.len() == workers) {
                Some(c) => c.clone(),
                None => {
                    let c = (0..workers)
                        .map(|_| client(t))
                        .collect::<Result<Vec<_>, _>>()?;
                    cache.insert(t, c.clone());
                    c
                }
            };
            for (set, c) in sets.iter_mut().zip(per_worker) {
                set.push(c);
            }
        }
        let own = upstreams
            .iter()
            .map(|u| Target::new(&u.url, u.timeouts.connect))
            .collect();
        Ok(Pools { hyper: sets, own })
    }

    /// The calling worker's hyper client for upstream `i`.
    pub fn get(&self, upstream: usize) -> &HttpClient {
        let set = &self.hyper[WORKER.with(Cell::get) % self.hyper.len()];
        &set[upstream]
    }

    /// Sends a routed request to upstream `i` and reads the response head.
    pub async fn send(
        &self,
        upstream: usize,
        req: Request<Bytes>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match self.own.get(upstream).and_then(Option::as_ref) {
            Some(t) if t.serves(req.uri()) => match h1::send(t, req).await {
                Ok(r) => Ok(r.map(UpstreamBody::Own)),
                Err(e @ h1::SendError::Connect { .. }) => Err(SendError::Connect(e.into())),
                Err(e) => Err(SendError::Transport(e.into())),
            },
            _ => match self.get(upstream).request(req.map(Full::new)).await {
                Ok(r) => Ok(r.map(UpstreamBody::Hyper)),
                Err(e) if e.is_connect() => Err(SendError::Connect(e.into())),
                Err(e) => Err(SendError::Transport(e.into())),
            },
        }
    }
}
