//! Other proxies' configs turned into a `routes.yaml` (`tailor import`). Offline and pure: text in,
//! routes.yaml text and a list of what could not be converted out; the command line prints them.
//!
//! - [`litellm`]: a LiteLLM proxy config (`model_list`, `router_settings`, `litellm_settings`).
//! - [`out`]: the routes.yaml an importer writes, and its text.
//! - [`note`]: what could not be converted, or should be checked, and why.
//! - [`decimal`]: exact decimal arithmetic (per-token prices to per-1M, weights).

pub mod decimal;
pub mod litellm;
pub mod note;
pub mod out;
