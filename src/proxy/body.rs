//! Reading the request body, within `server.max_body_bytes`.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;

use crate::error::ProxyError;

/// Request bodies the proxy accepts: hyper's `Incoming` in production, any body in tests.
pub trait ReqBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}
impl<B> ReqBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// Bodies up to this size are copied out of the connection's read buffer.
const SMALL_BODY: usize = 4096;

/// Reads the request body up to the configured limit.
pub async fn read_body<B: ReqBody>(
    req: B,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(req);
    if declared.is_some_and(|n| n > limit as u64) {
        discard_rest(body).await;
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        // (a `while let` would keep the frame's error type alive across the await below)
        let data = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame.into_data(),
            Some(Err(e)) => {
                return Err(ProxyError::InvalidJson(format!(
                    "could not read the request body: {}",
                    e.into()
                )))
            }
        };
        if let Ok(data) = data {
            total += data.len();
            if total > limit {
                discard_rest(body).await;
                return Err(ProxyError::BodyTooLarge { limit });
            }
            chunks.push(data);
        }
    }
    // a small body is copied so that it does not pin the connection's read buffer (8 KiB or
    // more) while its answer streams; a large one in one frame (the usual case) is not
    Ok(match chunks.len() {
        1 if total > SMALL_BODY => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Reads and drops the rest of a rejected body (up to 64 MiB, for up to 2 s) so the client gets
/// to read the 413 instead of a connection reset: closing a socket with unread bytes sends RST.
pub(super) async fn discard_rest<B: ReqBody>(mut body: std::pin::Pin<&mut B>) {
    let drain = async {
        let mut left = 64usize << 20;
        loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => frame.into_data(),
                _ => break,
            };
            if let Ok(d) = data {
                left = left.saturating_sub(d.len());
                if left == 0 {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
