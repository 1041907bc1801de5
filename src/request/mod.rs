//! The request body, as tailor reads it: OpenAI's bytes, not ours. A handful of top-level fields
//! are read as borrowed raw JSON, and the one rewrite (model id, `include_usage`, an arm's system
//! prompt) is spliced in by byte range, so every other byte reaches the upstream as it was sent.
//!
//! - [`endpoint`]: the four routed endpoints (the JSON readers are in [`crate::json`]).
//! - [`view`]: [`RequestView`], parsed and validated with OpenAI's errors.
//! - [`prompt`]: the system and user texts, for routing on them.
//! - [`rewrite`]: the byte-preserving rewrite for the upstream.

pub mod endpoint;
pub mod prompt;
pub mod rewrite;
pub mod view;

pub use endpoint::Endpoint;
pub use prompt::PromptText;
pub use rewrite::SystemPrompt;
pub use view::RequestView;
