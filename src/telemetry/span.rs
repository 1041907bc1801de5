//! One finished request as an OTLP span, following the OpenTelemetry GenAI semantic conventions:
//! named `{gen_ai.operation.name} {gen_ai.request.model}`, kind CLIENT (a call to a remote model),
//! `gen_ai.*` attributes plus tailor's own (`tailor.route`, `tailor.model`, `tailor.cost_usd`),
//! retries and fallbacks as events. Only names, numbers and statuses: never a prompt, an answer,
//! a key or a header value.
//!
//! [`SpanData`] is what the request path hands over (plain fields, no encoding); the export task
//! turns it into the protobuf message off the request path.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};

use crate::usage::event::{AttemptEvent, Outcome, Step};
use crate::usage::price::PICO_PER_USD;

/// The span's flags: W3C trace flags in bits 0-7, then "whether the parent is remote is known"
/// (bit 8) and "it is remote" (bit 9), as in the OTLP `SpanFlags` enum.
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

/// A finished request, as the request path hands it to the exporter.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The client's span (a remote parent), if it sent a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The client's `tracestate`, as it came.
    pub trace_state: Option<Box<str>>,
    /// `gen_ai.operation.name`: chat | text_completion | embeddings.
    pub operation: &'static str,
    /// `gen_ai.provider.name`: openai | azure.ai.openai.
    pub provider: &'static str,
    /// The `model` the client asked for (at most 256 characters).
    pub request_model: Box<str>,
    /// The upstream model id that answered (`models.*.id`).
    pub response_model: Arc<str>,
    pub route: Arc<str>,
    /// The config's name of the model that answered.
    pub model: Arc<str>,
    pub request_id: Box<str>,
    /// `server.address` and `server.port` of the upstream that answered.
    pub server_address: Arc<str>,
    pub server_port: u16,
    pub status: u16,
    pub outcome: Outcome,
    /// Failed by the upstream's or tailor's fault.
    pub failed: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub estimated: bool,
    pub cost_pico: u128,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attempts: Vec<AttemptEvent>,
    /// Refused before it was forwarded (400, 401, 404, 429...): the error kind. The route,
    /// model, usage and upstream fields are then empty and not exported.
    pub rejected: Option<&'static str>,
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
}

fn int(key: &str, v: u64) -> KeyValue {
    kv(
        key,
        any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX)),
    )
}

fn event(start: u64, a: &AttemptEvent) -> span::Event {
    let mut attributes = Vec::with_capacity(5);
    let name = match &a.step {
        Step::Retry { model, retry, wait } => {
            attributes.push(text("tailor.model", model));
            attributes.push(int("tailor.retry", u64::from(*retry)));
            attributes.push(int(
                "tailor.retry.wait_ms",
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            ));
            "tailor.retry"
        }
        Step::Fallback { from, to } => {
            attributes.push(text("tailor.fallback.from", from));
            attributes.push(text("tailor.fallback.to", to));
            "tailor.fallback"
        }
    };
    attributes.push(text("error.type", a.reason));
    if let Some(s) = a.status {
        attributes.push(int("http.response.status_code", u64::from(s)));
    }
    span::Event {
        time_unix_nano: start.saturating_add(u64::try_from(a.at.as_nanos()).unwrap_or(u64::MAX)),
        name: name.to_owned(),
        attributes,
        dropped_attributes_count: 0,
    }
}

impl SpanData {
    /// Whether the span's status is Error: the upstream or tailor failed, or the client got an
    /// error status (a CLIENT span's convention: 4xx too). A client hanging up is no error.
    pub fn is_error(&self) -> bool {
        self.failed || (self.status >= 400 && self.outcome != Outcome::ClientCancelled)
    }

