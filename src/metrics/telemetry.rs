//! Trace export (`telemetry:`): what became of each finished span.

use prometheus::{IntCounterVec, Opts, Registry};

pub struct TelemetryMetrics {
    /// Spans by result = exported | dropped (queue full) | failed (the collector refused the
    /// batch or could not be reached).
    pub spans: IntCounterVec,
}

impl TelemetryMetrics {
    pub fn new(r: &Registry) -> Result<TelemetryMetrics, prometheus::Error> {
        let spans = IntCounterVec::new(
            Opts::new(
                "tailor_trace_spans_total",
                "Request spans by result: exported, dropped (export queue full), failed (collector error)",
            ),
            &["result"],
        )?;
        r.register(Box::new(spans.clone()))?;
        for result in ["exported", "dropped", "failed"] {
            spans.with_label_values(&[result]);
        }
        Ok(TelemetryMetrics { spans })
    }
}
