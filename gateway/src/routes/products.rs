//! `GET /products/{id}`: the product's current state and catalog details, from the Redis read
//! cache, with PostgreSQL behind it.

use axum::{
    Json,
    extract::{Path, State},
};
use shared::{contract::ProductView, model::ProductId};

use super::AppState;
use crate::catalog::Product;
use shared::api::{ApiError, bad};
use shared::gateway::catalog::{self, Cached};

/// Returns the product: `{"product_id", "price", "stock", "updated_at"}` (`null` for a field
/// never set) and its catalog details (`name`, `description`, `category`, `tags`,
/// `images`, `created_at`; `null` and `[]` for a product known only from events). Scope: `products:read`.
#[utoipa::path(
    get,
    path = "/products/{id}",
    tag = "products",
    params(("id" = String, Path, description = "Product id")),
    responses((status = 200, description = "Current state", body = Product))
)]
pub async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let id: ProductId = id
        .parse()
        .map_err(|e| bad("product_id", format!("product_id {e}")))?;
    read(&state, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no product with id {id}").into()))
}

/// The product `id`, `None` if nothing ever set it: its state and its entry each from the cache
/// (one round trip), else from PostgreSQL, then cached. A cache outage only costs latency.
pub async fn read(state: &AppState, id: &ProductId) -> Result<Option<Product>, ApiError> {
    let (cached_state, cached_entry) = state.catalog.get(id).await;
    let mut source = "cache";
    let view = match cached_state {
        Some(view) => Some(view),
        None => {
            source = "database";
            load(state, id).await?
        }
    };
    let entry = match cached_entry {
        Some(cached) => cached.entry,
        None => {
            source = "database";
            let entry = catalog::load(shared::api::pool(&state.database)?, id)
                .await
                .map_err(shared::api::db)?;
            // Best effort: a newer record already there stays.
            let _ = state.catalog.put(id, &Cached::of(entry.clone())).await;
            entry
        }
    };
    metrics::counter!(shared::metric::PRODUCT_READS_TOTAL, "source" => source).increment(1);
    Ok(Product::of(id.clone(), view, entry, &state.objects))
}

/// The state from PostgreSQL, cached unless the processor wrote a newer one meanwhile.
async fn load(state: &AppState, id: &ProductId) -> Result<Option<ProductView>, ApiError> {
    let view = shared::processor::products::load(shared::api::pool(&state.database)?, id)
        .await
        .map_err(|e| ApiError::unavailable("postgres", e))?;
    if let Some(view) = &view {
        // Best effort: a cache outage only costs the next read a trip to PostgreSQL.
        let _ = state.catalog.state().put_if_absent(view).await;
    }
    Ok(view)
}
