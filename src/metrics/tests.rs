//! The metrics' exposition and the request path's handles.

use super::*;

#[test]
fn requests_are_counted_per_endpoint_status_and_outcome() {
    let m = Metrics::new().unwrap();
    let meter = m.meter("support", "support-ft", "team-a");
    let ok = http::StatusCode::OK;
    let bad = http::StatusCode::BAD_GATEWAY;
    // the first ok endpoint is resolved once; every other series is looked up
    for (endpoint, code, outcome) in [
        ("chat", ok, "ok"),
        ("embeddings", ok, "ok"),
        ("chat", ok, "ok"),
        ("chat", bad, "upstream_error"),
        ("chat", ok, "client_cancelled"),
        ("embeddings", ok, "ok"),
        ("chat", ok, "ok"),
    ] {
        meter.record_request(endpoint, code, outcome);
    }
    let count = |endpoint: &str, code: &str, outcome: &str| {
        m.requests
            .with_label_values(&["support", "support-ft", "team-a", endpoint, code, outcome])
            .get()
    };
    assert_eq!(count("chat", "200", "ok"), 3);
    assert_eq!(count("embeddings", "200", "ok"), 2);
    assert_eq!(count("chat", "502", "upstream_error"), 1);
    assert_eq!(count("chat", "200", "client_cancelled"), 1);
    assert_eq!(count("embeddings", "502", "upstream_error"), 0);
}

#[test]
fn exposition_has_every_metric_and_exact_cost() {
    let m = Metrics::new().unwrap();
    let meter = m.meter("support", "support-ft", "team-a");
    let u = Usage {
        input: 1000,
        cached: 200,
        output: 50,
        reasoning: 10,
    };
    for _ in 0..3 {
        meter.record_usage(&u, 4_125_000_000);
        meter.record_request("chat", http::StatusCode::OK, "ok");
    }
    m.unrouted.inc();
    let text = String::from_utf8(m.encode()).unwrap();
    for name in [
        "tailor_requests_total{client=\"team-a\",code=\"200\",endpoint=\"chat\",model=\"support-ft\",outcome=\"ok\",route=\"support\"} 3",
        "tailor_tokens_total{client=\"team-a\",model=\"support-ft\",route=\"support\",type=\"input\"} 2400",
        "tailor_tokens_total{client=\"team-a\",model=\"support-ft\",route=\"support\",type=\"cached_input\"} 600",
        "tailor_tokens_total{client=\"team-a\",model=\"support-ft\",route=\"support\",type=\"output\"} 150",
        "tailor_reasoning_tokens_total{model=\"support-ft\",route=\"support\"} 30",
        "tailor_cost_usd_total{client=\"team-a\",model=\"support-ft\",route=\"support\"} 0.012375",
        "tailor_unrouted_requests_total 1",
        "tailor_build_info{version=",
        "# TYPE tailor_cost_usd_total counter",
        "tailor_request_duration_seconds_bucket",
        "tailor_time_to_first_token_seconds_bucket",
        "tailor_in_flight_requests{route=\"support\"} 0",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert_eq!(
        m.cost.pico("support", "support-ft", "team-a"),
        3 * 4_125_000_000
    );
}
