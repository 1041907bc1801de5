//! The LiteLLM providers that convert: those whose API is OpenAI's (tailor forwards the client's
//! body unchanged), with LiteLLM's own default base URLs and key variables (as in LiteLLM's
//! `litellm/litellm_core_utils/get_llm_provider_logic.py`).

use crate::import::out::Kind;
use crate::usage::price;

/// A provider whose wire format is OpenAI's (or Azure OpenAI's).
pub struct Provider {
    pub name: &'static str,
    pub kind: Kind,
    /// LiteLLM's default base URL, when it has one.
    pub base: Option<&'static str>,
    /// The variable LiteLLM reads the base URL from when `api_base` is not given.
    pub base_env: Option<&'static str>,
    /// The variable LiteLLM reads the key from when `api_key` is not given; `None`: a server
    /// that needs no key (LiteLLM sends a dummy one).
    pub key_env: Option<&'static str>,
}

const OPENAI_BASE: &str = "https://api.openai.com/v1";

#[rustfmt::skip]
pub const PROVIDERS: &[Provider] = &[
    Provider { name: "openai", kind: Kind::Openai, base: Some(OPENAI_BASE), base_env: None, key_env: Some("OPENAI_API_KEY") },
    Provider { name: "text-completion-openai", kind: Kind::Openai, base: Some(OPENAI_BASE), base_env: None, key_env: Some("OPENAI_API_KEY") },
    Provider { name: "azure", kind: Kind::Azure, base: None, base_env: Some("AZURE_API_BASE"), key_env: Some("AZURE_API_KEY") },
    Provider { name: "hosted_vllm", kind: Kind::Openai, base: None, base_env: Some("HOSTED_VLLM_API_BASE"), key_env: None },
    Provider { name: "lm_studio", kind: Kind::Openai, base: None, base_env: None, key_env: None },
    Provider { name: "llamafile", kind: Kind::Openai, base: None, base_env: None, key_env: None },
    Provider { name: "xinference", kind: Kind::Openai, base: None, base_env: None, key_env: None },
    Provider { name: "litellm_proxy", kind: Kind::Openai, base: None, base_env: Some("LITELLM_PROXY_API_BASE"), key_env: Some("LITELLM_PROXY_API_KEY") },
    Provider { name: "deepseek", kind: Kind::Openai, base: Some("https://api.deepseek.com/beta"), base_env: None, key_env: Some("DEEPSEEK_API_KEY") },
    Provider { name: "groq", kind: Kind::Openai, base: Some("https://api.groq.com/openai/v1"), base_env: None, key_env: Some("GROQ_API_KEY") },
    Provider { name: "cerebras", kind: Kind::Openai, base: Some("https://api.cerebras.ai/v1"), base_env: None, key_env: Some("CEREBRAS_API_KEY") },
    Provider { name: "nvidia_nim", kind: Kind::Openai, base: Some("https://integrate.api.nvidia.com/v1"), base_env: None, key_env: Some("NVIDIA_NIM_API_KEY") },
    Provider { name: "sambanova", kind: Kind::Openai, base: Some("https://api.sambanova.ai/v1"), base_env: None, key_env: Some("SAMBANOVA_API_KEY") },
    Provider { name: "together_ai", kind: Kind::Openai, base: Some("https://api.together.xyz/v1"), base_env: None, key_env: Some("TOGETHER_API_KEY") },
];

/// The api-version LiteLLM sends to Azure when neither the entry nor `AZURE_API_VERSION` sets
/// one (`litellm.AZURE_DEFAULT_API_VERSION`).
pub const LITELLM_AZURE_DEFAULT_API_VERSION: &str = "2025-02-01-preview";

/// Literal "keys" that stand for no key at all (local servers that ignore it).
pub const NOT_A_KEY: &[&str] = &[
    "",
    "none",
    "null",
    "empty",
    "fake",
    "fake-key",
    "fake-api-key",
    "anything",
    "dummy",
];

/// The names LiteLLM knows without a provider prefix that are OpenAI's.
pub fn is_openai_model(m: &str) -> bool {
    price::lookup(m).is_some()
        || [
            "gpt-",
            "o1",
            "o3",
            "o4",
            "chatgpt-",
            "text-embedding-",
            "ft:gpt",
            "davinci",
            "babbage",
        ]
        .iter()
        .any(|p| m.starts_with(p))
}
