//! A passthrough request body on its way upstream: streamed, counted against
//! `passthrough.max_body_bytes`, and watched, so the forwarder knows why a request failed (the
//! body outgrew its limit, the client went away) whatever the upstream protocol reports, and when
//! the body ended (the wait for the upstream's answer starts then, not during a long upload).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::body::ReqBody;

/// Why a body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    TooLarge,
    /// The client's connection failed or closed mid-body.
    ClientGone,
}

/// What the forwarder reads about a body while the upstream request runs.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    /// 0: none, 1: too large, 2: client gone.
    failure: AtomicU8,
    /// Milliseconds since `epoch` of the last bytes read.
    last_ms: AtomicU64,
    /// Milliseconds since `epoch` when the body ended, plus one; 0 while it streams.
    ended_ms: AtomicU64,
}

impl Progress {
    fn new(ended: bool) -> Arc<Progress> {
        let p = Progress {
            epoch: Instant::now(),
            failure: AtomicU8::new(0),
            last_ms: AtomicU64::new(0),
            ended_ms: AtomicU64::new(0),
        };
        if ended {
            p.ended_ms.store(1, Ordering::Relaxed);
        }
        Arc::new(p)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn failure(&self) -> Option<Failure> {
        match self.failure.load(Ordering::Relaxed) {
            1 => Some(Failure::TooLarge),
            2 => Some(Failure::ClientGone),
            _ => None,
        }
    }

    /// How long ago the body ended (None: it is still streaming).
    pub fn since_end(&self) -> Option<Duration> {
        match self.ended_ms.load(Ordering::Relaxed) {
            0 => None,
            e => Some(Duration::from_millis(self.now_ms().saturating_sub(e - 1))),
        }
    }

    /// How long since the client last sent bytes of its body.
    pub fn since_bytes(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// A body that was read whole already: ended from the start.
pub fn whole() -> Arc<Progress> {
    Progress::new(true)
}

/// The client's body, streamed within `limit` bytes.
pub struct Upload<B> {
    inner: Pin<Box<B>>,
    seen: u64,
    limit: u64,
    progress: Arc<Progress>,
}

/// The error a failed upload ends with (the upstream request is aborted).
#[derive(Debug, thiserror::Error)]
#[error("the request body {0}")]
pub struct UploadError(&'static str);

impl<B: ReqBody> Upload<B> {
    pub fn new(body: B, limit: u64) -> (Upload<B>, Arc<Progress>) {
        let progress = Progress::new(false);
        let up = Upload {
            inner: Box::pin(body),
            seen: 0,
            limit,
            progress: progress.clone(),
        };
        (up, progress)
    }

    fn fail(&mut self, f: Failure) -> UploadError {
        let code = match f {
            Failure::TooLarge => 1,
            Failure::ClientGone => 2,
        };
        self.progress.failure.store(code, Ordering::Relaxed);
        UploadError(match f {
            Failure::TooLarge => "is larger than passthrough.max_body_bytes",
            Failure::ClientGone => "broke off before its end",
        })
    }
}

impl<B: ReqBody> Body for Upload<B> {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                let p = &this.progress;
                p.ended_ms.store(p.now_ms() + 1, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(this.fail(Failure::ClientGone)))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(this.fail(Failure::TooLarge))));
                    }
                    let p = &this.progress;
                    p.last_ms.store(p.now_ms(), Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn counts_against_the_limit_and_says_why_it_stopped() {
        let (up, p) = Upload::new(Full::new(Bytes::from_static(b"0123456789")), 10);
        assert_eq!(up.collect().await.unwrap().to_bytes().len(), 10);
        assert_eq!(p.failure(), None);
        assert!(p.since_end().is_some());

        let (up, p) = Upload::new(Full::new(Bytes::from_static(b"0123456789")), 9);
        assert!(up.collect().await.is_err());
        assert_eq!(p.failure(), Some(Failure::TooLarge));
        assert!(p.since_end().is_none());

        let (up, p) = Upload::new(Broken(false), 100);
        assert!(up.collect().await.is_err());
        assert_eq!(p.failure(), Some(Failure::ClientGone));
        assert!(whole().since_end().is_some());
    }

    /// Three bytes, then the connection fails.
    struct Broken(bool);

    impl Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(Some(Err(std::io::Error::other("reset"))));
            }
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"abc")))))
        }
    }
}
