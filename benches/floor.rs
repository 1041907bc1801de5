//! The floor under tailor: what a proxy built on the same parts costs when it does nothing else.
//! hyper's HTTP/1 server, one current-thread tokio runtime and one `SO_REUSEPORT` listener per
//! CPU (as tailor's workers), and the least a client can do: one keep-alive upstream connection
//! per client connection, the request head written by hand, the answer's head read with httparse
//! and its body by its `Content-Length`. No routing, metering, request id or log. Measured against
//! nginx and tailor by hand (benches/RESULTS.md, round 18), not by `cargo bench`:
//!
//! `cargo bench --bench floor --no-run`, then run the executable it names with
//! `LISTEN UPSTREAM` (`127.0.0.1:18121 127.0.0.1:18081`): it serves until stopped. Without two
//! addresses (as `cargo bench` runs it) it prints this usage and exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measuring stick, not a product

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addrs: Vec<SocketAddr> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [listen, upstream] = addrs[..] else {
        eprintln!("floor: LISTEN UPSTREAM (two socket addresses): serves until stopped");
        return;
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn worker(listen: SocketAddr, upstream: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&listen.into()).unwrap();
        s.listen(1024).unwrap();
        s.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(s.into()).unwrap();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let up = Arc::new(tokio::sync::Mutex::new(None));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let up = up.clone();
                    async move {
                        let mut conn = up.lock().await;
                        let resp = exchange(&mut conn, upstream, req)
                            .await
                            .unwrap_or_else(|_| {
                                *conn = None;
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                                r
                            });
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

/// One request over this client connection's upstream connection (opened on first use).
async fn exchange(
    conn: &mut Option<(TcpStream, BytesMut)>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> std::io::Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    if conn.is_none() {
        let s = TcpStream::connect(upstream).await?;
        s.set_nodelay(true)?;
        *conn = Some((s, BytesMut::with_capacity(4096)));
    }
    let (s, buf) = conn.as_mut().unwrap();
    let mut head = Vec::with_capacity(256 + body.len());
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(parts.uri.path().as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: upstream\r\n");
    for (k, v) in &parts.headers {
        if k != http::header::HOST && k != http::header::CONNECTION {
            head.extend_from_slice(k.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&body);
    s.write_all(&head).await?;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = r.parse(buf).map_err(std::io::Error::other)? {
            let mut resp = Response::builder().status(r.code.unwrap_or(502));
            let mut len = 0;
            for h in r.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    len = std::str::from_utf8(h.value)
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                } else if !h.name.eq_ignore_ascii_case("connection") {
                    resp = resp.header(
                        HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                        HeaderValue::from_bytes(h.value).unwrap(),
                    );
                }
            }
            while buf.len() < n + len {
                if s.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            let _ = buf.split_to(n);
            return Ok(resp.body(Full::new(buf.split_to(len).freeze())).unwrap());
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}
