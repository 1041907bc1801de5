//! Trace export, in process: the simulator and tailor (tests/fixtures/telemetry.yaml) with an
//! OTLP/HTTP receiver that decodes each POST with the official `opentelemetry-proto` messages.
//! What the upstream received is read from the simulator's record. (tests/telemetry/ runs the
//! same against the binary with Python's `opentelemetry-proto`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::setup_edited;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP receiver on 127.0.0.1:0: its URL and the spans it decoded.
async fn receiver() -> (String, Spans) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans: Spans = Arc::default();
    let keep = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let keep = keep.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        for rs in export.resource_spans {
                            for ss in rs.scope_spans {
                                keep.lock().unwrap().extend(ss.spans);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, spans)
}

fn attr(s: &Span, key: &str) -> Option<Value> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone()?.value)
}

fn text(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Value::StringValue(v)) => v,
        other => panic!("{key}: {other:?}"),
    }
}

async fn span_of(spans: &Spans, request_id: &str) -> Span {
    for _ in 0..200 {
        let found = spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| text(s, "tailor.request_id") == request_id)
            .cloned();
        if let Some(s) = found {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no span for {request_id}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const BODY: &str = r#"{"model":"plain","messages":[{"role":"user","content":"private words"}]}"#;

#[tokio::test]
async fn spans_continue_the_clients_trace_and_the_upstream_gets_tailors_span() {
    let (url, spans) = receiver().await;
    let env = setup_edited("telemetry.yaml", true, &|t| t.replace("OTLP_URL", &url)).await;
    let client_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = env.chat(BODY, &[("traceparent", client_tp)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = span_of(&spans, r.header("x-tailor-request-id")).await;
    assert_eq!(hex(&s.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(hex(&s.parent_span_id), "b7ad6b7169203331");
    assert_eq!(s.name, "chat plain");
    assert_eq!(text(&s, "gen_ai.response.model"), "gpt-4o-2024-08-06");
    assert_eq!(text(&s, "tailor.route"), "plain");
    let usage = r.json()["usage"].clone();
    assert_eq!(
        attr(&s, "gen_ai.usage.output_tokens"),
        Some(Value::IntValue(
            usage["completion_tokens"].as_i64().unwrap()
        ))
    );
    let sent = env.mock.received();
    let up = sent
        .last()
        .unwrap()
        .headers
        .get_all("traceparent")
        .iter()
        .collect::<Vec<_>>();
    assert_eq!(
        up,
        [&format!(
            "00-0af7651916cd43dd8448eb211c80319c-{}-01",
            hex(&s.span_id)
        )]
    );
    assert!(!format!("{s:?}").contains("private words"));

    // a malformed one is not passed on: a new trace, named upstream
    env.mock.clear();
    let bad = "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01";
    let r = env.chat(BODY, &[("traceparent", bad)]).await;
    let s = span_of(&spans, r.header("x-tailor-request-id")).await;
    assert!(s.parent_span_id.is_empty());
    let up = env.mock.received()[0].headers["traceparent"].clone();
    assert_eq!(
        up,
        format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id))
    );
}

#[tokio::test]
async fn a_retry_and_a_fallback_are_events() {
    let (url, spans) = receiver().await;
    let env = setup_edited("telemetry.yaml", true, &|t| t.replace("OTLP_URL", &url)).await;
    let r = env.chat(&BODY.replace("plain", "fb"), &[]).await;
    assert_eq!(r.header("x-tailor-model"), "mini");
    let s = span_of(&spans, r.header("x-tailor-request-id")).await;
    let names: Vec<&str> = s.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["tailor.retry", "tailor.fallback"]);
    // every try carried the same trace, tailor's span as the parent
    let want = format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id));
    let sent = env.mock.received();
    assert_eq!(sent.len(), 3);
    for r in sent {
        assert_eq!(r.headers["traceparent"], want.as_str());
    }
}

#[tokio::test]
async fn a_stream_is_spanned_when_it_ends() {
    let (url, spans) = receiver().await;
    let env = setup_edited("telemetry.yaml", false, &|t| t.replace("OTLP_URL", &url)).await;
    let body = BODY.replace(r#""messages""#, r#""stream":true,"messages""#);
    let r = env.chat(&body, &[("x-mock-words", "7")]).await;
    assert_eq!(r.status, 200);
    let s = span_of(&spans, r.header("x-tailor-request-id")).await;
    assert_eq!(
        attr(&s, "gen_ai.usage.output_tokens"),
        Some(Value::IntValue(7))
    );
    assert_eq!(
        attr(&s, "tailor.usage.estimated"),
        Some(Value::BoolValue(false))
    );
    assert!(s.end_time_unix_nano > s.start_time_unix_nano);
}

#[tokio::test]
async fn shutdown_sends_what_is_queued() {
    let (url, spans) = receiver().await;
    // no batch would fill and no timer would fire before the end of the test
    let env = setup_edited("telemetry.yaml", false, &|t| {
        t.replace("OTLP_URL", &url)
            .replace("flush_interval: 100ms", "flush_interval: 1h")
    })
    .await;
    for _ in 0..3 {
        assert_eq!(env.chat(BODY, &[]).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(spans.lock().unwrap().is_empty());
    env.tailor.shutdown().await;
    assert_eq!(spans.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_request_refused_before_forwarding_has_a_span_too() {
    let (url, spans) = receiver().await;
    let env = setup_edited("telemetry.yaml", true, &|t| t.replace("OTLP_URL", &url)).await;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = env
        .chat(&BODY.replace("plain", "nope"), &[("traceparent", tp)])
        .await;
    assert_eq!(r.status, 404);
    let r = env.chat("{", &[]).await;
    assert_eq!(r.status, 400);
    for _ in 0..200 {
        if spans.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = spans.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let unrouted = got.iter().find(|s| s.name == "chat nope").unwrap();
    assert_eq!(hex(&unrouted.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(text(unrouted, "error.type"), "unrouted");
    assert_eq!(
        attr(unrouted, "http.response.status_code"),
        Some(Value::IntValue(404))
    );
    assert!(attr(unrouted, "tailor.route").is_none());
    let invalid = got.iter().find(|s| s.name == "chat").unwrap();
    assert_eq!(text(invalid, "error.type"), "invalid_json");
    assert!(invalid.parent_span_id.is_empty());
    assert!(env.mock.received().is_empty());
}
