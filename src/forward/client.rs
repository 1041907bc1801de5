//! The upstream HTTP client: one pool set per API worker thread, so a request and its upstream
//! connection stay on one thread (no cross-thread wake-ups per request).

use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Upstream;

/// The shared upstream client (HTTP/1.1 and HTTP/2 over TLS, or plain HTTP), pooled.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a pooled client. TCP_NODELAY is on so SSE events are not held back by Nagle. The client
/// follows no redirects: where a request goes is decided by the config alone.
/// Fails only if the TLS provider supports no protocol version (a build defect).
pub fn client(connect_timeout: Duration) -> Result<HttpClient, rustls::Error> {
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

/// The upstream clients, one per upstream for each API worker thread. A pooled connection is
/// driven by a task on the thread that opened it; each worker having its own pools keeps a
/// request and its upstream connection on one thread (no cross-thread wake-ups per request).
pub struct Pools(Vec<Vec<HttpClient>>);

impl Pools {
    /// Clients for `workers` threads, each with every upstream's connect timeout.
    pub fn build(upstreams: &[Upstream], workers: usize) -> Result<Pools, rustls::Error> {
        (0..workers.max(1))
            .map(|_| {
                upstreams
                    .iter()
                    .map(|u| client(u.timeouts.connect))
                    .collect()
            })
            .collect::<Result<_, _>>()
            .map(Pools)
    }

    /// The calling worker's client for upstream `i`.
    pub fn get(&self, upstream: usize) -> &HttpClient {
        let set = &self.0[WORKER.with(Cell::get) % self.0.len()];
        &set[upstream]
    }
}
