//! The HTTP API: `POST /events`, `GET /products/{id}`, `POST /orders`, `GET /orders/{id}`,
//! the catalog's `POST /products`, `PATCH /products/{id}` and `GET /products`, its images'
//! `POST /products/{id}/images`, `GET /products/{id}/images/{image_id}` and `GET /images/{key}`,
//! `GET /openapi.json` (each also under `/api/v1`), plus `/health`, `/ready` and `/metrics`.
//! Every data route wants an API key with its scope. Unknown paths and wrong methods get the
//! same JSON error shape as everything else.

pub mod catalog;
pub mod events;
pub mod images;
mod ingest;
pub mod orders;
pub mod products;

use std::{ops::Deref, sync::Arc};

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    routing::{get, patch, post},
};
use redis::aio::ConnectionManager;
use shared::{
    auth::{Auth, Scope, protect},
    connect::{postgres::Database, redis::timed},
    topology::Namespace,
};

use crate::{idempotency::Idempotency, publisher::Publisher};

/// What every handler shares, behind one reference count: axum clones it for every request,
/// so a clone is one atomic increment, not a copy of each part.
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl From<Parts> for AppState {
    fn from(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }
}

impl Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Parts {
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
    /// The API keys.
    pub auth: Auth,
    /// The catalog entries' cache (and the products' cache keys and lifetime).
    pub catalog: shared::gateway::catalog::Cache,
    /// Where image bytes are stored.
    pub objects: shared::objects::Objects,
    /// Room for image uploads in memory, in bytes ([`crate::Config::upload_memory`]).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Images a product may have ([`crate::Config::images_per_product`]).
    pub images_per_product: u32,
}

impl AppState {
    /// The value at `key`, if Redis answers in time (a cache outage only costs latency).
    pub async fn cached(&self, key: &str) -> Option<String> {
        let mut redis = self.redis.clone();
        let get = redis::cmd("GET").arg(key).to_owned();
        timed(get.query_async::<Option<String>>(&mut redis))
            .await
            .ok()
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
        let _ = timed(set.query_async::<Option<String>>(&mut redis)).await;
    }
}

/// The gateway's whole router: each data route wants a key with its scope.
pub fn router(state: AppState) -> Router {
    let scoped = [
        ("/events", post(events::post_event), Scope::EventsWrite),
        (
            "/products/{id}",
            get(products::get_product),
            Scope::ProductsRead,
        ),
        (
            "/products/{id}",
            patch(catalog::patch_product),
            Scope::CatalogWrite,
        ),
        (
            "/products",
            get(catalog::list_products),
            Scope::ProductsRead,
        ),
        (
            "/products",
            post(catalog::post_product),
            Scope::CatalogWrite,
        ),
        (
            "/products/{id}/images",
            post(images::post_image).layer(DefaultBodyLimit::max(images::MAX_IMAGE_BYTES)),
            Scope::CatalogWrite,
        ),
        (
            "/products/{id}/images/{image_id}",
            get(images::get_image),
            Scope::ProductsRead,
        ),
        ("/orders", post(orders::post_order), Scope::OrdersWrite),
        ("/orders/{id}", get(orders::get_order), Scope::OrdersRead),
    ];
    let api = scoped
        .into_iter()
        .fold(Router::new(), |api, (path, route, scope)| {
            api.merge(protect(
                Router::new().route(path, route),
                &state.auth,
                scope,
            ))
        })
        // Variant URLs are capabilities (random image ids): no key, so an <img> can show them.
        .route("/images/{*key}", get(images::serve_image))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route(
            "/docs",
            get(|| async { shared::openapi::page(crate::openapi::document()) }),
        )
        .with_state(state.clone());
    Router::new().merge(api.clone()).nest("/api/v1", api)
}
