//! The admin listener: `/metrics`, `/healthz`, `/readyz`. Never on the API port, so metrics are
//! not exposed to API clients and a saturated API cannot starve the health checks.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::proxy::Shared;

pub async fn handle<B>(
    shared: Arc<Shared>,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body): (StatusCode, &'static str, Bytes) =
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                shared.refresh_health_gauges();
                (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    Bytes::from(shared.metrics.encode()),
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
                Bytes::from_static(b"not found: try /metrics, /healthz, /readyz\n"),
            ),
        };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}
