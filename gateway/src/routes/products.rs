//! `GET /products/{id}`: the product's current state, from the Redis read cache, with
//! PostgreSQL behind it.

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use shared::{
    contract::ProductView,
    model::ProductId,
    products::{CACHE_TTL_SECONDS, cache_key},
};

use super::AppState;
use shared::api::{ApiError, bad};

/// Returns `{"product_id", "price", "stock", "updated_at"}` (`null` for a field never set).
/// Scope: `products:read`.
#[utoipa::path(
    get,
    path = "/products/{id}",
    tag = "products",
    params(("id" = String, Path, description = "Product id")),
    responses((status = 200, description = "Current state", body = ProductView))
)]
pub async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: ProductId = id
        .parse()
        .map_err(|e| bad("product_id", format!("product_id {e}")))?;
    let key = cache_key(&state.namespace, &id);
    // A cache outage only costs latency: fall through to PostgreSQL.
    if let Some(json) = state.cached(&key).await {
        metrics::counter!(shared::metric::PRODUCT_READS_TOTAL, "source" => "cache").increment(1);
        return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
    }
    let view = load(&state, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product with id {id}").into()))?;
    metrics::counter!(shared::metric::PRODUCT_READS_TOTAL, "source" => "database").increment(1);
    let json = serde_json::to_string(&view).expect("a product view always serialises");
    state.cache_if_absent(&key, &json, CACHE_TTL_SECONDS).await;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

async fn load(state: &AppState, id: &ProductId) -> Result<Option<ProductView>, ApiError> {
    shared::products::load(shared::api::pool(&state.database)?, id)
        .await
        .map_err(|e| ApiError::unavailable("postgres", e))
}
