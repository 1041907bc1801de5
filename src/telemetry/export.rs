//! The span exporter: a bounded queue filled by the request path (never waiting: a full queue
//! drops the span and counts it) and one task that batches spans (up to `max_batch`, or every
//! `flush_interval`), encodes them as an OTLP `ExportTraceServiceRequest` (protobuf) and POSTs
//! them to `{otlp_endpoint}/v1/traces` with tailor's own HTTP client.
//!
//! The task runs on the main runtime (admin, reloads, the drain), not on an API worker, and it
//! does not wait on the queue itself: a span is queued without waking it (a cross-thread wake-up
//! per request would cost more than the span). It wakes on its timer, when the queue reaches a
//! full batch, or for a flush. It ends when the last handle is dropped (a reload that changed
//! `telemetry:`), after sending what it holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Request;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prometheus::IntCounter;
use prost::Message;
use tokio::sync::{mpsc, oneshot, Notify};

use super::span::SpanData;
use crate::config::TelemetryConfig;
use crate::forward::client::{client, HttpClient};
use crate::metrics::Metrics;

/// Span results, counted in `tailor_trace_spans_total{result}`.
#[derive(Clone)]
struct Counts {
    exported: IntCounter,
    dropped: IntCounter,
    failed: IntCounter,
}

/// The handle the request path sends finished spans to.
pub struct Exporter {
    tx: mpsc::Sender<Box<SpanData>>,
    /// Spans queued and not yet taken by the task; the one that makes a full batch wakes it.
    queued: Arc<AtomicUsize>,
    batch_ready: Arc<Notify>,
    max_batch: usize,
    /// "Send what is queued now, then answer."
    flush: mpsc::Sender<oneshot::Sender<()>>,
    dropped: IntCounter,
}

impl Exporter {
    /// Starts the export task on the current runtime; `None` (logged) outside one or when the
    /// HTTP client cannot be built.
    pub fn start(cfg: &TelemetryConfig, metrics: &Metrics) -> Option<Arc<Exporter>> {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!("telemetry: no runtime to export spans from; tracing is off");
            return None;
        };
        let http = match client(cfg.timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "telemetry: cannot build the HTTP client; tracing is off");
                return None;
            }
        };
        let spans = &metrics.telemetry.spans;
        let counts = Counts {
            exported: spans.with_label_values(&["exported"]),
            dropped: spans.with_label_values(&["dropped"]),
            failed: spans.with_label_values(&["failed"]),
        };
        let (tx, rx) = mpsc::channel(cfg.queue_size);
        let (flush, flushes) = mpsc::channel(4);
        let queue = Queue {
            rx,
            queued: Arc::default(),
            batch_ready: Arc::default(),
        };
        let exporter = Exporter {
            tx,
            queued: queue.queued.clone(),
            batch_ready: queue.batch_ready.clone(),
            max_batch: cfg.max_batch,
            flush,
            dropped: counts.dropped.clone(),
        };
        rt.spawn(run(queue, flushes, cfg.clone(), http, counts));
        tracing::info!(url = %cfg.traces_url, "exporting request spans over OTLP/HTTP");
        Some(Arc::new(exporter))
    }

    /// Queues a finished span; drops and counts it when the queue is full. Never waits, and
    /// wakes the export task only when a batch is full.
    pub fn send(&self, span: Box<SpanData>) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        // wrapping: the task may count the span out before it is counted in here
        } else if self.queued.fetch_add(1, Ordering::Relaxed).wrapping_add(1) == self.max_batch {
            self.batch_ready.notify_one();
        }
    }

    /// Sends every span queued so far and waits for that export (shutdown).
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.flush.send(done).await.is_ok() {
            let _ = sent.await;
        }
    }
}

/// The export task's end of the queue.
struct Queue {
    rx: mpsc::Receiver<Box<SpanData>>,
    queued: Arc<AtomicUsize>,
    batch_ready: Arc<Notify>,
}

impl Queue {
    /// Takes up to `max` queued spans into `batch`; false once every sender is gone and the
    /// queue is empty.
    fn take(&mut self, batch: &mut Vec<SpanData>, max: usize) -> bool {
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(s) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    batch.push(*s);
                }
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }
}

