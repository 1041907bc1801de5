//! A new connection to an upstream: every address its name resolves to, raced the way RFC 8305
//! ("Happy Eyeballs") describes, all within the upstream's connect timeout.
//!
//! ```text
//! resolve ─▶ order: the resolver's preference, the two address families taking turns
//!   ─▶ try the first ─▶ it failed, or no answer after 250 ms: try the next beside it
//!   ─▶ the first connection made wins (the other attempts are closed)
//! ```
//!
//! An address that never answers (an IPv6 route that drops packets is the usual one) then costs
//! a quarter of a second before a working one is tried, not its share of the connect timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Conn, SendError, Target, READ_BUFFER};

/// How long the latest attempt has before the next address is tried beside it (RFC 8305's
/// "Connection Attempt Delay": 250 ms recommended).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// A new connection, within the connect timeout: TCP_NODELAY (SSE events are not held back)
/// and TCP keep-alive probes after 60 s idle.
pub(super) async fn connect(target: &Target) -> Result<Conn, SendError> {
    let failed = |source| SendError::Connect {
        authority: target.authority.clone(),
        source,
    };
    let raced = async {
        let addrs = tokio::net::lookup_host(&*target.authority).await?;
        race(
            interleave(addrs.collect()),
            ATTEMPT_DELAY,
            &target.authority,
        )
        .await
    };
    let io = match tokio::time::timeout(target.connect_timeout, raced).await {
        Err(_) => return Err(failed(io::ErrorKind::TimedOut.into())),
        Ok(r) => r.map_err(failed)?,
    };
    io.set_nodelay(true).map_err(failed)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    let _ = socket2::SockRef::from(&io).set_tcp_keepalive(&keepalive);
    Ok(Conn {
        io,
        buf: BytesMut::with_capacity(READ_BUFFER),
    })
}

/// The addresses in the resolver's order of preference, with the two families taking turns from
/// the first one's (RFC 8305, section 4): a family that does not work here delays the connection
/// by one attempt delay, not by one per address it has.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first_v6) = addrs.first().map(SocketAddr::is_ipv6) else {
        return addrs;
    };
    let (same, other): (Vec<_>, Vec<_>) = addrs.iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(addrs.len());
    for i in 0..same.len().max(other.len()) {
        out.extend(same.get(i));
        out.extend(other.get(i));
    }
    out
}

/// Connects to the first of `addrs` that accepts. The next address is tried as soon as an
/// attempt fails, or once the latest one has had `delay` without an answer; earlier attempts go
/// on meanwhile. The first connection made wins and the others are dropped (closed). With every
/// address failed: the last error.
async fn race(addrs: Vec<SocketAddr>, delay: Duration, name: &str) -> io::Result<TcpStream> {
    let mut waiting = addrs.into_iter();
    // the connects under way, with their addresses: the first one at once
    let mut running: Vec<_> = waiting.next().map(dial).into_iter().collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    let next_try = tokio::time::sleep(delay);
    tokio::pin!(next_try);
    std::future::poll_fn(|cx| loop {
        let mut failed = false;
        let mut i = 0;
        while let Some((addr, attempt)) = running.get_mut(i) {
            match attempt.as_mut().poll(cx) {
                Poll::Ready(Ok(io)) => {
                    tracing::debug!(upstream = name, %addr, "upstream connection opened");
                    return Poll::Ready(Ok(io));
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(upstream = name, %addr, error = %e, "upstream address failed");
                    last = e;
                    failed = true;
                    drop(running.swap_remove(i));
                }
                Poll::Pending => i += 1,
            }
        }
        if running.is_empty() || failed || next_try.as_mut().poll(cx).is_ready() {
            if let Some(addr) = waiting.next() {
                running.push(dial(addr));
                next_try.as_mut().reset(Instant::now() + delay);
                // poll the new attempt (and the timer, re-armed) before waiting
                continue;
            }
            if running.is_empty() {
                return Poll::Ready(Err(std::mem::replace(
                    &mut last,
                    io::ErrorKind::NotFound.into(),
                )));
            }
        }
        return Poll::Pending;
    })
    .await
}

