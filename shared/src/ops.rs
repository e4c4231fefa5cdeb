//! The endpoints every service serves for the people and machines that run it:
//! `GET /health` (liveness, no dependency checks), `GET /ready` (every dependency and every
//! queue the service consumes, and what the service adds, the processor's shards; 503 naming
//! what is down or not ready; answered at once from state kept current in the background,
//! never waiting on a dependency) and `GET /metrics` (Prometheus text).

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::service::Checks;

/// Seconds a client is asked to wait when a dependency is down.
pub const RETRY_AFTER_SECONDS: &str = "5";

/// The `/health`, `/ready` and `/metrics` routes (installing the metrics recorder if needed).
pub fn routes(checks: Checks) -> Router {
    crate::telemetry::metrics();
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(checks)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

async fn ready(State(checks): State<Checks>) -> Response {
    let dependencies = checks.dependencies();
    let consumers = checks.queues();
    let (degraded, down): (Vec<&str>, Vec<&str>) = dependencies
        .iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| *name)
        .partition(|name| checks.is_optional(name));
    let idle: Vec<&str> = consumers
        .iter()
        .filter(|(_, live)| !live)
        .map(|(queue, _)| queue.as_str())
        .collect();
    let detail: serde_json::Map<String, serde_json::Value> = dependencies
        .iter()
        .map(|(name, up)| ((*name).to_owned(), json!(if *up { "up" } else { "down" })))
        .collect();
    let mut body = json!({ "dependencies": detail });
    if !consumers.is_empty() {
        body["consumers"] = consumers
            .iter()
            .map(|(queue, live)| (queue.clone(), json!(if *live { "live" } else { "none" })))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let mut waiting = Vec::new();
    for (name, (ready, detail)) in checks.details() {
        body[name] = detail;
        if !ready {
            waiting.push(name);
        }
    }
    if !degraded.is_empty() {
        body["degraded"] = json!(degraded);
    }
    if down.is_empty() && idle.is_empty() && waiting.is_empty() {
        body["status"] = json!("ready");
        Json(body).into_response()
    } else {
        body["status"] = json!("unavailable");
        body["down"] = json!(down);
        if !idle.is_empty() {
            body["without_consumer"] = json!(idle);
        }
        if !waiting.is_empty() {
            body["waiting_for"] = json!(waiting);
        }
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
            Json(body),
        )
            .into_response()
    }
}

/// Sets `pipeline_dependency_up` (1 up, 0 down) for each dependency.
pub fn record(dependencies: &[(&'static str, bool)]) {
    for (name, up) in dependencies {
        metrics::gauge!(crate::metric::DEPENDENCY_UP, "dependency" => *name).set(if *up {
            1.0
        } else {
            0.0
        });
    }
}

async fn metrics() -> impl IntoResponse {
    let handle = crate::telemetry::metrics();
    crate::telemetry::process().collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

/// Middleware counting requests by route, method and status, and timing them by route; every
/// label from a fixed set (the route template or `unmatched`, never the concrete path; a
/// defined method or `_OTHER`), so no request makes a new series; and, when tracing, the
/// request's HTTP server span, which the handler's spans continue.
pub async fn track_requests(
    axum::extract::State(service): axum::extract::State<&'static str>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = crate::http::known_method(request.method());
    let span = crate::trace::server(service, &mut request, matched.as_deref());
    if let (Some(trace_id), Some(span_id)) = (span.trace_id(), span.span_id()) {
        let request_span = tracing::Span::current();
        request_span.record("trace_id", trace_id);
        request_span.record("span_id", span_id);
    }
    let route = matched.unwrap_or_else(|| "unmatched".to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    span.answered(response.status().as_u16());
    metrics::counter!(
        crate::metric::HTTP_REQUESTS_TOTAL,
        "route" => route.clone(),
        "method" => method,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(crate::metric::HTTP_REQUEST_DURATION_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
