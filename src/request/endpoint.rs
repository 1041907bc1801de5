//! The API endpoints tailor routes, and what differs between them.

use serde::Deserialize;

/// The API endpoints tailor routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
}

impl Endpoint {
    /// The endpoint for a request path (after `/v1`).
    pub fn from_suffix(suffix: &str) -> Option<Endpoint> {
        match suffix {
            "/chat/completions" => Some(Endpoint::Chat),
            "/completions" => Some(Endpoint::Completions),
            "/embeddings" => Some(Endpoint::Embeddings),
            "/responses" => Some(Endpoint::Responses),
            _ => None,
        }
    }

    /// The path after `/v1` (or after the Azure deployment).
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
        }
    }

    /// Every endpoint, in the order of [`Endpoint::index`].
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
    ];

    /// Its place in [`Endpoint::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The endpoint for its [`Endpoint::as_str`] name.
    pub fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
        }
    }

    /// The field that carries the prompt.
    pub fn prompt_field(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings | Endpoint::Responses => "input",
        }
    }

    /// Whether streaming responses carry usage only when `stream_options.include_usage` is set.
    pub fn usage_needs_stream_options(self) -> bool {
        matches!(self, Endpoint::Chat | Endpoint::Completions)
    }
}
