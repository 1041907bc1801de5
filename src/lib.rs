//! tailor: an OpenAI-compatible routing proxy.
//!
//! ```text
//!  client (OpenAI SDK, base_url = tailor)
//!    │  POST /v1/chat/completions | /v1/completions | /v1/embeddings | /v1/responses
//!    ▼
//!  server ── accept, TCP_NODELAY, HTTP/1.1 + h2c, graceful shutdown; hand-off to a worker
//!    │        thread (own event loop and upstream pools)
//!    ▼
//!  proxy ─── limits, client key, concurrency slots
//!    │        read body (≤ max_body_bytes) ──▶ request::RequestView (borrowed, validated)
//!    │                                          │
//!    │        classify (pure: config × request × draw × health ─▶ route, model, fallbacks)
//!    │        shadow ── sampled copy to the route's shadow model (own task, bounded, compared)
//!    ▼
//!  forward ── rewrite `model` (+ include_usage, + the arm's system prompt), auth for OpenAI / Azure, timeouts,
//!    │        retries with backoff, fallback: all before the first byte
//!    ▼
//!  usage ─── MeteredBody: SSE / JSON usage, idle/total limits ─▶ price ─▶ metrics (+ access line)
//!                                                                 ├──▶ economics ledger per arm
//!                                                                 └──▶ capture queue ─▶ dataset writer thread
//!
//!  admin ─── /metrics /healthz /readyz /economics and the status page (/) on its own port
//! ```
//!
//! # Layout
//! - [`config`]: `routes.yaml`, strict raw structs → validated runtime [`config::Config`].
//! - [`server`]: listeners, accept loops, shutdown. [`admin`]: the admin endpoints.
//! - [`proxy`]: the request path as a `tower::Service`; the live config snapshot.
//! - [`request`]: the borrowed view of a request body and the byte-preserving rewrite.
//! - [`classify`]: route selection, pure and table-tested.
//! - [`forward`]: upstream client, URL/auth/header rules, fallback policy.
//! - [`usage`]: usage from JSON and SSE, exact pricing, the metering body.
//! - [`health`]: passive health (consecutive failures → cool-down), per model name.
//! - [`reload`]: SIGHUP and file-change reload, whole-config swap.
//! - [`capture`]: successful answers written as a fine-tuning dataset (queue, writer thread).
//! - [`dataset`]: `tailor dataset check`, the upload's validation and price of a dataset file.
//! - [`simulate`]: recorded traffic replayed through a candidate config, offline, with projected cost.
//! - [`shadow`]: sampled copies of a route's requests to another model, compared pair by pair.
//! - [`economics`]: per-arm cost per request and the fine-tune break-even (`/economics`, `GET /`).
//! - [`metrics`]: every metric, registered once. [`error`]: the request-path error enum.
//! - [`mock`]: the simulated OpenAI server used by the demo, tests and benchmarks.

pub mod admin;
pub mod capture;
pub mod classify;
pub mod config;
pub mod dataset;
pub mod economics;
pub mod error;
pub mod forward;
pub mod health;
pub mod metrics;
pub mod mock;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod server;
pub mod shadow;
pub mod simulate;
pub mod usage;