    /// The OTLP span.
    pub fn to_proto(&self) -> Span {
        let mut attributes = vec![text("gen_ai.operation.name", self.operation)];
        if !self.request_model.is_empty() {
            attributes.push(text("gen_ai.request.model", &self.request_model));
        }
        attributes.push(int("http.response.status_code", u64::from(self.status)));
        if self.rejected.is_none() {
            attributes.extend([
                text("gen_ai.provider.name", self.provider),
                text("gen_ai.response.model", &self.response_model),
                int("gen_ai.usage.input_tokens", self.input_tokens),
                int("gen_ai.usage.output_tokens", self.output_tokens),
                text("tailor.route", &self.route),
                text("tailor.model", &self.model),
                kv(
                    "tailor.cost_usd",
                    any_value::Value::DoubleValue(self.cost_pico as f64 / PICO_PER_USD),
                ),
                kv(
                    "tailor.usage.estimated",
                    any_value::Value::BoolValue(self.estimated),
                ),
                text("tailor.outcome", self.outcome.as_str()),
                text("tailor.request_id", &self.request_id),
                text("server.address", &self.server_address),
                int("server.port", u64::from(self.server_port)),
            ]);
        }
        let status = if self.is_error() {
            let (kind, message) = match self.rejected {
                // tailor's own error kind says more than its status
                Some(kind) => (kind.to_owned(), format!("rejected ({})", self.status)),
                None if self.status >= 400 => (
                    self.status.to_string(),
                    format!("{} ({})", self.outcome.as_str(), self.status),
                ),
                None => (
                    self.outcome.as_str().to_owned(),
                    format!("{} ({})", self.outcome.as_str(), self.status),
                ),
            };
            attributes.push(text("error.type", &kind));
            Status {
                message,
                code: status::StatusCode::Error as i32,
            }
        } else {
            Status::default()
        };
        let flags = 0x01
            | FLAGS_HAS_IS_REMOTE
            | if self.parent.is_some() {
                FLAGS_IS_REMOTE
            } else {
                0
            };
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self.trace_state.as_deref().unwrap_or("").to_owned(),
            parent_span_id: self.parent.map_or_else(Vec::new, |p| p.to_vec()),
            flags,
            // `{operation} {model}`, or the operation alone when the model is not known
            name: if self.request_model.is_empty() {
                self.operation.to_owned()
            } else {
                format!("{} {}", self.operation, self.request_model)
            },
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: self.start_unix_nano,
            end_time_unix_nano: self.end_unix_nano,
            attributes,
            events: self
                .attempts
                .iter()
                .map(|a| event(self.start_unix_nano, a))
                .collect(),
            status: Some(status),
            ..Default::default()
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn sample() -> SpanData {
        SpanData {
            trace_id: [0x4b; 16],
            span_id: [1; 8],
            parent: Some([2; 8]),
            trace_state: None,
            operation: "chat",
            provider: "openai",
            request_model: "gpt-4o".into(),
            response_model: "gpt-4o-2024-08-06".into(),
            route: "fb".into(),
            model: "mini".into(),
            request_id: "id".into(),
            server_address: "127.0.0.1".into(),
            server_port: 8000,
            status: 200,
            outcome: Outcome::Ok,
            failed: false,
            input_tokens: 10,
            output_tokens: 12,
            estimated: false,
            cost_pico: 2_500_000,
            start_unix_nano: 1_000,
            end_unix_nano: 9_000,
            attempts: vec![AttemptEvent {
                at: Duration::from_nanos(500),
                step: Step::Fallback {
                    from: "gpt-4o".into(),
                    to: "mini".into(),
                },
                reason: "server_error",
                status: Some(500),
            }],
            rejected: None,
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn genai_attributes_and_events() {
        let s = sample().to_proto();
        assert_eq!(s.name, "chat gpt-4o");
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(s.parent_span_id, vec![2; 8]);
        assert_eq!(s.flags, 0x301);
        let str_of = |k| match attr(&s, k) {
            Some(any_value::Value::StringValue(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(str_of("gen_ai.request.model"), "gpt-4o");
        assert_eq!(str_of("gen_ai.response.model"), "gpt-4o-2024-08-06");
        assert_eq!(str_of("tailor.model"), "mini");
        assert_eq!(
            attr(&s, "gen_ai.usage.output_tokens"),
            Some(&any_value::Value::IntValue(12))
        );
        assert_eq!(
            attr(&s, "tailor.cost_usd"),
            Some(&any_value::Value::DoubleValue(2.5e-6))
        );
        assert!(attr(&s, "error.type").is_none());
        assert_eq!(s.status.as_ref().unwrap().code, 0);
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "tailor.fallback");
        assert_eq!(s.events[0].time_unix_nano, 1_500);
    }

    #[test]
    fn a_rejected_request_names_its_error_kind_only() {
        let s = SpanData {
            status: 429,
            rejected: Some("overloaded"),
            request_model: "".into(),
            attempts: vec![],
            ..sample()
        }
        .to_proto();
        assert_eq!(s.name, "chat");
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        let keys: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "gen_ai.operation.name",
                "http.response.status_code",
                "error.type"
            ]
        );
        assert_eq!(
            attr(&s, "error.type"),
            Some(&any_value::Value::StringValue("overloaded".into()))
        );
    }

    #[test]
    fn errors_by_status_and_outcome() {
        let cases = [
            (200, Outcome::Ok, false, false),
            (400, Outcome::Ok, false, true),
            (502, Outcome::UpstreamError, true, true),
            // a stream that broke after its 200
            (200, Outcome::UpstreamError, true, true),
            (499, Outcome::ClientCancelled, false, false),
        ];
        for (status, outcome, failed, error) in cases {
            let d = SpanData {
                status,
                outcome,
                failed,
                parent: None,
                ..sample()
            };
            assert_eq!(d.is_error(), error, "{status} {outcome:?}");
            let s = d.to_proto();
            assert_eq!(s.flags, 0x101);
            assert_eq!(
                s.status.unwrap().code == status::StatusCode::Error as i32,
                error
            );
        }
    }
}
