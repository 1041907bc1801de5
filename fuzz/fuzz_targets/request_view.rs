//! A client's request body: parsing, reading every field and the rewrite never panic, and a body
//! that is strict JSON is still strict JSON after the rewrite. (tailor's borrowed reader accepts
//! what serde_json's skipping accepts, a lone `\uD800` escape for one; such a body goes upstream
//! as sent, and the upstream judges it.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailor::request::{Endpoint, RequestView, SystemPrompt};

fuzz_target!(|data: &[u8]| {
    let strict = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    for ep in [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
    ] {
        if let Ok(v) = RequestView::parse(data, ep) {
            let _ = (v.text(), v.has_tools(), v.metadata("k"), v.metadata_value());
            let _ = v.estimated_prompt_tokens();
            let prompt = SystemPrompt {
                text: "be brief",
                replace: data.len() % 2 == 0,
            };
            let out = v.rewrite("m", v.needs_usage_injection(), Some(prompt));
            // what goes upstream is still one JSON document
            assert!(
                !strict || serde_json::from_slice::<serde_json::Value>(&out).is_ok(),
                "rewrite broke the JSON: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
});
