//! The API's worker threads. Each runs a single-threaded runtime with its own upstream pools
//! (nginx's worker model) and accepts its connections itself (`listen`: on Linux a socket of its
//! own, elsewhere a copy of one socket), so that a request, its upstream connection and its timers
//! never leave that thread. A worker that serves clearly more connections than another hands a
//! new one over ([`Spread`]).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::connection::{spawn_connection, Builders, ConnectionService};
use super::listen::worker_listener;
use super::spread::{Open, Spread};

/// What an open connection holds until it ends (both given back when dropped): its place under
/// `server.max_connections`, and in its worker's count of open connections.
struct Held {
    slot: Option<OwnedSemaphorePermit>,
    _open: Option<Open>,
}

/// A connection handed to another worker, with what it holds.
type Handoff = (std::net::TcpStream, Held);

/// What an accept loop needs: the service, the connection limit, the protocols, the stop signal.
#[derive(Clone)]
pub(super) struct Accept<F> {
    pub make: F,
    pub builders: Arc<Builders>,
    /// Open connections at most (shared by all the listener's accept loops).
    pub slots: Option<Arc<Semaphore>>,
    pub stop: watch::Receiver<bool>,
}

/// A worker's place among the others: its number, the counts, the way to hand each worker a
/// connection, and the connections handed to it.
pub(super) struct Worker {
    me: usize,
    spread: Arc<Spread>,
    to: Arc<[mpsc::UnboundedSender<Handoff>]>,
    handed: mpsc::UnboundedReceiver<Handoff>,
}

impl<F> Accept<F> {
    /// Accepts connections on `listener` (and, on a worker, takes those other workers hand it)
    /// and serves each on this runtime, with TCP_NODELAY so streamed events leave at once, until
    /// the stop signal; a connection over the limit is closed at once. Returns (dropping the
    /// listener, and the connections handed to it and not yet taken) when stopped: like those
    /// still in the listen queue, or accepted and not yet read, they are closed unanswered, as a
    /// draining hyper server closes a connection that has not started a request.
    pub(super) async fn run<S>(
        self,
        listener: TcpListener,
        graceful: &GracefulShutdown,
        mut worker: Option<Worker>,
    ) where
        F: Fn() -> S,
        S: ConnectionService,
    {
        let mut stop = self.stop.clone();
        let stopped = stop.wait_for(|stopped| *stopped);
        tokio::pin!(stopped);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut stopped => break,
                Some((stream, held)) = handed(&mut worker) => {
                    self.take(stream, held, graceful);
                    continue;
                }
                accepted = listener.accept() => accepted,
            };
            let (stream, _peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // out of file descriptors and the like: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match &self.slots {
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
            match &worker {
                Some(w) => self.place(w, stream, slot, graceful),
                None => self.serve(stream, Held { slot, _open: None }, graceful),
            }
        }
    }

    /// Serves a connection worker `w` accepted: there, or on the least busy worker when `w`
    /// serves clearly more ([`Spread::pick`]), or there after all when that one is gone.
    fn place<S>(
        &self,
        w: &Worker,
        stream: TcpStream,
        slot: Option<OwnedSemaphorePermit>,
        graceful: &GracefulShutdown,
    ) where
        F: Fn() -> S,
        S: ConnectionService,
    {
        let to = w.spread.pick(w.me);
        let held = Held {
            slot,
            _open: Some(w.spread.count(to)),
        };
        let tx = match w.to.get(to) {
            Some(tx) if to != w.me => tx,
            _ => return self.serve(stream, held, graceful),
        };
        let handoff = match stream.into_std() {
            Ok(s) => (s, held),
            Err(e) => return tracing::warn!(error = %e, "could not hand a connection to a worker"),
        };
        if let Err(mpsc::error::SendError((stream, held))) = tx.send(handoff) {
            // that worker stopped (or never listened): served here, counted here
            let held = Held {
                slot: held.slot,
                _open: Some(w.spread.count(w.me)),
            };
            self.take(stream, held, graceful);
        }
    }

    /// Serves a connection that came as a std socket (handed over).
    fn take<S>(&self, stream: std::net::TcpStream, held: Held, graceful: &GracefulShutdown)
    where
        F: Fn() -> S,
        S: ConnectionService,
    {
        match TcpStream::from_std(stream) {
            Ok(s) => self.serve(s, held, graceful),
            Err(e) => tracing::warn!(error = %e, "worker could not take a connection"),
        }
    }

    /// Serves `stream` on this runtime.
    fn serve<S>(&self, stream: TcpStream, held: Held, graceful: &GracefulShutdown)
    where
        F: Fn() -> S,
        S: ConnectionService,
    {
        spawn_connection(
            &self.builders,
            stream,
            (self.make)(),
            held,
            graceful.watcher(),
        );
    }
}

