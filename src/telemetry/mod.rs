//! OpenTelemetry traces (`telemetry:`): one span per API request, exported over OTLP/HTTP.
//!
//! ```text
//! pipeline: TraceContext::from_headers (continue the client's traceparent, or start a trace)
//!   ─▶ traceparent for the upstream (tailor's span as the parent)       forward::upstream
//!   ─▶ RequestSpan subscribes to the request's "finished" event (usage::event)
//! finished ─▶ SpanData (plain fields) ─▶ bounded queue ─▶ export task: batch, protobuf, POST
//! refused before forwarding (proxy::reject) ─▶ Tracer::rejected ─▶ the same queue
//! ```
//!
//! With `telemetry:` absent, `LiveState::tracer` is `None` and a request pays
//! one branch. A client that sent `sampled=0` gets its trace continued upstream but no span
//! exported (parent-based sampling, the OpenTelemetry SDK's default).
//!
//! - [`traceparent`]: W3C Trace Context, parsed strictly. [`span`]: the GenAI span.
//! - [`export`]: the queue and the batching task.

pub mod export;
pub mod span;
pub mod traceparent;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue};

use self::export::Exporter;
use self::span::SpanData;
use self::traceparent::TraceContext;
use crate::config::{Config, TelemetryConfig, UpstreamKind};
use crate::metrics::Metrics;
use crate::request::Endpoint;
use crate::usage::event::{Finished, Outcome, Subscriber};
use crate::usage::meter::RequestMeter;

/// Longest client `model` string kept for `gen_ai.request.model` and the span name.
const MAX_REQUEST_MODEL: usize = 256;

/// The trace headers sent upstream with every try of one request.
#[derive(Debug, Clone)]
pub struct TraceHeaders {
    pub traceparent: HeaderValue,
    pub tracestate: Option<HeaderValue>,
}

/// What a span says about a model, resolved once per config.
struct ModelFacts {
    name: String,
    id: Arc<str>,
    address: Arc<str>,
    port: u16,
    provider: &'static str,
}

/// A config's tracing: the exporter (kept across reloads while `telemetry:` is unchanged) and
/// the facts a span names for each model.
pub struct Tracer {
    exporter: Arc<Exporter>,
    models: Vec<ModelFacts>,
}

/// The exporter outlives configs: a reload that keeps `telemetry:` keeps its queue and task.
#[derive(Default)]
pub struct ExporterCache(Mutex<Option<(TelemetryConfig, Arc<Exporter>)>>);

impl Tracer {
    /// The tracing of `config`, `None` when it has no `telemetry:` (or no exporter could start).
    pub fn build(config: &Config, cache: &ExporterCache, metrics: &Metrics) -> Option<Arc<Tracer>> {
        let mut cached = cache.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = &config.telemetry else {
            // the old exporter ends with the last config that used it
            *cached = None;
            return None;
        };
        let exporter = match cached.as_ref().filter(|(c, _)| c == t) {
            Some((_, e)) => e.clone(),
            None => {
                let e = Exporter::start(t, metrics)?;
                *cached = Some((t.clone(), e.clone()));
                e
            }
        };
        let models = config
            .models
            .iter()
            .map(|m| {
                let u = &config.upstreams[m.upstream];
                let uri: Option<http::Uri> = u.url.parse().ok();
                let https = uri.as_ref().and_then(|u| u.scheme_str()) == Some("https");
                ModelFacts {
                    name: m.name.clone(),
                    id: m.id.as_str().into(),
                    address: uri
                        .as_ref()
                        .and_then(|u| u.host())
                        .unwrap_or("")
                        .trim_matches(|c| c == '[' || c == ']')
                        .into(),
                    port: uri.as_ref().and_then(|u| u.port_u16()).unwrap_or(if https {
                        443
                    } else {
                        80
                    }),
                    provider: match u.kind {
                        UpstreamKind::Openai => "openai",
                        UpstreamKind::Azure => "azure.ai.openai",
                    },
                }
            })
            .collect();
        Some(Arc::new(Tracer { exporter, models }))
    }

    /// Starts the span of one request: its trace context from the client's headers (`random`
    /// gives new ids), a subscriber of its end when it is sampled; the headers for upstream.
    pub fn start(
        self: &Arc<Self>,
        headers: &HeaderMap,
        random: impl FnMut() -> u64,
        endpoint: Endpoint,
        request_model: &str,
        meter: &mut RequestMeter,
    ) -> TraceHeaders {
        let ctx = TraceContext::from_headers(headers, random);
        let out = TraceHeaders {
            traceparent: ctx.traceparent(),
            tracestate: ctx.tracestate.clone(),
        };
        if ctx.sampled {
            meter.subscribe(Box::new(RequestSpan {
                tracer: self.clone(),
                ctx,
                operation: operation(endpoint),
                request_model: truncated(request_model),
            }));
        }
        out
    }

    /// The span of a request refused before it was forwarded (`kind`: the error kind, `status`:
    /// what the client got), continuing the client's trace; `request_model` when it was read.
    #[allow(clippy::too_many_arguments)]
    pub fn rejected(
        &self,
        headers: &HeaderMap,
        random: impl FnMut() -> u64,
        endpoint: Endpoint,
        request_model: Option<&str>,
        status: u16,
        kind: &'static str,
        elapsed: std::time::Duration,
    ) {
        let ctx = TraceContext::from_headers(headers, random);
        if !ctx.sampled {
            return;
        }
        let (start, end) = span_times(elapsed);
        let empty: Arc<str> = Arc::from("");
        self.exporter.send(Box::new(SpanData {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent: ctx.parent,
            trace_state: trace_state(&ctx),
            operation: operation(endpoint),
            provider: "",
            request_model: truncated(request_model.unwrap_or("")),
            response_model: empty.clone(),
            route: empty.clone(),
            model: empty.clone(),
            request_id: "".into(),
            server_address: empty,
            server_port: 0,
            status,
            outcome: Outcome::Ok,
            failed: false,
            input_tokens: 0,
            output_tokens: 0,
            estimated: false,
            cost_pico: 0,
            start_unix_nano: start,
            end_unix_nano: end,
            attempts: Vec::new(),
            rejected: Some(kind),
        }));
    }

