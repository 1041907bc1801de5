//! Listeners: the API port and the admin port, the accept loops, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MAX_HEADER_COUNT_LIMIT};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Shared};

/// A running tailor: its bound addresses and a handle to stop it.
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop_api: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    api_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
}

impl Running {
    /// Graceful shutdown: `/readyz` turns 503, the API listener stops accepting, in-flight
    /// requests get `server.drain_timeout` to finish; then open streams end with an SSE error
    /// event. The admin port answers until the API side is done.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::Relaxed);
        let _ = self.stop_api.send(true);
        let _ = self.api_task.await;
        let _ = self.stop_admin.send(true);
        let _ = self.admin_task.await;
    }
}

/// Connection-level limits of one listener.
#[derive(Clone, Default)]
pub struct ServeLimits {
    /// Open connections at most; more are closed at once.
    pub max_connections: Option<usize>,
    /// Request headers must arrive within this (slowloris).
    pub header_read_timeout: Option<Duration>,
    /// After stop: how long connections may take to finish.
    pub drain_timeout: Duration,
    /// Cancelled when the drain time is over (bodies then end with an error).
    pub drain_over: Option<CancellationToken>,
}

/// Binds both listeners and starts serving.
pub async fn start(config: Config, metrics: Arc<Metrics>) -> std::io::Result<Running> {
    let api = TcpListener::bind(config.server.listen).await?;
    let admin = TcpListener::bind(config.server.admin_listen).await?;
    let (api_addr, admin_addr) = (api.local_addr()?, admin.local_addr()?);
    let limits = ServeLimits {
        max_connections: Some(config.server.max_connections),
        header_read_timeout: Some(config.server.header_read_timeout),
        drain_timeout: config.server.drain_timeout,
        drain_over: None,
    };
    let shared = Shared::new(config, metrics).map_err(std::io::Error::other)?;
    let limits = ServeLimits {
        drain_over: Some(shared.drain_over.clone()),
        ..limits
    };
    let (stop_api, api_stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    let proxy = Proxy::new(shared.clone());
    let api_task = tokio::spawn(serve(
        api,
        api_stopped,
        move || hyper_util::service::TowerToHyperService::new(proxy.clone()),
        limits,
    ));
    let admin_shared = shared.clone();
    let admin_limits = ServeLimits {
        max_connections: Some(256),
        header_read_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let admin_task = tokio::spawn(serve(
        admin,
        admin_stopped,
        move || {
            let s = admin_shared.clone();
            hyper::service::service_fn(move |req| crate::admin::handle(s.clone(), req))
        },
        admin_limits,
    ));
    Ok(Running {
        api_addr,
        admin_addr,
        shared,
        stop_api,
        stop_admin,
        api_task,
        admin_task,
    })
}

/// The accept loop of one listener. Each connection is served by `make()`'s service over HTTP/1.1
/// (or HTTP/2 with prior knowledge), with TCP_NODELAY so streamed events leave at once.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    make: F,
    limits: ServeLimits,
) where
    F: Fn() -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(MAX_HEADER_COUNT_LIMIT);
    if let Some(t) = limits.header_read_timeout {
        builder.http1().header_read_timeout(t);
    }
    let slots = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // out of file descriptors and the like: back off instead of spinning
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let permit = match &slots {
                    Some(s) => match s.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            tracing::debug!("connection limit reached: closing a new connection");
                            continue; // dropping the stream closes it
                        }
                    },
                    None => None,
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(stream), make()).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(limits.drain_timeout, &mut drained)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: ending the requests still open");
        if let Some(t) = &limits.drain_over {
            t.cancel();
        }
        // let the error events go out, then give up on whatever is left
        let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
    }
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
