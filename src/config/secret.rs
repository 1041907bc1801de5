//! An API key that never prints itself.

use std::fmt;

use http::HeaderValue;

/// An API key. Its Debug and Display print `***`, so it cannot end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: String,
    /// `Bearer {key}` and the key alone, as sensitive header values, made once (`None` when the
    /// key cannot be a header value).
    bearer: Option<HeaderValue>,
    plain: Option<HeaderValue>,
}

impl Secret {
    pub fn new(key: String) -> Secret {
        let header = |v: &str| {
            HeaderValue::from_str(v).ok().map(|mut v| {
                v.set_sensitive(true);
                v
            })
        };
        Secret {
            bearer: header(&format!("Bearer {key}")),
            plain: header(&key),
            key,
        }
    }
    /// The key itself.
    pub fn expose(&self) -> &str {
        &self.key
    }
    /// `authorization: Bearer {key}` (OpenAI's header).
    pub fn bearer_header(&self) -> Option<&HeaderValue> {
        self.bearer.as_ref()
    }
    /// The key as a header value (Azure's `api-key`).
    pub fn plain_header(&self) -> Option<&HeaderValue> {
        self.plain.as_ref()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
