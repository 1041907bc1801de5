//! Configuration: `routes.yaml` parsed strictly ([`raw`]), validated once ([`build`], [`route`]),
//! and turned into the runtime [`Config`] ([`types`]) that the request path reads. Runtime types
//! hold resolved indices, compiled regexes and integer prices; nothing "not resolved yet" survives
//! validation. A reload builds a whole new `Config` the same way, or keeps the old one.
//!
//! - [`raw`]: serde structs with `deny_unknown_fields`, exactly as the file is written.
//! - [`parse`]: YAML → raw structs, naming every problem (serde alone stops at the first).
//! - [`build`]: `Config::load` / `from_yaml`; upstreams, models, clients; every problem noted.
//! - [`server`]: `server:` and the defaults of timeouts and retries.
//! - [`route`]: routes, their match conditions, arms, prompts, shadow and capture.
//! - [`limits`]: `shared_state:` and `limits:`.
//! - [`telemetry`]: `telemetry:`, where request spans are exported.
//! - [`types`]: the validated runtime types. [`secret`]: keys that never print.
//! - [`error`]: `ConfigError`, always with the key path.

mod address;
mod build;
mod error;
mod limits;
mod parse;
pub mod raw;
mod route;
mod secret;
mod server;
mod telemetry;
#[cfg(test)]
mod tests;
mod types;

pub use address::{upstream_url, Addresses};
pub use error::ConfigError;
pub use secret::Secret;
pub use types::*;