/// The next connection another worker handed to this one (never, off the workers).
async fn handed(worker: &mut Option<Worker>) -> Option<Handoff> {
    match worker {
        Some(w) => w.handed.recv().await,
        None => std::future::pending().await,
    }
}

/// Starts `n` worker threads, the first accepting on `listener`, each other one on a listener of
/// its own. Each drops its `drained` handle once its connections have ended, and ends when
/// `finish` turns true. Returns their handles, and the listener to accept on here when none
/// started (`n` is 0, or no thread could be started).
pub(super) fn start_workers<F, S>(
    listener: TcpListener,
    accept: &Accept<F>,
    n: usize,
    drained: &mpsc::Sender<()>,
    finish: &watch::Receiver<bool>,
) -> (Vec<std::thread::JoinHandle<()>>, Option<TcpListener>)
where
    F: Fn() -> S + Clone + Send + 'static,
    S: ConnectionService,
{
    if n == 0 {
        return (Vec::new(), Some(listener));
    }
    let first = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the API listener could not be handed to its workers: no API connection will be served");
            return (Vec::new(), None);
        }
    };
    // a copy of the first socket, kept until a worker runs: if none can start, it is accepted on
    // here; else it is closed, and no socket is left open that nobody accepts on
    let spare = first.try_clone();
    let mut listeners = Vec::with_capacity(n);
    for _ in 1..n {
        match worker_listener(&first) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                tracing::warn!(error = %e, "could not open a listener for an API worker: fewer workers");
                break;
            }
        }
    }
    listeners.insert(0, first);
    let spread = Arc::new(Spread::new(listeners.len()));
    let (to, handed): (Vec<_>, Vec<_>) = listeners
        .iter()
        .map(|_| mpsc::unbounded_channel::<Handoff>())
        .unzip();
    let to: Arc<[_]> = to.into();
    let mut threads = Vec::with_capacity(listeners.len());
    for (me, (l, handed)) in listeners.into_iter().zip(handed).enumerate() {
        let worker = Worker {
            me,
            spread: spread.clone(),
            to: to.clone(),
            handed,
        };
        let (accept, drained, finish) = (accept.clone(), drained.clone(), finish.clone());
        match spawn_worker(me, l, accept, worker, drained, finish) {
            Ok(t) => threads.push(t),
            Err(e) => {
                tracing::warn!(error = %e, worker = me, "could not start an API worker thread")
            }
        }
    }
    if !threads.is_empty() {
        return (threads, None);
    }
    match spare.and_then(TcpListener::from_std) {
        Ok(l) => (threads, Some(l)),
        Err(e) => {
            tracing::error!(error = %e, "no API worker started and the listener is gone: no API connection will be served");
            (threads, None)
        }
    }
}

/// A worker's runtime until its thread runs it. Dropped unstarted (the thread could not be
/// spawned), it shuts down without waiting: a runtime dropped in an async context otherwise
/// panics.
struct Unstarted(Option<tokio::runtime::Runtime>);

