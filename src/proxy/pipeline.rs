//! One routed request (chat, completions, embeddings, responses), step by step:
//!
//! ```text
//! server slot (429) ─▶ read body (413) ─▶ RequestView::parse (400) ─▶ classify (404)
//!   ─▶ route slot (429) ─▶ budgets and rate limits reserved (429, 503) ─▶ RequestMeter::start
//!   ─▶ side paths subscribe: limits settle, capture sample, trace span, shadow copy
//!   ─▶ forward::attempt (try, retry, fall back) ─▶ response with MeteredBody
//! ```
//!
//! An error before forwarding is returned to [`super`], which answers it OpenAI-shaped.

use std::sync::Arc;

use http::{Request, Response};
use tokio::time::Instant;

use super::body::{read_body, ReqBody};
use crate::budget;
use crate::capture;
use crate::classify;
use crate::error::ProxyError;
use crate::forward::attempt::Attempt;
use crate::limits::{InFlight, Slot};
use crate::request::{Endpoint, RequestView};
use crate::shadow;
use crate::state::{LiveState, Shared};
use crate::usage::body::RespBody;
use crate::usage::meter::RequestMeter;

pub(super) fn try_slot(
    in_flight: &Arc<InFlight>,
    limit: usize,
    scope: &str,
) -> Result<Slot, ProxyError> {
    in_flight
        .try_take(limit)
        .ok_or_else(|| ProxyError::Overloaded {
            scope: scope.to_owned(),
        })
}

/// Serves one request to `endpoint` from `client` (an index into the config's clients).
pub async fn run<B: ReqBody>(
    shared: &Arc<Shared>,
    live: Arc<LiveState>,
    endpoint: Endpoint,
    client: usize,
    req: Request<B>,
) -> Result<Response<RespBody>, ProxyError> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let limit = live.config.server.max_concurrency;
    let server_slot = try_slot(&shared.server_in_flight, limit, "server")?;
    let body = read_body(body, &parts.headers, live.config.server.max_body_bytes).await?;
    let view = RequestView::parse(&body, endpoint)?;
    let draw = shared.next_random();
    let healthy = |m: usize| live.model_healthy(m);
    let decision = classify::classify(&live.config, &view, &parts.headers, draw, &healthy)
        .ok_or_else(|| ProxyError::Unrouted(view.model.chars().take(256).collect()))?;
    let route = &live.config.routes[decision.route];
    let mut permits = vec![server_slot];
    if let Some((in_flight, limit)) = live.route_limit(decision.route) {
        permits.push(try_slot(in_flight, *limit, &route.name)?);
    }
    // signed, with the route and model, so feedback to any replica finds the arm
    let nonce = shared.next_random();
    let request_id = live
        .ids
        .mint(&route.name, &live.config.models[decision.model].name, nonce);
    tracing::debug!(request_id, route = %route.name, model = %live.config.models[decision.model].name, pick = %decision.pick, "routed");
    let arm = live
        .arm_meter(decision.route, decision.model, client)
        .ok_or_else(|| ProxyError::Internal("no meter for the routed model".into()))?;
    // the worst case against every matching budget and rate, for the whole fleet
    let client_name = live
        .config
        .clients
        .get(client)
        .map_or(crate::state::ANONYMOUS, |c| c.name.as_str());
    let ask = budget::Ask {
        route: decision.route,
        model: decision.model,
        client: client_name,
        prompt_tokens: view.estimated_prompt_tokens(),
        max_output_tokens: view.max_output_tokens,
    };
    // on the heap, and only when a limit applies: the store's round trip is a large future,
    // copied whole with this one at every move
    let reservation = if budget::Budgets::applies(&live.config, &ask) {
        Box::pin(live.budgets.reserve(&live.config, &ask)).await?
    } else {
        None
    };
    let mut meter = RequestMeter::start(
        arm,
        started,
        endpoint.as_str(),
        view.stream,
        request_id,
        view.estimated_prompt_tokens(),
        permits,
    );
    if let Some(r) = reservation {
        meter.subscribe(Box::new(r));
    }
    if let Some(c) = &route.capture {
        // sample in millionths
        if shared.next_random() % 1_000_000 < (c.sample * 1e6).round() as u64 {
            let model = &live.config.models[decision.model];
            let prompt_tokens = route
                .prompt_for(decision.model)
                .map_or(0, |p| p.tokens_if_loaded(model));
            meter.subscribe(Box::new(capture::Sample::new(
                c,
                c.only_model.map(|m| live.config.models[m].name.as_str()),
                body.clone(),
                capture::request_info(&view, &parts.headers, prompt_tokens),
                shared.captures.clone(),
                shared
                    .metrics
                    .capture_dropped
                    .with_label_values(&[&route.name]),
            )));
        }
    }
    // one branch when tracing is off
    let trace = match &live.tracer {
        Some(t) => Some(t.start(
            &parts.headers,
            || shared.next_random(),
            endpoint,
            &view.model,
            &mut meter,
        )),
        None => None,
    };
    if let Some(pair) = shadow::launch(
        shared,
        &live,
        route,
        &view,
        &parts,
        trace.as_ref(),
        meter.request_id(),
    ) {
        meter.mark_shadowed();
        meter.subscribe(Box::new(pair));
    }
    let attempt = Attempt {
        shared,
        live: &live,
        decision: &decision,
        view: &view,
        parts: &parts,
        client,
        nonce,
        inject_usage: view.needs_usage_injection(),
        trace: trace.as_ref(),
    };
    // on the heap: a future is copied whole each time it moves into the one that awaits it, and
    // this one is most of the request's state (a pointer here keeps `run` and `handle` small)
    Ok(crate::heap::pinned(|| attempt.run(meter)).await)
}
