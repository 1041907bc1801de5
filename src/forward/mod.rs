//! Forward: everything between a routing decision and the first response byte.
//!
//! - [`attempt`]: the try / retry / fall-back loop of one request.
//! - [`policy`]: what an upstream's answer means (final, retry, move on), as typed verdicts.
//! - [`upstream`]: the upstream URL (OpenAI or Azure), its auth, and which headers cross.
//! - [`passthrough`]: the rest of the OpenAI API: path families, path safety, the upstream URL.
//! - [`client`]: the pooled HTTP clients, one pool set per API worker thread.
//! - [`h1`]: tailor's own HTTP/1.1 client, for `http://` upstreams.
//! - [`health`]: passive health: a model that keeps failing cools down.

pub mod attempt;
pub mod client;
pub mod h1;
pub mod health;
pub mod passthrough;
pub mod policy;
pub mod upstream;
