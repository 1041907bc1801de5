//! `GET /v1/models` and `GET /v1/models/{id}`: every name a route matches, in OpenAI's shape.

use bytes::Bytes;

use crate::state::LiveState;

fn model_object(id: &str, created: u64) -> serde_json::Value {
    serde_json::json!({ "id": id, "object": "model", "created": created, "owned_by": "tailor" })
}

/// The list of every model name a route matches in `match.model`.
pub fn list(live: &LiveState) -> Bytes {
    let data: Vec<_> = live
        .config
        .listed_models
        .iter()
        .map(|m| model_object(m, live.loaded_at))
        .collect();
    Bytes::from(serde_json::json!({ "object": "list", "data": data }).to_string())
}

/// One listed model, or `None` if no route matches that name.
pub fn get(live: &LiveState, id: &str) -> Option<Bytes> {
    live.config
        .listed_models
        .iter()
        .find(|m| *m == id)
        .map(|m| Bytes::from(model_object(m, live.loaded_at).to_string()))
}
