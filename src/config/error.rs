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
    /// Several independent problems (a config is checked whole, so one run names them all).
    #[error("{} problems:{}", .0.len(), list(.0))]
    Problems(Vec<ConfigError>),
}

fn list(problems: &[ConfigError]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

impl ConfigError {
    /// One error for what was found: the problem itself when there is one.
    pub(super) fn from_problems(mut problems: Vec<ConfigError>) -> ConfigError {
        match problems.len() {
            1 => problems.remove(0),
            _ => ConfigError::Problems(problems),
        }
    }
}

/// Problems found while validating: each step notes its own and the checks go on, so a config
/// with three mistakes is rejected with all three.
#[derive(Default)]
pub(super) struct Problems(Vec<ConfigError>);

impl Problems {
    pub fn push(&mut self, e: ConfigError) {
        match e {
            ConfigError::Problems(many) => self.0.extend(many),
            e => self.0.push(e),
        }
    }

    /// `r`'s value, or `None` with its error noted.
    pub fn take<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    /// `r`'s value, or `fallback` with its error noted (the config is rejected anyway; the
    /// fallback only lets the other checks run).
    pub fn or<T>(&mut self, r: Result<T, ConfigError>, fallback: T) -> T {
        self.take(r).unwrap_or(fallback)
    }

    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::from_problems(self.0))
        }
    }
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
