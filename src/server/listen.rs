//! The API's listening sockets: one for each worker thread.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The API's listening socket. With more than one worker on Linux it is an `SO_REUSEPORT` socket,
/// so that every other worker binds one of its own to the same address ([`worker_listener`]).
/// A plain bind comes first: a port another program listens on (another tailor too, which would
/// otherwise join the group and take a share of the connections) is an error, as it is without
/// workers.
pub(super) async fn bind_api(addr: SocketAddr, workers: usize) -> std::io::Result<TcpListener> {
    #[cfg(target_os = "linux")]
    if workers > 1 {
        // port 0: the plain bind picks a free port, which is then bound again at once; a program
        // that takes it in between makes that fail, and another port is tried
        let mut tries = 0;
        loop {
            let at = std::net::TcpListener::bind(addr)?.local_addr()?;
            match reuseport_listener(at) {
                Ok(l) => return TcpListener::from_std(l),
                Err(_) if addr.port() == 0 && tries < 3 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
    TcpListener::bind(addr).await
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
