//! Configuration: `routes.yaml` parsed strictly ([`raw`]), validated once ([`build`], [`route`]),
//! and turned into the runtime [`Config`] ([`types`]) that the request path reads. Runtime types
//! hold resolved indices, compiled regexes and integer prices; nothing "not resolved yet" survives
//! validation. A reload builds a whole new `Config` the same way, or keeps the old one.
//!
//! - [`raw`]: serde structs with `deny_unknown_fields`, exactly as the file is written.
//! - [`build`]: `Config::load` / `from_yaml`; server, upstreams, models, clients.
//! - [`route`]: routes, their match conditions, arms, prompts, shadow and capture.
//! - [`telemetry`]: `telemetry:`, where request spans are exported.
//! - [`types`]: the validated runtime types. [`secret`]: keys that never print.
//! - [`error`]: `ConfigError`, always with the key path.

mod build;
mod error;
mod limits;
pub mod raw;
mod route;
mod secret;
mod telemetry;
#[cfg(test)]
mod tests;
mod types;

pub use error::ConfigError;
pub use secret::Secret;
pub use types::*;
