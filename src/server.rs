//! Listeners: the API port and the admin port, the accept loops, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Shared};

/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tailor: its bound addresses and a handle to stop it.
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to [`DRAIN_TIMEOUT`]), then returns.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds both listeners and starts serving.
pub async fn start(config: Config, metrics: Arc<Metrics>) -> std::io::Result<Running> {
    let api = TcpListener::bind(config.server.listen).await?;
    let admin = TcpListener::bind(config.server.admin_listen).await?;
    let (api_addr, admin_addr) = (api.local_addr()?, admin.local_addr()?);
    let shared = Shared::new(config, metrics).map_err(std::io::Error::other)?;
    let (stop, stopped) = watch::channel(false);
    let proxy = Proxy::new(shared.clone());
    let api_task = tokio::spawn(serve(api, stopped.clone(), move || {
        hyper_util::service::TowerToHyperService::new(proxy.clone())
    }));
    let admin_shared = shared.clone();
    let admin_task = tokio::spawn(serve(admin, stopped, move || {
        let s = admin_shared.clone();
        hyper::service::service_fn(move |req| crate::admin::handle(s.clone(), req))
    }));
    Ok(Running {
        api_addr,
        admin_addr,
        shared,
        stop,
        tasks: vec![api_task, admin_task],
    })
}

/// The accept loop of one listener. Each connection is served by `make()`'s service over HTTP/1.1
/// (or HTTP/2 with prior knowledge), with TCP_NODELAY so streamed events leave at once.
pub async fn serve<F, S, B>(listener: TcpListener, mut stop: watch::Receiver<bool>, make: F)
where
    F: Fn() -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(stream), make()).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
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
