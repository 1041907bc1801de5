//! tailor: an OpenAI-compatible routing proxy.
//!
//! ```text
//!  client (OpenAI SDK, base_url = tailor)
//!    │  POST /v1/chat/completions | /v1/completions | /v1/embeddings | /v1/responses
//!    ▼
//!  server ─────────── accept, TCP_NODELAY, HTTP/1.1 + h2c, connection limits, drain;
//!    │                 hand-off to a worker thread (own event loop and upstream pools)
//!    ▼
//!  proxy/ ─────────── dispatch by path; header limits, client key        (auth.rs)
//!    │                 /v1/models                                        (models.rs)
//!    │                 /v1/feedback: a score for an answer, by its signed id (feedback.rs, ids)
//!    │  pipeline.rs    server slot ─▶ read body ≤ max_body_bytes         (body.rs)
//!    │                 ─▶ request::RequestView (borrowed, validated)
//!    │                 ─▶ classify (pure: config × view × draw × health ─▶ route, model, fallbacks)
//!    │                 ─▶ route slot ─▶ usage::meter::RequestMeter::start
//!    │                 ─▶ side paths subscribe: capture sample, shadow copy
//!    ▼
//!  forward/ ───────── attempt.rs: request::rewrite (model, include_usage, arm prompt),
//!    │                 upstream.rs (URL, auth for OpenAI / Azure, headers), try with timeouts,
//!    │                 policy.rs (final / retry / fall back), health.rs: all before the first byte
//!    ▼
//!  usage/ ─────────── body.rs MeteredBody: SSE / JSON usage, idle/total/drain limits
//!                      ─▶ meter.rs: price (no usage came: counted with tokens/), metrics,
//!                         access line ─▶ event.rs "request finished"
//!                                                                   ├──▶ economics ledger (per arm)
//!                                                                   ├──▶ shadow pair comparison
//!                                                                   ├──▶ capture queue ─▶ writer thread
//!                                                                   └──▶ trace span ─▶ OTLP export task
//!
//!  admin ─── /metrics /healthz /readyz /economics and the status page (/) on its own port
//!  reload ── SIGHUP / file change ─▶ config::Config ─▶ state::Shared::swap_config (one step)
//! ```
//!
//! # Layout
//! Roughly in the order of a request, then the shared pieces, the offline tools and the simulator.
//! No file imports a file that imports it back (`../shared/tools/modloops.py src` checks it).
//! - [`server`]: listeners, the API's worker threads (each accepts its own connections),
//!   connection limits, graceful shutdown.
//! - [`admin`]: the admin endpoints. [`reload`]: SIGHUP and file-change reload.
//! - [`proxy`]: the request path as a `tower::Service`, step by step.
//! - [`shadow`]: sampled copies of a route's requests to another model, compared pair by pair.
//! - [`forward`]: the attempt loop (retry, backoff, fallback), its typed policy, upstream URL and
//!   header rules, the pooled client, passive model health.
//! - [`state`]: `LiveState` (a config and everything derived from it, swapped whole) and
//!   `Shared` (what lives as long as the process).
//! - [`capture`]: answers written as a fine-tuning dataset (queue, writer thread, reassembly).
//! - [`economics`]: per-arm ledger, the fine-tune verdict (`/economics`, the status page).
//! - [`usage`]: the metering body, the meter, the "request finished" event, usage from JSON and
//!   SSE, exact pricing.
//! - [`telemetry`]: OpenTelemetry request spans (W3C traceparent continued upstream), batched
//!   and exported over OTLP/HTTP off the request path.
//! - [`metrics`]: every metric, registered once. [`limits`]: concurrency counts kept across reloads.
//! - [`ids`]: request ids signed so any replica can verify them (feedback).
//! - [`heap`]: values boxed without a copy on the stack first (the request path's futures, the
//!   metered body).
//! - [`logs`]: log and access lines batched to stderr by a writer thread, off the request path.
//! - [`classify`]: route selection, pure and table-tested.
//! - [`request`]: the borrowed view of a request body and the byte-preserving rewrite.
//! - [`config`]: `routes.yaml`, strict raw structs → validated runtime [`config::Config`].
//! - [`tokens`]: OpenAI's tokenizers (o200k_base, cl100k_base), loaded once; chat overheads as
//!   OpenAI counts them; a stream's text counted in bounded memory (for broken-stream estimates).
//! - [`json`]: borrowed readers of untrusted JSON (fields with their spans, nesting check; the
//!   cursor the usage readers walk responses with, which reads exactly as serde_json would).
//! - [`error`]: the request-path error enum, OpenAI-shaped.
//! - [`tools`]: offline commands (`dataset check`, `simulate`).
//! - [`import`]: other proxies' configs converted to a routes.yaml (`tailor import litellm`), pure.
//! - [`mock`]: the simulated OpenAI server used by the demo, tests and benchmarks.
//!
//! The command line (`src/main.rs`, `src/cli/`) is the binary's: one file per command.

pub mod admin;
pub mod budget;
pub mod capture;
pub mod classify;
pub mod config;
pub mod economics;
pub mod error;
pub mod forward;
pub mod heap;
pub mod ids;
pub mod import;
pub mod json;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod mock;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod server;
pub mod shadow;
pub mod state;
pub mod telemetry;
pub mod tokens;
pub mod tools;
pub mod usage;
