//! Listeners: the API port and the admin port, their workers, and graceful shutdown. The API port
//! is bound in [`listen`], its connections accepted and served by worker threads
//! ([`workers`]), each one served by hyper ([`connection`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::state::Shared;
use crate::usage::body::DrainOver;

mod connection;
mod listen;
mod spread;
mod workers;

pub use connection::ConnectionService;
use workers::{start_workers, Accept};

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
        // queued dataset lines are written and fsync'd before exit
        let captures = self.shared.captures.clone();
        let _ = tokio::task::spawn_blocking(move || captures.close()).await;
        // finished spans still queued are sent (the collector gets 5 s at most)
        let tracer = self.shared.live.load().tracer.clone();
        if let Some(t) = tracer {
            let _ = tokio::time::timeout(Duration::from_secs(5), t.flush()).await;
        }
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
    /// Fired when the drain time is over (bodies then end with an error).
    pub drain_over: Option<Arc<DrainOver>>,
    /// Threads that accept and serve the connections (0: the runtime `serve` runs on).
    pub workers: usize,
}

/// Binds both listeners and starts serving.
pub async fn start(config: Config, metrics: Arc<Metrics>) -> std::io::Result<Running> {
    let api = listen::bind_api(config.server.listen, config.server.workers).await?;
    let admin = TcpListener::bind(config.server.admin_listen).await?;
    let (api_addr, admin_addr) = (api.local_addr()?, admin.local_addr()?);
    let limits = ServeLimits {
        max_connections: Some(config.server.max_connections),
        header_read_timeout: Some(config.server.header_read_timeout),
        drain_timeout: config.server.drain_timeout,
        drain_over: None,
        workers: config.server.workers,
    };
    let shared = Shared::new(config, metrics).map_err(std::io::Error::other)?;
    let limits = ServeLimits {
        drain_over: Some(Arc::clone(&shared.drain_over)),
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

/// Serves one listener until `stop` turns true, then drains. Each connection is served by
/// `make()`'s service over HTTP/1.1 (or HTTP/2 with prior knowledge) on one of `limits.workers`
/// threads of its own, each accepting on a listener of its own ([`workers`]), or on this
/// runtime when that is 0 (or no thread could start).
pub async fn serve<F, S>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    make: F,
    limits: ServeLimits,
) where
    F: Fn() -> S + Clone + Send + 'static,
    S: ConnectionService,
{
    let accept = Accept {
        make,
        builders: connection::http_builders(limits.header_read_timeout, stop.clone()),
        slots: limits.max_connections.map(|n| Arc::new(Semaphore::new(n))),
        stop: stop.clone(),
    };
    // the connections served on this runtime (no worker threads)
    let graceful = GracefulShutdown::new();
    // each worker drops its `drained` handle once its connections have ended; `finish` ends them
    let (drained_tx, mut drained) = mpsc::channel::<()>(1);
    let (finish, finish_rx) = watch::channel(false);
    let (threads, here) = start_workers(listener, &accept, limits.workers, &drained_tx, &finish_rx);
    drop(drained_tx);
    match here {
        Some(l) => accept.run(l, &graceful, None).await,
        None => {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    }
    let on_here = graceful.shutdown();
    tokio::pin!(on_here);
    let all_drained = async {
        on_here.as_mut().await;
        // none is ever sent: this ends when every worker has dropped its handle
        let _ = drained.recv().await;
    };
    tokio::pin!(all_drained);
    if tokio::time::timeout(limits.drain_timeout, &mut all_drained)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: ending the requests still open");
        if let Some(d) = &limits.drain_over {
            d.fire();
        }
        // let the error events go out, then give up on whatever is left
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut all_drained).await;
    }
    // the workers end, and drop whatever they still hold with their runtimes
    let _ = finish.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
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
