//! The catalog's endpoints: `POST /products` (create an entry: its details now, its first price
//! and stock through the pipeline like any event), `PATCH /products/{id}` (change its details)
//! and `GET /products` (list with filters, keyset pages).

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    response::Response,
};
use serde::Serialize;
use shared::{
    api::{ApiError, bad, cursor_param, db, limit_param, only_params},
    auth::{Caller, Scope},
    contract::{EventKey, IngestKind, NewProduct, ProductUpdate},
    gateway::catalog::{Cached, Entry},
    model::{Price, ProductId},
};
use time::OffsetDateTime;

use super::{
    AppState,
    ingest::{Claim, Ingest, Refused, claim, idempotency_key, publish_claimed, release},
    products::read,
};
use crate::{
    catalog::{self, After, Created, Filter, Product, Sort, SortKey},
    idempotency::Answer,
    request::{NewProductRequest, parse_new_product, parse_patch, to_micros},
};

/// Creates a catalog entry: `201` with `Location` and the product as stored, once its details
/// are stored and its price and stock (a `product.create` event at the creation's time,
/// last-writer-wins like any event) are durably in the broker. Scope: `catalog:write`; for a
/// product that already has a price or stock from events, `events:write` too (the creation
/// would set them), else `403`.
#[utoipa::path(
    post,
    path = "/products",
    tag = "catalog",
    request_body(content = crate::openapi::NewProductBody, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Client key (1-255 visible ASCII characters). A repeat with the same body replays the first answer.")),
    responses(
        (status = 201, description = "Created; its price and stock apply within moments", body = Product,
            headers(("Location" = String, description = "The product's URL"))),
        (status = 403, description = "The product already has a price or stock from events, and the key lacks events:write"),
    )
)]
pub async fn post_product(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Ingest {
        received_at,
        headers,
        body,
    }: Ingest,
) -> Result<Response, Refused> {
    let key = idempotency_key(&headers)?;
    let request = parse_new_product(&body)?;
    let key = key.map(|id| EventKey {
        kind: IngestKind::ProductCreate,
        owner: caller.owner.clone(),
        id,
    });
    let lease = match claim(&state, key.as_ref(), &request.fingerprint).await? {
        Claim::Replay(response) => return Ok(response),
        Claim::Lease(lease) => lease,
    };
    let id = request
        .product_id
        .clone()
        .unwrap_or_else(ProductId::generate);
    let unpriced = match may_set_price_and_stock(&state, &caller, &id).await {
        Ok(unpriced) => unpriced,
        Err(error) => {
            release(&state, lease).await;
            return Err(error.into());
        }
    };
    let entry = match store(&state, &id, &request, to_micros(received_at)).await {
        Ok(entry) => entry,
        Err(error) => {
            release(&state, lease).await;
            return Err(error.into());
        }
    };
    let message = NewProduct(ProductUpdate {
        event_id: NewProduct::event_id_of(&id),
        owner: caller.owner.clone(),
        product_id: id.clone(),
        price: Some(request.price),
        stock: Some(request.stock),
        occurred_at: entry.created_at,
        received_at,
    });
    let product = Product::of(id, None, Some(entry), &state.objects).map(|p| Product {
        price: Some(request.price),
        stock: Some(request.stock),
        ..p
    });
    let answer = Answer::Created {
        product_id: message.0.product_id.clone(),
        body: serde_json::to_string(&product).expect("a product always serialises"),
    };
    let trace = shared::trace::from_http(&headers);
    let response = publish_claimed(&state, lease, &message, answer, &trace).await?;
    if unpriced {
        show_until_applied(&state, &message.0).await;
    }
    Ok(response)
}

/// Read your own writes: a new product's price and stock as the creation set them, cached as
/// its state until the processor applies the creation and writes the state itself (over this).
/// Only for a product that had no state: one that had is shown as it is until then.
async fn show_until_applied(state: &AppState, creation: &ProductUpdate) {
    let view = shared::contract::ProductView {
        product_id: creation.product_id.clone(),
        price: creation.price,
        stock: creation.stock,
        updated_at: creation.occurred_at,
    };
    // Best effort: with Redis down the product shows as PostgreSQL has it.
    let _ = state.catalog.state().put_if_absent(&view).await;
}

/// A creation sets its product's price and stock: for a product events already priced or
/// stocked, only a key that may send events (`events:write`) may do that. Whether the product
/// has no state yet (then its creation's values are shown until applied).
async fn may_set_price_and_stock(
    state: &AppState,
    caller: &Caller,
    id: &ProductId,
) -> Result<bool, ApiError> {
    let pool = shared::api::pool(&state.database)?;
    let unpriced = shared::processor::products::load(pool, id)
        .await
        .map_err(db)?
        .is_none();
    if unpriced || caller.scopes.contains(Scope::EventsWrite) {
        return Ok(unpriced);
    }
    if catalog::priced_without_entry(pool, id).await.map_err(db)? {
        return Err(ApiError::Forbidden {
            message: format!(
                "product {id} already has a price or stock from events; a catalog entry for it \
                 sets both, which needs the scope events:write too"
            )
            .into(),
            scope: Scope::EventsWrite.as_str(),
        });
    }
    Ok(false)
}

/// Stores `id`'s entry (or finds the one an earlier try of this request stored) and caches it.
async fn store(
    state: &AppState,
    id: &ProductId,
    request: &NewProductRequest,
    at: OffsetDateTime,
) -> Result<Entry, ApiError> {
    let pool = shared::api::pool(&state.database)?;
    let created = catalog::create(pool, id, &request.details, &request.fingerprint, at)
        .await
        .map_err(db)?;
    let Created::Stored(entry) = created else {
        return Err(ApiError::Conflict(
            format!(
                "product {id} already has a catalog entry; change its details with PATCH /products/{id}"
            )
            .into(),
        ));
    };
    refresh(state, id, &entry).await?;
    Ok(entry)
}

