//! Listeners: the API port and the admin port, the accept loops, and graceful shutdown.
//!
//! API connections are served by `server.workers` threads, each with its own single-threaded
//! runtime and upstream pools (nginx's worker model): the accept loop hands a connection to the
//! next worker, and from then on a request, its upstream connection and its timers never leave
//! that thread. tokio's work-stealing scheduler woke an idle thread for nearly every event, which
//! cost more CPU per request than the proxying itself at low concurrency (benches/RESULTS.md).

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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, MAX_HEADER_COUNT_LIMIT};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::state::Shared;
use crate::usage::body::DrainOver;

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
    /// Threads that serve the connections (0: the accept loop's own runtime).
    pub workers: usize,
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

/// An accepted connection on its way to a worker thread.
type Handoff = (std::net::TcpStream, Option<OwnedSemaphorePermit>);

/// How connections are served: HTTP/1.1, or HTTP/2 with prior knowledge (h2c), told apart by
/// peeking at the first bytes. Peeking, not reading: hyper's own detection reads the first 24
/// bytes into a rewind buffer, and the read after it doubles the connection's 8 KiB read buffer
/// (16 KiB held by every open stream).
struct Builders {
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

fn http_builders(limits: &ServeLimits, stop: watch::Receiver<bool>) -> Arc<Builders> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(MAX_HEADER_COUNT_LIMIT);
    if let Some(t) = limits.header_read_timeout {
        builder.http1().header_read_timeout(t);
    }
    Arc::new(Builders {
        h1: builder.clone().http1_only(),
        h2: builder.clone().http2_only(),
        detect: builder,
        first_bytes: limits
            .header_read_timeout
            .unwrap_or(Duration::from_secs(30)),
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

/// Serves one connection on the current runtime until it ends (or the drain is over).
fn spawn_connection<S, B>(
    builders: &Arc<Builders>,
    stream: TcpStream,
    service: S,
    permit: Option<OwnedSemaphorePermit>,
    watcher: Watcher,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builders = builders.clone();
    tokio::spawn(async move {
        let _permit = permit;
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

/// Starts worker thread `i`: a single-threaded runtime serving the connections it is handed
/// until the accept loop drops its sender. Then it drains them, drops `drained` once they have
/// ended (or `finish` turns true first), and keeps running until `finish` turns true: the tasks
/// requests left on its runtime (budget settlements, shadow copies) live as long as every other
/// worker's connections do.
///
/// Each worker has its drain signal of its own. A connection polls it every time it is polled
/// (three times per request), and polling a signal shared by all workers took a lock that every
/// thread wrote to.
fn spawn_worker<F, S, B>(
    i: usize,
    make: F,
    builders: Arc<Builders>,
    drained: mpsc::Sender<()>,
    mut finish: watch::Receiver<bool>,
) -> std::io::Result<(mpsc::UnboundedSender<Handoff>, std::thread::JoinHandle<()>)>
where
    F: Fn() -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Handoff>();
    let thread = std::thread::Builder::new()
        .name(format!("tailor-api-{i}"))
        .spawn(move || {
            crate::forward::client::set_worker(i);
            rt.block_on(async move {
                tokio::spawn(keep_a_timer());
                let graceful = GracefulShutdown::new();
                while let Some((stream, permit)) = rx.recv().await {
                    match TcpStream::from_std(stream) {
                        Ok(s) => spawn_connection(&builders, s, make(), permit, graceful.watcher()),
                        Err(e) => tracing::warn!(error = %e, "worker could not take a connection"),
                    }
                }
                // the listener closed: the open connections finish
                tokio::select! {
                    _ = graceful.shutdown() => {}
                    _ = finish.wait_for(|f| *f) => {}
                }
                drop(drained);
                // returning drops the runtime and whatever it still holds
                let _ = finish.wait_for(|f| *f).await;
            });
        })?;
    Ok((tx, thread))
}

/// Keeps one timer pending on a worker for as long as it runs. Tokio wakes its own event loop
/// (a write to its eventfd) when a timer is armed earlier than the loop's next wake-up, and a loop
/// with no timer has none: so on an idle worker every request's timers (hyper's header read, the
/// upstream's timeouts) cost a system call and a wake-up each. With this timer at most 250 ms
/// ahead, they are later than it, and arming them is a memory write. It also closes the worker's
/// idle upstream connections that expired or were closed, every 10 s.
async fn keep_a_timer() {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        // every 10 s: this worker's idle upstream connections that expired or were closed
        if ticks.is_multiple_of(40) {
            crate::forward::h1::sweep_idle();
        }
    }
}

/// The accept loop of one listener. Each connection is served by `make()`'s service over HTTP/1.1
/// (or HTTP/2 with prior knowledge), with TCP_NODELAY so streamed events leave at once, on
/// `limits.workers` threads of its own (round robin), or on this runtime when that is 0.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    make: F,
    limits: ServeLimits,
) where
    F: Fn() -> S + Clone + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // the connections served on this runtime (no worker threads)
    let graceful = GracefulShutdown::new();
    // each worker drops its `drained` handle once its connections have ended; `finish` ends them
    let (drained_tx, mut drained) = mpsc::channel::<()>(1);
    let (finish, finish_rx) = watch::channel(false);
    let builders = http_builders(&limits, stop.clone());
    let mut workers = Vec::with_capacity(limits.workers);
    let mut threads = Vec::with_capacity(limits.workers);
    for i in 0..limits.workers {
        let (drained, finish) = (drained_tx.clone(), finish_rx.clone());
        match spawn_worker(i, make.clone(), builders.clone(), drained, finish) {
            Ok((tx, t)) => {
                workers.push(tx);
                threads.push(t);
            }
            // no thread could be started: serve here instead
            Err(e) => {
                tracing::warn!(error = %e, worker = i, "could not start an API worker thread")
            }
        }
    }
    let slots = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let mut next = 0usize;
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
                if workers.is_empty() {
                    spawn_connection(&builders, stream, make(), permit, graceful.watcher());
                    continue;
                }
                next = (next + 1) % workers.len();
                match stream.into_std() {
                    Ok(s) => {
                        let _ = workers[next].send((s, permit));
                    }
                    Err(e) => tracing::warn!(error = %e, "could not hand a connection to a worker"),
                }
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    // closing the channels starts each worker's drain
    drop(workers);
    drop(drained_tx);
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
