//! The HTTP API: `POST /events`, `GET /products/{id}`, `GET /openapi.json` (each also under
//! `/api/v1`), plus `/health`, `/ready` and `/metrics`. Unknown paths and wrong methods get the
//! same JSON error shape as everything else.

pub mod events;
mod ingest;
pub mod orders;
pub mod products;

use axum::{Json, Router, extract::DefaultBodyLimit, middleware, routing::get, routing::post};
use redis::aio::ConnectionManager;
use shared::{
    connect::{postgres::Database, redis::COMMAND_TIMEOUT},
    ops,
    topology::Namespace,
};

use crate::{error::ApiError, idempotency::Idempotency, publisher::Publisher};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Publishes to the broker with confirms.
    pub publisher: Publisher,
    /// Idempotency records.
    pub idempotency: Idempotency,
    /// The read cache.
    pub redis: ConnectionManager,
    /// The source of truth behind the cache.
    pub database: Database,
    /// Prefix of every key.
    pub namespace: Namespace,
    /// How long an accepted order reads as pending without the processor's answer.
    pub pending_order_ttl_seconds: u64,
}

impl AppState {
    /// The value at `key`, if Redis answers in time (a cache outage only costs latency).
    pub async fn cached(&self, key: &str) -> Option<String> {
        let mut redis = self.redis.clone();
        let get = redis::cmd("GET").arg(key).to_owned();
        tokio::time::timeout(
            COMMAND_TIMEOUT,
            get.query_async::<Option<String>>(&mut redis),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
    }

    /// Sets `key` for `ttl_seconds` unless it already holds a value (never overwriting what
    /// the processor wrote meanwhile); best effort: a Redis outage is ignored.
    pub async fn cache_if_absent(&self, key: &str, value: &str, ttl_seconds: u64) {
        let mut redis = self.redis.clone();
        let set = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(ttl_seconds)
            .arg("NX")
            .to_owned();
        let _ = tokio::time::timeout(
            COMMAND_TIMEOUT,
            set.query_async::<Option<String>>(&mut redis),
        )
        .await;
    }
}

impl ops::Readiness for AppState {
    async fn dependencies(&self) -> Vec<(&'static str, bool)> {
        let (redis, postgres) = tokio::join!(
            shared::connect::redis::is_up(&self.redis),
            self.database.is_up()
        );
        vec![
            ("rabbitmq", self.publisher.is_up()),
            ("redis", redis),
            ("postgres", postgres),
        ]
    }
}

/// The gateway's whole router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/events", post(events::post_event))
        .route("/products/{id}", get(products::get_product))
        .route("/orders", post(orders::post_order))
        .route("/orders/{id}", get(orders::get_order))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone());
    Router::new()
        .merge(api.clone())
        .nest("/api/v1", api)
        .merge(ops::routes(state))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn(ops::track_requests))
}
