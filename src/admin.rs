//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/economics` (JSON) and `/` (the status
//! page). Never on the API port, so metrics and spend are not exposed to API clients and a
//! saturated API cannot starve the health checks.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::economics::page::LimitUse;
use crate::economics::{self, Report};
use crate::state::Shared;

/// This replica's economics since it started (the `tailor_finetune_*` gauges).
fn local_report(shared: &Shared) -> Report {
    let live = shared.live.load();
    economics::report(&live.config, &shared.keep.ledger.snapshot())
}

/// The economics `/economics` and the status page show: the fleet's from Prometheus when
/// `economics.prometheus_url` is set, else this replica's (the report says which).
async fn report(shared: &Shared) -> Report {
    let live = shared.live.load_full();
    let snap = economics::fleet::figures(&live.config, &shared.keep.ledger, None).await;
    economics::report(&live.config, &snap)
}

/// Each limit of the config with its dollar budget's spend as this replica last saw it.
fn limits(shared: &Shared, cfg: &crate::config::Config) -> Vec<LimitUse> {
    let m = &shared.metrics.limits;
    cfg.limits
        .iter()
        .map(|l| {
            let spent = m
                .spent
                .get_metric_with_label_values(&[&l.name])
                .ok()
                .map(|g| g.get())
                .filter(|v| *v > 0.0);
            LimitUse {
                name: l.name.clone(),
                caps: l.describe_caps(),
                spent_usd: spent,
                max_usd: l.usd.map(|(max, _)| max as f64 / 1e12),
            }
        })
        .collect()
}

/// Answers one admin request.
pub async fn handle<B>(
    shared: Arc<Shared>,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body): (StatusCode, &'static str, Bytes) =
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                shared.refresh_health_gauges();
                economics::publish(&shared.metrics, &local_report(&shared));
                (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    Bytes::from(shared.metrics.encode()),
                )
            }
            (&Method::GET, "/economics") => (
                StatusCode::OK,
                "application/json",
                Bytes::from(serde_json::to_vec_pretty(&report(&shared).await).unwrap_or_default()),
            ),
            (&Method::GET, "/") => {
                let r = report(&shared).await;
                let live = shared.live.load();
                let health: Vec<(String, bool)> = live
                    .config
                    .models
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.name.clone(), live.model_healthy(i)))
                    .collect();
                (
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from(economics::render_html(
                        &r,
                        &health,
                        &limits(&shared, &live.config),
                    )),
                )
            }
            (&Method::GET, "/healthz") => {
                (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n"))
            }
            (&Method::GET, "/readyz") => {
                if shared.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n"))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        Bytes::from_static(b"shutting down\n"),
                    )
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"not found: try /, /economics, /metrics, /healthz, /readyz\n"),
            ),
        };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}
