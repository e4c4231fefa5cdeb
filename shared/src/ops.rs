//! The endpoints every service serves for the people and machines that run it:
//! `GET /health` (liveness, no dependency checks), `GET /ready` (every dependency, 503 naming
//! the ones that are down) and `GET /metrics` (Prometheus text).

use std::future::Future;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

/// Seconds a client is asked to wait when a dependency is down.
pub const RETRY_AFTER_SECONDS: &str = "5";

/// What a service depends on, and whether each dependency is up right now.
pub trait Readiness: Clone + Send + Sync + 'static {
    /// Each dependency by name (`rabbitmq`, `redis`, `postgres`) and whether it is up.
    fn dependencies(&self) -> impl Future<Output = Vec<(&'static str, bool)>> + Send;
}

/// The `/health`, `/ready` and `/metrics` routes (installing the metrics recorder if needed).
pub fn routes<R: Readiness>(readiness: R) -> Router {
    crate::telemetry::metrics();
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready::<R>))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

async fn ready<R: Readiness>(State(readiness): State<R>) -> Response {
    let dependencies = readiness.dependencies().await;
    let down: Vec<&str> = dependencies
        .iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| *name)
        .collect();
    let detail: serde_json::Map<String, serde_json::Value> = dependencies
        .iter()
        .map(|(name, up)| ((*name).to_owned(), json!(if *up { "up" } else { "down" })))
        .collect();
    record(&dependencies);
    if down.is_empty() {
        Json(json!({ "status": "ready", "dependencies": detail })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
            Json(json!({ "status": "unavailable", "down": down, "dependencies": detail })),
        )
            .into_response()
    }
}

fn record(dependencies: &[(&'static str, bool)]) {
    for (name, up) in dependencies {
        metrics::gauge!("pipeline_dependency_up", "dependency" => *name).set(if *up {
            1.0
        } else {
            0.0
        });
    }
}

/// Checks every dependency every `every` until `shutdown`, keeping the `pipeline_dependency_up`
/// gauge (1 up, 0 down) current even when nobody asks `/ready`.
pub fn watch_dependencies<R: Readiness>(
    readiness: R,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => record(&readiness.dependencies().await),
                () = shutdown.cancelled() => return,
            }
        }
    });
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
}

/// Middleware counting requests by route, method and status, and timing them by route (the
/// route template, never the concrete path, so ids stay out of labels).
pub async fn track_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics::counter!(
        "pipeline_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("pipeline_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