/// A connect to `addr`, started when first polled.
fn dial(
    addr: SocketAddr,
) -> (
    SocketAddr,
    Pin<Box<impl Future<Output = io::Result<TcpStream>>>>,
) {
    (addr, Box::pin(TcpStream::connect(addr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_families_take_turns_from_the_preferred_one() {
        let (a6, b6, c6) = (addr("[::1]:1"), addr("[::2]:1"), addr("[::3]:1"));
        let (a4, b4) = (addr("10.0.0.1:1"), addr("10.0.0.2:1"));
        assert_eq!(
            interleave(vec![a6, b6, c6, a4, b4]),
            vec![a6, a4, b6, b4, c6]
        );
        assert_eq!(interleave(vec![a4, b4, a6]), vec![a4, a6, b4]);
        assert_eq!(interleave(vec![a4, b4]), vec![a4, b4]);
        assert_eq!(interleave(vec![]), vec![]);
    }

    /// A port that accepts no connection: its accept queue is full, so the kernel drops new SYNs
    /// and a connect waits without an answer (as to an address whose route drops packets).
    fn unanswering() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&addr("127.0.0.1:0").into()).unwrap();
        s.listen(0).unwrap();
        let at = s.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        loop {
            match std::net::TcpStream::connect_timeout(&at, Duration::from_millis(200)) {
                Ok(c) => queued.push(c),
                Err(e) => {
                    assert_eq!(
                        e.kind(),
                        io::ErrorKind::TimedOut,
                        "this network stack does not drop SYNs on a full accept queue"
                    );
                    return (s, queued, at);
                }
            }
            assert!(queued.len() < 64, "the accept queue does not fill");
        }
    }

    /// A port bound but not listening: connects to it are refused (held, so no other socket takes
    /// the port meanwhile).
    fn refused() -> (socket2::Socket, SocketAddr) {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&addr("127.0.0.1:0").into()).unwrap();
        let at = s.local_addr().unwrap().as_socket().unwrap();
        (s, at)
    }

    /// `race`, given at most 5 s: a connect that waits on the kernel's SYN retries would take
    /// minutes.
    async fn race_within(addrs: Vec<SocketAddr>, delay: Duration) -> io::Result<TcpStream> {
        tokio::time::timeout(Duration::from_secs(5), race(addrs, delay, "t"))
            .await
            .expect("the race ends within 5 s")
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_address_that_never_answers_costs_one_attempt_delay() {
        let (_held, _queued, silent) = unanswering();
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = good.local_addr().unwrap();
        let started = Instant::now();
        let io = race_within(vec![silent, to], Duration::from_millis(250))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(io.peer_addr().unwrap(), to);
        // the silent address is still trying when the next one answers (tried in turn, with a
        // share of a 10 s timeout each, this took 5 s)
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_attempt_starts_the_next_without_waiting_for_the_delay() {
        // the silent address runs on; the refused one, tried after one delay, fails at once and
        // the good one starts then, not one more delay later
        let (_held, _queued, silent) = unanswering();
        let (_bound, no) = refused();
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = good.local_addr().unwrap();
        let started = Instant::now();
        let io = race_within(vec![silent, no, to], Duration::from_secs(1))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(io.peer_addr().unwrap(), to);
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_millis(1800), "{took:?}");
    }

    #[tokio::test]
    async fn a_refused_address_hands_over_to_the_next_at_once() {
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = good.local_addr().unwrap();
        let (_a, no) = refused();
        let (_b, no_too) = refused();
        let started = Instant::now();
        let io = race_within(vec![no, to], Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(io.peer_addr().unwrap(), to);
        assert!(started.elapsed() < Duration::from_secs(3), "not the delay");
        // every address refused: the error, not a wait
        let err = race_within(vec![no, no_too], Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let err = race_within(vec![], Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_connect_timeout_bounds_the_whole_race() {
        let (_held, _queued, silent) = unanswering();
        let target =
            Target::new(&format!("http://{silent}/v1"), Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        let connected = tokio::time::timeout(Duration::from_secs(5), connect(&target));
        match connected.await.expect("the connect timeout ends it") {
            Err(SendError::Connect { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::TimedOut)
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
