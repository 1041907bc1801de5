//! The API's listening sockets: one for each worker thread.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The API's listening socket. With more than one worker on Linux it is an `SO_REUSEPORT` socket,
/// so that every other worker binds one of its own to the same address ([`worker_listener`]).
///
/// A plain bind comes first (without listening): a port another program listens on is an error,
/// as it is without workers, another tailor's included, which would otherwise join the group and
/// take a share of the connections. Two tailors started in the same instant could both pass it.
/// Once tailor listens, a program of the same user that sets `SO_REUSEPORT` itself can still join
/// (the kernel's rule for the option).
pub(super) async fn bind_api(addr: SocketAddr, workers: usize) -> std::io::Result<TcpListener> {
    #[cfg(target_os = "linux")]
    if workers > 1 {
        // port 0: the plain bind picks a free port, which is then bound again at once; a program
        // that takes it in between makes that fail, and another port is tried
        let mut tries = 0;
        loop {
            let at = plain_bind(addr)?;
            match reuseport_listener(at) {
                Ok(l) => return TcpListener::from_std(l),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && addr.port() == 0
                        && tries < 3 =>
                {
                    tries += 1
                }
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = workers; // copies of one socket: nothing to bind per worker
    TcpListener::bind(addr).await
}

/// Binds a socket to `addr` as a listener would be (`SO_REUSEADDR`, so that a restart is not
/// refused for its last connections), without listening, and closes it: the address it got.
#[cfg(target_os = "linux")]
fn plain_bind(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP address"))
}

/// A listening `SO_REUSEPORT` socket on `at`, set as tokio sets its own (`SO_REUSEADDR`,
/// non-blocking, a backlog of 1,024).
#[cfg(target_os = "linux")]
fn reuseport_listener(at: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&at.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// A listening socket for one more worker: another `SO_REUSEPORT` socket on `first`'s address
/// when `first` is one (the kernel spreads new connections among them), else a copy of `first`
/// (every worker is woken by a new connection, and one of them gets it).
pub(super) fn worker_listener(
    first: &std::net::TcpListener,
) -> std::io::Result<std::net::TcpListener> {
    #[cfg(target_os = "linux")]
    if socket2::SockRef::from(first).reuse_port()? {
        return reuseport_listener(first.local_addr()?);
    }
    first.try_clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_refused_with_workers_too() {
        let first = bind_api("127.0.0.1:0".parse().unwrap(), 2).await.unwrap();
        let addr = first.local_addr().unwrap();
        // another tailor, with workers or without, and any other program
        for workers in [2, 1] {
            let again = bind_api(addr, workers).await.map(|_| ());
            assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        }
        assert_eq!(
            std::net::TcpListener::bind(addr).unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse
        );
        // and the workers' own sockets join it
        let std_first = first.into_std().unwrap();
        let second = worker_listener(&std_first).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }
}
