//! Why a config was rejected: every error names the key path it is about.

/// Why a config was rejected; `path` is the key path, e.g. `routes[2].split[0].wieght`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

pub(super) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Route and model names appear as metric label values and in headers: keep them plain.
pub(super) fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("`{name}` must be 1-64 characters of letters, digits, `-`, `_`, `.`, `:`"),
        ))
    }
}