impl Drop for Unstarted {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts worker thread `i`: a single-threaded runtime that accepts connections on `listener`
/// (and takes those handed to it) until the stop signal. Then it drains them, drops `drained` once
/// they have ended (or `finish` turns true first), and keeps running until `finish` turns true:
/// the tasks requests left on its runtime (budget settlements, shadow copies) live as long as
/// every other worker's connections do.
///
/// Each worker has its drain signal of its own. A connection polls it every time it is polled
/// (three times per request), and polling a signal shared by all workers took a lock that every
/// thread wrote to.
fn spawn_worker<F, S>(
    i: usize,
    listener: std::net::TcpListener,
    accept: Accept<F>,
    worker: Worker,
    drained: mpsc::Sender<()>,
    mut finish: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: Fn() -> S + Send + 'static,
    S: ConnectionService,
{
    let mut rt = Unstarted(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    ));
    std::thread::Builder::new()
        .name(format!("tailor-api-{i}"))
        .spawn(move || {
            let Some(rt) = rt.0.take() else { return };
            crate::forward::client::set_worker(i);
            rt.block_on(async move {
                tokio::spawn(keep_a_timer());
                let graceful = GracefulShutdown::new();
                match TcpListener::from_std(listener) {
                    Ok(l) => accept.run(l, &graceful, Some(worker)).await,
                    Err(e) => {
                        // closed at once: the others see it gone and serve what they accept
                        drop(worker);
                        tracing::error!(error = %e, worker = i, "an API worker could not listen");
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
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::connection::http_builders;
    use crate::server::{serve, ServeLimits};
    use http::{Request, Response};
    use hyper::body::Incoming;
    use hyper::service::Service;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";

    /// A service answering with the name of the thread that served it.
    fn thread_name_service() -> impl Service<
        Request<Incoming>,
        Response = Response<http_body_util::Full<bytes::Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Send {
        hyper::service::service_fn(|_req| async {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                bytes::Bytes::from(format!("{name}<end>")),
            )))
        })
    }

    /// Which worker thread served a GET on `conn` (kept alive).
    async fn served_by(conn: &mut TcpStream) -> String {
        conn.write_all(GET).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"<end>") {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("an answer within 5 s")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        body.trim_end_matches("<end>").to_owned()
    }

    /// Worker 0 of two, running the accept loop here until `stop` turns true, with `open`
    /// connections counted on each worker (held by the returned guards): its address, the counts,
    /// and worker 1's receiving end (dropped unless `worker_1_runs`).
    struct Setup {
        addr: std::net::SocketAddr,
        spread: Arc<Spread>,
        busy: Vec<Open>,
        handed_1: Option<mpsc::UnboundedReceiver<Handoff>>,
    }

    async fn worker_0(open: [usize; 2], stop: watch::Receiver<bool>, worker_1_runs: bool) -> Setup {
        let spread = Arc::new(Spread::new(2));
        let busy = (0..2)
            .flat_map(|w| (0..open[w]).map(move |_| w))
            .map(|w| spread.count(w))
            .collect();
        let (to_0, handed_0) = mpsc::unbounded_channel();
        let (to_1, handed_1) = mpsc::unbounded_channel();
        let accept = Accept {
            make: thread_name_service,
            builders: http_builders(None, stop.clone()),
            slots: None,
            stop,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = Worker {
            me: 0,
            spread: spread.clone(),
            to: vec![to_0, to_1].into(),
            handed: handed_0,
        };
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            accept.run(listener, &graceful, Some(worker)).await;
            graceful.shutdown().await;
        });
        Setup {
            addr,
            spread,
            busy,
            handed_1: worker_1_runs.then_some(handed_1),
        }
    }

    /// This test's thread: where worker 0 runs.
    fn here() -> String {
        std::thread::current().name().unwrap_or("?").to_owned()
    }

    #[tokio::test]
    async fn a_busy_worker_hands_a_new_connection_to_the_least_busy() {
        let (_stop, stopped) = watch::channel(false);
        let mut s = worker_0([3, 0], stopped, true).await;
        let mut handed_1 = s.handed_1.take().unwrap();
        let first = TcpStream::connect(s.addr).await.unwrap();
        let handed = tokio::time::timeout(Duration::from_secs(5), handed_1.recv()).await;
        let (stream, held) = handed.ok().flatten().expect("handed to worker 1");
        assert_eq!(stream.peer_addr().unwrap(), first.local_addr().unwrap());
        assert_eq!(
            (s.spread.open(0), s.spread.open(1)),
            (3, 1),
            "counted on worker 1"
        );
        drop(held);
        assert_eq!(s.spread.open(1), 0);
        // its three connections ended: worker 0 serves the next one itself
        s.busy.clear();
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(served_by(&mut c).await, here());
        assert_eq!((s.spread.open(0), s.spread.open(1)), (1, 0));
        assert!(handed_1.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_connection_for_a_worker_that_stopped_is_served_where_it_was_accepted() {
        let (_stop, stopped) = watch::channel(false);
        let s = worker_0([3, 0], stopped, false).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(served_by(&mut c).await, here());
        assert_eq!((s.spread.open(0), s.spread.open(1)), (4, 0));
    }

    #[tokio::test]
    async fn long_lived_connections_end_up_even_across_the_workers() {
        let listener = crate::server::listen::bind_api("127.0.0.1:0".parse().unwrap(), 2)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let limits = ServeLimits {
            workers: 2,
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        let served = tokio::spawn(serve(listener, stopped, thread_name_service, limits));
        // kept open all along: the kernel's hash alone splits 16 of them unevenly often enough
        let mut conns = Vec::new();
        for _ in 0..16 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let by = served_by(&mut c).await;
            conns.push((c, by));
        }
        let mut by = std::collections::BTreeMap::<&str, usize>::new();
        for (_, w) in &conns {
            *by.entry(w.as_str()).or_default() += 1;
        }
        assert_eq!(by.len(), 2, "both workers serve: {by:?}");
        assert!(by.keys().all(|k| k.starts_with("tailor-api-")), "{by:?}");
        let (most, least) = (by.values().max().unwrap(), by.values().min().unwrap());
        assert!(most - least <= 2, "even within two: {by:?}");
        // every connection stays with the worker that served it first
        for (c, first) in &mut conns {
            assert_eq!(&served_by(c).await, first);
        }
        drop(conns);
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the drain ends")
            .unwrap();
        // the port is closed once the workers stopped
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