/// Writes `entry` to the cache; a failure is a 503 (the change is stored: the same request
/// again refreshes the cache and answers).
async fn refresh(state: &AppState, id: &ProductId, entry: &Entry) -> Result<(), ApiError> {
    state
        .catalog
        .put(id, &Cached::of(Some(entry.clone())))
        .await
        .map_err(|e| ApiError::unavailable("redis", e))
}

/// Changes a catalog entry's name, description (`null` clears it), category or tags; price and
/// stock change by events. `200` with the product; the next read shows the change. Scope:
/// `catalog:write`.
#[utoipa::path(
    patch,
    path = "/products/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "Product id")),
    request_body(content = crate::openapi::PatchProductBody, content_type = "application/json"),
    responses((status = 200, description = "Changed", body = Product))
)]
pub async fn patch_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ingest: Ingest,
) -> Result<Response, Refused> {
    Ok(change(&state, &id, &ingest.body).await?)
}

async fn change(state: &AppState, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let id: ProductId = id
        .parse()
        .map_err(|e| bad("product_id", format!("product_id {e}")))?;
    let patch = parse_patch(body)?;
    let pool = shared::api::pool(&state.database)?;
    let entry = catalog::patch(pool, &id, &patch)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            ApiError::NotFound(
                format!("product {id} has no catalog entry; create one with POST /products").into(),
            )
        })?;
    refresh(state, &id, &entry).await?;
    let product = read(state, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product with id {id}").into()))?;
    Ok(axum::response::IntoResponse::into_response(Json(product)))
}

/// A page of products.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    /// The products, in the order asked.
    pub items: Vec<Product>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

const PARAMS: [&str; 9] = [
    "category",
    "tag",
    "q",
    "min_price",
    "max_price",
    "in_stock",
    "sort",
    "limit",
    "cursor",
];

/// Lists catalog products, filtered, in pages: no product twice or missing across pages while
/// nothing changes. Scope: `products:read`.
#[utoipa::path(
    get,
    path = "/products",
    tag = "catalog",
    params(
        ("category" = Option<String>, Query, description = "Only this category"),
        ("tag" = Option<String>, Query, description = "Only products with this tag"),
        ("q" = Option<String>, Query, description = "Full-text search in name and description (web search syntax: words, \"phrases\", -not, or)"),
        ("min_price" = Option<shared::model::Price>, Query, description = "Price at least"),
        ("max_price" = Option<shared::model::Price>, Query, description = "Price at most"),
        ("in_stock" = Option<bool>, Query, description = "true: stock above 0; false: none"),
        ("sort" = Option<String>, Query, description = "name (default), price, updated_at or created_at; prefix - for descending"),
        ("limit" = Option<i64>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "A page", body = ProductPage))
)]
pub async fn list_products(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ProductPage>, ApiError> {
    only_params(params.keys(), &PARAMS)?;
    let filter = filter(&params)?;
    let sort = match params.get("sort") {
        None => Sort {
            key: SortKey::Name,
            descending: false,
        },
        Some(name) => Sort::parse(name).ok_or_else(|| {
            let names = SortKey::ALL.map(SortKey::as_str).join(", ");
            bad(
                "sort",
                format!("sort must be one of {names}, each optionally prefixed with -"),
            )
        })?,
    };
    let limit = limit_param(params.get("limit"), 20, 100)?;
    let after = cursor(params.get("cursor"), sort)?;
    let pool = shared::api::pool(&state.database)?;
    let (items, next) = catalog::list(pool, &filter, sort, after.as_ref(), limit, &state.objects)
        .await
        .map_err(db)?;
    let next_cursor = next.as_ref().map(shared::api::encode_cursor);
    Ok(Json(ProductPage { items, next_cursor }))
}

fn filter(params: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let text = |name: &str, max: usize| {
        params
            .get(name)
            .map(|v| {
                let length = v.chars().count();
                if (1..=max).contains(&length) {
                    Ok(v.clone())
                } else {
                    Err(bad(
                        name,
                        format!("{name} must be 1 to {max} characters long"),
                    ))
                }
            })
            .transpose()
    };
    let price = |name: &str| {
        params
            .get(name)
            .map(|v| {
                v.parse::<Price>()
                    .map(Price::value)
                    .map_err(|e| bad(name, format!("{name} {e}")))
            })
            .transpose()
    };
    let filter = Filter {
        category: text("category", 100)?,
        tag: text("tag", 50)?,
        q: text("q", 200)?,
        min_price: price("min_price")?,
        max_price: price("max_price")?,
        in_stock: params
            .get("in_stock")
            .map(|v| match v.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad("in_stock", "in_stock must be true or false")),
            })
            .transpose()?,
    };
    if let (Some(min), Some(max)) = (filter.min_price, filter.max_price)
        && min > max
    {
        return Err(bad("min_price", "min_price must not be above max_price"));
    }
    Ok(filter)
}

fn cursor(text: Option<&String>, sort: Sort) -> Result<Option<After>, ApiError> {
    let Some(after) = cursor_param::<After>(text)? else {
        return Ok(None);
    };
    if !sort.key.holds(&after.value) {
        return Err(bad("cursor", "cursor is not one this API gave"));
    }
    if after.sort != sort.name() {
        return Err(bad(
            "cursor",
            format!(
                "cursor belongs to sort={}; ask with the same sort (and filters)",
                after.sort
            ),
        ));
    }
    Ok(Some(after))
}
