//! The API's worker threads. Each runs a single-threaded runtime with its own upstream pools
//! (nginx's worker model) and accepts its connections itself, on a listening socket of its own
//! (`listen`), so that a request, its upstream connection and its timers never leave that thread.
//!
//! Which worker gets a new connection: on Linux the kernel picks among the workers'
//! `SO_REUSEPORT` sockets by a hash of the connection's addresses, which can leave a few
//! long-lived connections uneven (64 of them split 40 to 24 in a run). So a worker that accepts a
//! connection while it serves clearly more than the least busy one hands it over ([`Spread`]);
//! most connections are served where they were accepted, without waking another thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::connection::{spawn_connection, Builders, ConnectionService, Held};
use super::listen::worker_listener;

/// A connection handed to another worker, with what it holds.
type Handoff = (std::net::TcpStream, Held<Open>);

/// The workers' counts of open connections, and the way to hand one a connection.
pub(super) struct Spread {
    open: Box<[Count]>,
    to: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// One worker's count, on a cache line of its own: each worker writes its own at every
/// connection's start and end.
#[derive(Default)]
#[repr(align(64))]
struct Count(AtomicUsize);

/// A connection counted as open on a worker, until dropped.
pub(super) struct Open {
    spread: Arc<Spread>,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(c) = self.spread.open.get(self.worker) {
            c.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Spread {
    fn open(&self, worker: usize) -> usize {
        self.open
            .get(worker)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }

    /// Where worker `me` serves a connection it accepted: itself, unless it serves at least two
    /// more than the least busy worker, and an eighth more (then that one).
    fn pick(&self, me: usize) -> usize {
        let mine = self.open(me);
        let least = (0..self.open.len()).min_by_key(|&w| self.open(w));
        match least {
            Some(w) if mine >= self.open(w) + 2 + self.open(w) / 8 => w,
            _ => me,
        }
    }

    /// Counts a connection as open on `worker`.
    fn count(self: &Arc<Self>, worker: usize) -> Open {
        if let Some(c) = self.open.get(worker) {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
        Open {
            spread: Arc::clone(self),
            worker,
        }
    }
}

/// What an accept loop needs: the service, the connection limit, the protocols, the stop signal.
#[derive(Clone)]
pub(super) struct Accept<F> {
    pub make: F,
    pub builders: Arc<Builders>,
    /// Open connections at most (shared by all the listener's accept loops).
    pub slots: Option<Arc<Semaphore>>,
    pub stop: watch::Receiver<bool>,
}

/// A worker's place among the others: its number, the counts, and the connections handed to it.
pub(super) struct Worker {
    me: usize,
    spread: Arc<Spread>,
    handed: mpsc::UnboundedReceiver<Handoff>,
}

impl<F> Accept<F> {
    /// Accepts connections on `listener` (and, on a worker, takes those other workers hand it)
    /// and serves each on this runtime, with TCP_NODELAY so streamed events leave at once, until
    /// the stop signal; a connection over the limit is closed at once. Returns (dropping the
    /// listener) when stopped.
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
                accepted = listener.accept() => accepted,
                Some((stream, held)) = handed(&mut worker) => {
                    match TcpStream::from_std(stream) {
                        Ok(s) => self.serve(s, held, graceful),
                        Err(e) => tracing::warn!(error = %e, "worker could not take a connection"),
                    }
                    continue;
                }
                _ = &mut stopped => return,
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
            let Some(w) = &worker else {
                self.serve(stream, Held { slot, _open: None }, graceful);
                continue;
            };
            let to = w.spread.pick(w.me);
            let held = Held {
                slot,
                _open: Some(w.spread.count(to)),
            };
            if to == w.me {
                self.serve(stream, held, graceful);
                continue;
            }
            let handoff = stream.into_std().map(|s| (s, held));
            let sent = match (handoff, w.spread.to.get(to)) {
                (Ok(h), Some(tx)) => tx.send(h).map_err(|e| e.0),
                (Ok(h), None) => Err(h),
                (Err(e), _) => {
                    tracing::warn!(error = %e, "could not hand a connection to a worker");
                    continue;
                }
            };
            // that worker is gone: served here after all
            if let Err((stream, held)) = sent {
                if let Ok(s) = TcpStream::from_std(stream) {
                    let held = Held {
                        slot: held.slot,
                        _open: Some(w.spread.count(w.me)),
                    };
                    self.serve(s, held, graceful);
                }
            }
        }
    }

    /// Serves `stream` on this runtime.
    fn serve<S>(&self, stream: TcpStream, held: Held<Open>, graceful: &GracefulShutdown)
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
            tracing::warn!(error = %e, "could not hand the listener to the API workers");
            return (Vec::new(), None);
        }
    };
    // a copy of the first socket, kept until a worker runs: if none can start, it is accepted on
    // here; else it is closed, and no socket is left open that nobody accepts on
    let spare = first.try_clone().ok();
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
    let (to, handed): (Vec<_>, Vec<_>) = listeners
        .iter()
        .map(|_| mpsc::unbounded_channel::<Handoff>())
        .unzip();
    let spread = Arc::new(Spread {
        open: listeners.iter().map(|_| Count::default()).collect(),
        to: to.into(),
    });
    let mut threads = Vec::with_capacity(listeners.len());
    for (me, (l, handed)) in listeners.into_iter().zip(handed).enumerate() {
        let worker = Worker {
            me,
            spread: spread.clone(),
            handed,
        };
        match spawn_worker(
            me,
            l,
            accept.clone(),
            worker,
            drained.clone(),
            finish.clone(),
        ) {
            Ok(t) => threads.push(t),
            Err(e) => {
                tracing::warn!(error = %e, worker = me, "could not start an API worker thread")
            }
        }
    }
    let here = match spare {
        Some(s) if threads.is_empty() => TcpListener::from_std(s).ok(),
        _ => None,
    };
    (threads, here)
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("tailor-api-{i}"))
        .spawn(move || {
            crate::forward::client::set_worker(i);
            rt.block_on(async move {
                tokio::spawn(keep_a_timer());
                let graceful = GracefulShutdown::new();
                match TcpListener::from_std(listener) {
                    Ok(l) => accept.run(l, &graceful, Some(worker)).await,
                    Err(e) => tracing::warn!(error = %e, worker = i, "worker could not listen"),
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
    use crate::server::{serve, ServeLimits};
    use http::{Request, Response};
    use hyper::body::Incoming;
    use hyper::service::Service;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn spread(open: &[usize]) -> Spread {
        Spread {
            open: open.iter().map(|&n| Count(AtomicUsize::new(n))).collect(),
            to: Box::new([]),
        }
    }

    #[test]
    fn a_worker_keeps_what_it_accepts_unless_it_serves_clearly_more() {
        // even, or one more: kept
        assert_eq!(spread(&[0, 0]).pick(0), 0);
        assert_eq!(spread(&[5, 4]).pick(0), 0);
        // two more: handed to the least busy
        assert_eq!(spread(&[6, 4]).pick(0), 1);
        assert_eq!(spread(&[3, 9, 1]).pick(1), 2);
        // an eighth of slack on large counts
        assert_eq!(spread(&[37, 32]).pick(0), 0);
        assert_eq!(spread(&[38, 32]).pick(0), 1);
        // the least busy worker keeps its own
        assert_eq!(spread(&[0, 50]).pick(0), 0);
    }

    #[test]
    fn a_counted_connection_is_uncounted_when_it_ends() {
        let s = Arc::new(spread(&[0, 0]));
        let a = s.count(1);
        let b = s.count(1);
        assert_eq!((s.open(0), s.open(1)), (0, 2));
        drop(a);
        assert_eq!(s.open(1), 1);
        drop(b);
        assert_eq!(s.open(1), 0);
    }

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

    #[tokio::test]
    async fn a_busy_worker_hands_a_new_connection_to_the_least_busy() {
        let (to0, handed0) = mpsc::unbounded_channel();
        let (to1, mut handed1) = mpsc::unbounded_channel();
        // worker 0 serves three connections, worker 1 none
        let spread = Arc::new(Spread {
            open: vec![Count(AtomicUsize::new(3)), Count::default()].into(),
            to: vec![to0, to1].into(),
        });
        let (_stop, stopped) = watch::channel(false);
        let accept = Accept {
            make: thread_name_service,
            builders: super::super::connection::http_builders(None, stopped.clone()),
            slots: None,
            stop: stopped,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = Worker {
            me: 0,
            spread: spread.clone(),
            handed: handed0,
        };
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            accept.run(listener, &graceful, Some(worker)).await;
        });
        let first = TcpStream::connect(addr).await.unwrap();
        let handed = tokio::time::timeout(Duration::from_secs(5), handed1.recv()).await;
        let (stream, held) = handed.ok().flatten().expect("handed to worker 1");
        assert_eq!(stream.peer_addr().unwrap(), first.local_addr().unwrap());
        assert_eq!(
            (spread.open(0), spread.open(1)),
            (3, 1),
            "counted on worker 1"
        );
        drop(held);
        assert_eq!(spread.open(1), 0);
        // no longer busy: worker 0 serves the next one itself
        spread.open[0].0.store(0, Ordering::Relaxed);
        let mut c = TcpStream::connect(addr).await.unwrap();
        // served here, on the test's own thread
        let here = std::thread::current().name().unwrap_or("?").to_owned();
        assert_eq!(served_by(&mut c).await, here);
        assert_eq!((spread.open(0), spread.open(1)), (1, 0));
        assert!(handed1.try_recv().is_err());
    }

    /// Which worker thread served a request on `conn`: a keep-alive GET answered with its name.
    async fn served_by(conn: &mut TcpStream) -> String {
        conn.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"<end>") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        body.trim_end_matches("<end>").to_owned()
    }

    #[tokio::test]
    async fn long_lived_connections_end_up_even_across_the_workers() {
        let listener = crate::server::listen::bind_api("127.0.0.1:0".parse().unwrap(), 2)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        // on Linux each worker has a socket of its own on the port, and a plain bind is refused
        #[cfg(target_os = "linux")]
        assert_eq!(
            std::net::TcpListener::bind(addr).unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse
        );
        let (stop, stopped) = watch::channel(false);
        let make = thread_name_service;
        let limits = ServeLimits {
            workers: 2,
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        let served = tokio::spawn(serve(listener, stopped, make, limits));
        // kept open all along: the kernel's hash alone splits 16 of them unevenly often enough
        let mut conns = Vec::new();
        let mut by = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..16 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            *by.entry(served_by(&mut c).await).or_default() += 1;
            conns.push(c);
        }
        let counts: Vec<usize> = by.values().copied().collect();
        assert_eq!(by.len(), 2, "both workers serve: {by:?}");
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 2,
            "even within two: {by:?}"
        );
        assert!(by.keys().all(|k| k.starts_with("tailor-api-")), "{by:?}");
        // every connection is still served by the worker it went to
        for c in &mut conns {
            assert!(served_by(c).await.starts_with("tailor-api-"));
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