/// The export request for `spans`: one resource (`service.name`), one scope (tailor).
pub fn encode(service_name: &str, spans: &[SpanData]) -> Vec<u8> {
    let attr = |k: &str, v: &str| KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attr("service.name", service_name),
                    attr("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tailor".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans: spans.iter().map(SpanData::to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

async fn run(
    mut queue: Queue,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    cfg: TelemetryConfig,
    http: HttpClient,
    counts: Counts,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(cfg.max_batch);
    // the first tick one interval from now, not at once: spans queued before this task first
    // runs wait for the timer like any others
    let first = tokio::time::Instant::now() + cfg.flush_interval;
    let mut tick = tokio::time::interval_at(first, cfg.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let mut flushed = None;
        let mut open = true;
        // a full batch: send full batches only, the rest waits for its timer
        let mut only_full = false;
        tokio::select! {
            _ = tick.tick() => {}
            _ = queue.batch_ready.notified() => only_full = true,
            f = flushes.recv() => match f {
                Some(done) => flushed = Some(done),
                // the exporter is gone: send what is left, then end
                None => open = false,
            },
        }
        loop {
            open &= queue.take(&mut batch, cfg.max_batch);
            if batch.is_empty() || (only_full && open && batch.len() < cfg.max_batch) {
                break;
            }
            failing = export(&cfg, &http, &counts, &mut batch, failing).await;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

/// POSTs `batch` (emptied) and counts it; returns whether the collector is failing (logged at
/// warn on the first failure and when it recovers, not once per batch).
async fn export(
    cfg: &TelemetryConfig,
    http: &HttpClient,
    counts: &Counts,
    batch: &mut Vec<SpanData>,
    failing: bool,
) -> bool {
    if batch.is_empty() {
        return failing;
    }
    let n = batch.len() as u64;
    let body = encode(&cfg.service_name, batch);
    batch.clear();
    let req = Request::post(&cfg.traces_url)
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        )
        .body(Full::new(Bytes::from(body)));
    let result = match req {
        Err(e) => Err(e.to_string()),
        Ok(req) => match tokio::time::timeout(cfg.timeout, http.request(req)).await {
            Err(_) => Err("timed out".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(resp)) => {
                let status = resp.status();
                // read the (small) answer so the connection goes back to the pool
                let _ = tokio::time::timeout(cfg.timeout, resp.into_body().collect()).await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
        },
    };
    match result {
        Ok(()) => {
            counts.exported.inc_by(n);
            if failing {
                tracing::info!(url = %cfg.traces_url, "telemetry: the collector accepts spans again");
            }
            false
        }
        Err(e) => {
            counts.failed.inc_by(n);
            if failing {
                tracing::debug!(url = %cfg.traces_url, error = %e, spans_in_batch = n, "telemetry: export failed");
            } else {
                tracing::warn!(url = %cfg.traces_url, error = %e, spans_in_batch = n, "telemetry: export failed; spans are dropped until the collector answers");
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[tokio::test]
    async fn a_full_queue_drops_and_a_refused_batch_fails_both_counted() {
        let metrics = Metrics::new().unwrap();
        let cfg = TelemetryConfig {
            // nothing listens on port 1: the export is refused
            traces_url: "http://127.0.0.1:1/v1/traces".into(),
            service_name: "t".into(),
            queue_size: 1,
            max_batch: 1,
            flush_interval: std::time::Duration::from_secs(60),
            timeout: std::time::Duration::from_secs(5),
        };
        let e = Exporter::start(&cfg, &metrics).unwrap();
        // the test runtime is single-threaded: the task cannot drain the queue between sends
        for _ in 0..3 {
            e.send(Box::new(super::super::span::tests::sample()));
        }
        e.flush().await;
        let count = |r: &str| metrics.telemetry.spans.with_label_values(&[r]).get();
        assert_eq!(
            (count("dropped"), count("failed"), count("exported")),
            (2, 1, 0)
        );
    }

    #[tokio::test]
    async fn a_full_batch_is_sent_at_once_a_partial_one_waits_for_its_timer() {
        let metrics = Metrics::new().unwrap();
        let cfg = TelemetryConfig {
            traces_url: "http://127.0.0.1:1/v1/traces".into(),
            service_name: "t".into(),
            queue_size: 8,
            max_batch: 2,
            flush_interval: std::time::Duration::from_secs(3600),
            timeout: std::time::Duration::from_secs(5),
        };
        let e = Exporter::start(&cfg, &metrics).unwrap();
        let failed = || metrics.telemetry.spans.with_label_values(&["failed"]).get();
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(300));
        // queued before the task first runs (one thread): it waits for the timer too
        e.send(Box::new(super::super::span::tests::sample()));
        pause().await;
        assert_eq!(
            failed(),
            0,
            "a partial batch went out when the task started"
        );
        e.send(Box::new(super::super::span::tests::sample()));
        pause().await;
        assert_eq!(failed(), 2);
        e.send(Box::new(super::super::span::tests::sample()));
        pause().await;
        assert_eq!(failed(), 2, "a partial batch went out before its timer");
        e.flush().await;
        assert_eq!(failed(), 3);
    }

    #[test]
    fn a_batch_decodes_with_the_official_messages() {
        let spans = vec![super::super::span::tests::sample(); 3];
        let bytes = encode("svc", &spans);
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(res.attributes[0].key, "service.name");
        assert_eq!(rs.scope_spans[0].spans.len(), 3);
        assert_eq!(rs.scope_spans[0].spans[0].trace_id, vec![0x4b; 16]);
    }
}
