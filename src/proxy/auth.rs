//! Before anything is read: the header limits and the client's key.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::config::Config;
use crate::error::ProxyError;

/// Header count and size against the configured limits.
pub fn headers_within(headers: &HeaderMap, cfg: &Config) -> Result<(), ProxyError> {
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > cfg.server.max_header_count || bytes > cfg.server.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            count: cfg.server.max_header_count,
            bytes: cfg.server.max_header_bytes,
        });
    }
    Ok(())
}

/// Which client a request's key belongs to: `Some(index)`, or `None` for a missing or wrong
/// key (index 0 is the anonymous client when no `clients:` are configured). Every configured hash
/// is compared, each in constant time, so the time taken says nothing about which key, or how
/// much of one, matched.
pub fn authenticate(cfg: &Config, headers: &HeaderMap) -> Option<usize> {
    use sha2::{Digest, Sha256};
    if cfg.clients.is_empty() {
        return Some(0);
    }
    let key = headers
        .get(AUTHORIZATION)?
        .as_bytes()
        .strip_prefix(b"Bearer ")?;
    let digest: [u8; 32] = Sha256::digest(key).into();
    let mut found = None;
    for (i, c) in cfg.clients.iter().enumerate() {
        let diff = c
            .key_sha256
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(i);
        }
    }
    found
}
