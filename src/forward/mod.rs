//! Forward: everything between a routing decision and the first response byte.
//!
//! - [`attempt`]: the try / retry / fall-back loop of one request.
//! - [`policy`]: what an upstream's answer means (final, retry, move on), as typed verdicts.
//! - [`upstream`]: the upstream URL (OpenAI or Azure), its auth, and which headers cross.
//! - [`passthrough`]: the rest of the OpenAI API: path families, path safety, the upstream URL.
//! - [`client`]: the pooled HTTP client, one pool set per API worker thread.
//! - [`health`]: passive health: a model that keeps failing cools down.

pub mod attempt;
pub mod client;
pub mod health;
pub mod passthrough;
pub mod policy;
pub mod upstream;