    /// Sends the spans queued so far (shutdown).
    pub async fn flush(&self) {
        self.exporter.flush().await;
    }
}

/// `gen_ai.operation.name` of an endpoint (the Responses API generates chat turns).
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat | Endpoint::Responses => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
    }
}

/// The client's `model`, cut to [`MAX_REQUEST_MODEL`] characters.
fn truncated(model: &str) -> Box<str> {
    let end = model
        .char_indices()
        .nth(MAX_REQUEST_MODEL)
        .map_or(model.len(), |(i, _)| i);
    model[..end].into()
}

/// Start and end (Unix nanoseconds) of a span that ends now after `elapsed`.
fn span_times(elapsed: std::time::Duration) -> (u64, u64) {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    (nanos(end.saturating_sub(elapsed)), nanos(end))
}

fn trace_state(ctx: &TraceContext) -> Option<Box<str>> {
    ctx.tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(Into::into)
}

/// One request's span, waiting for the request to finish.
struct RequestSpan {
    tracer: Arc<Tracer>,
    ctx: TraceContext,
    operation: &'static str,
    request_model: Box<str>,
}

impl Subscriber for RequestSpan {
    fn wants_attempts(&self) -> bool {
        true
    }

    fn finished(&self, f: &Finished<'_>) {
        let (start, end) = span_times(f.elapsed);
        let facts = self.tracer.models.iter().find(|m| *m.name == **f.model);
        let (response_model, server_address, server_port, provider) = match facts {
            Some(m) => (m.id.clone(), m.address.clone(), m.port, m.provider),
            None => (f.model.clone(), Arc::from(""), 0, "openai"),
        };
        let ctx = &self.ctx;
        self.tracer.exporter.send(Box::new(SpanData {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent: ctx.parent,
            trace_state: trace_state(ctx),
            operation: self.operation,
            provider,
            request_model: self.request_model.clone(),
            response_model,
            route: f.route.clone(),
            model: f.model.clone(),
            request_id: f.request_id.into(),
            server_address,
            server_port,
            status: f.status,
            outcome: f.outcome,
            failed: f.failed,
            input_tokens: f.usage.input,
            output_tokens: f.usage.output,
            estimated: f.estimated,
            cost_pico: f.cost_pico,
            start_unix_nano: start,
            end_unix_nano: end,
            attempts: f.attempts.to_vec(),
            rejected: None,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(telemetry: &str) -> Config {
        let y = format!(
            r#"
upstreams:
  oa: {{ url: "https://api.openai.com/v1", auth: none }}
  az: {{ url: "https://acme.openai.azure.com", kind: azure, api_version: "2024-10-21", auth: none }}
  local: {{ url: "http://[::1]:8000/v1", auth: none }}
models:
  a: {{ upstream: oa, id: gpt-4o }}
  b: {{ upstream: az, id: dep-1, base_model: gpt-4o }}
  c: {{ upstream: local, id: gpt-4o }}
routes: [{{ name: r, split: [{{ model: a }}] }}]
{telemetry}"#
        );
        Config::from_yaml(&y, &|_| None).unwrap()
    }

    const ON: &str = "telemetry: { otlp_endpoint: \"http://127.0.0.1:1\" }";

    #[tokio::test]
    async fn a_reload_keeps_an_unchanged_exporter_and_drops_a_removed_one() {
        let metrics = Metrics::new().unwrap();
        let cache = ExporterCache::default();
        let a = Tracer::build(&cfg(ON), &cache, &metrics).unwrap();
        let b = Tracer::build(&cfg(ON), &cache, &metrics).unwrap();
        assert!(Arc::ptr_eq(&a.exporter, &b.exporter));
        let other = "telemetry: { otlp_endpoint: \"http://127.0.0.1:1\", service_name: other }";
        let c = Tracer::build(&cfg(other), &cache, &metrics).unwrap();
        assert!(!Arc::ptr_eq(&a.exporter, &c.exporter));
        assert!(Tracer::build(&cfg(""), &cache, &metrics).is_none());
        assert!(cache.0.lock().unwrap().is_none());
        let d = Tracer::build(&cfg(ON), &cache, &metrics).unwrap();
        assert!(!Arc::ptr_eq(&a.exporter, &d.exporter));
    }

    #[tokio::test]
    async fn server_address_port_and_provider_per_model() {
        let t = Tracer::build(
            &cfg(ON),
            &ExporterCache::default(),
            &Metrics::new().unwrap(),
        )
        .unwrap();
        let facts: Vec<(&str, u16, &str, &str)> = t
            .models
            .iter()
            .map(|m| (&*m.address, m.port, m.provider, &*m.id))
            .collect();
        assert_eq!(
            facts,
            [
                ("api.openai.com", 443, "openai", "gpt-4o"),
                ("acme.openai.azure.com", 443, "azure.ai.openai", "dep-1"),
                ("::1", 8000, "openai", "gpt-4o"),
            ]
        );
    }
}
