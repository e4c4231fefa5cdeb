//! `POST /orders` (the order id is the idempotency key) and `GET /orders/{id}`. Order ids live
//! in the space of the API key that places them: two keys' `o1` are two orders, and each key
//! reads only its own, but for keys with `orders:read_all` or `ops`.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::json;

use shared::{
    api::{ApiError, bad, only_params},
    auth::{Caller, Scope},
    contract::OrderPlaced,
    model::{OrderId, Owner},
    processor::orders::Order,
    topology::Namespace,
};

use super::{
    AppState,
    ingest::{Ingest, Refused, publish_once},
};

use crate::request::parse_order;

/// Accepts an order: `202 {"order_id", "status": "pending"}` once the broker confirmed. The
/// processor then reserves the stock or rejects the order. Scope: `orders:write`.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body(content = crate::openapi::OrderBody, content_type = "application/json"),
    responses((status = 202, description = "Durably in the broker; the order is pending", body = crate::openapi::OrderAccepted))
)]
pub async fn post_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ingest: Ingest,
) -> Result<Response, Refused> {
    let request = parse_order(&ingest.body)?;
    let received_at = ingest.received_at;
    let order = OrderPlaced {
        event_id: OrderPlaced::event_id_of(&request.id),
        owner: caller.owner.clone(),
        order_id: request.id,
        sku: request.sku,
        qty: request.qty,
        email: request.email,
        received_at,
    };
    let accepted = json!({ "order_id": order.order_id, "status": "pending" });
    let response = publish_once(
        &state,
        Some(&order.event_id),
        &request.fingerprint,
        &order,
        accepted,
        &shared::trace::from_http(&ingest.headers),
    )
    .await?;
    // Until the processor applies it, the order reads as pending (best effort: a read falls
    // back to 404 only in the moments before the processor has it).
    let pending = serde_json::to_string(&Order::pending(&order)).expect("an order serialises");
    let key = pending_order_key(&state.namespace, &order.owner, &order.order_id);
    state
        .cache_if_absent(&key, &pending, state.pending_order_ttl_seconds)
        .await;
    Ok(response)
}

/// The order's status: `pending` (accepted, not yet applied), `created`, or `rejected` with a
/// reason. Scope: `orders:read`, for the orders the calling key placed (another key's is `404`,
/// as if it did not exist); with `orders:read_all` or `ops`, any key's (`?placed_by=NAME` names
/// the key when several placed an order with that id).
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id"),
        ("placed_by" = Option<String>, Query,
            description = "The name of the key that placed it (orders:read_all or ops only)"),
    ),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 403, description = "placed_by names another key and this one lacks orders:read_all"),
        (status = 404, description = "No such order among those this key may read"),
        (status = 409, description = "Several keys placed an order with this id: name one with placed_by"),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_params(params.keys(), &["placed_by"])?;
    let id: OrderId = id.parse().map_err(|e| bad("id", format!("id {e}")))?;
    let reads_all =
        caller.scopes.contains(Scope::OrdersReadAll) || caller.scopes.contains(Scope::Ops);
    let named = match params.get("placed_by") {
        None => None,
        Some(name) => {
            let owner: Owner = name
                .parse()
                .map_err(|e| bad("placed_by", format!("placed_by: {e}")))?;
            if owner != caller.owner && !reads_all {
                return Err(ApiError::Forbidden {
                    message: "reading the orders of another key needs the scope orders:read_all"
                        .into(),
                    scope: Scope::OrdersReadAll.as_str(),
                });
            }
            Some(owner)
        }
    };
    let missing = || ApiError::NotFound(format!("no order with id {id}").into());
    let owner = named.clone().unwrap_or_else(|| caller.owner.clone());
    if let Some(found) = read(&state, &owner, &id).await? {
        return Ok(found);
    }
    if !reads_all || named.is_some() {
        return Err(missing());
    }
    // Whoever placed it (orders placed before ids were scoped by key included).
    let pool = shared::api::pool(&state.database)?;
    let mut found = shared::processor::orders::with_id(pool, &id, 2)
        .await
        .map_err(shared::api::db)?;
    match (found.pop(), found.is_empty()) {
        (Some(order), true) => Ok(Json(order).into_response()),
        (Some(_), false) => Err(ApiError::Conflict(
            format!("several keys placed an order with id {id}: name one with ?placed_by=NAME")
                .into(),
        )),
        (None, _) => Err(missing()),
    }
}

/// The order `id` that `owner` placed: decided, or pending in the cache.
async fn read(state: &AppState, owner: &Owner, id: &OrderId) -> Result<Option<Response>, ApiError> {
    let pool = shared::api::pool(&state.database)?;
    let decided = shared::processor::orders::load(pool, owner, id)
        .await
        .map_err(shared::api::db)?;
    if let Some(order) = decided {
        return Ok(Some(Json(order).into_response()));
    }
    Ok(state
        .cached(&pending_order_key(&state.namespace, owner, id))
        .await
        .map(|pending| ([(header::CONTENT_TYPE, "application/json")], pending).into_response()))
}

/// Redis key of an order accepted but not yet applied (so `GET /orders/{id}` can say
/// `pending`), in the space of the key that placed it; the gateway alone reads and writes it.
fn pending_order_key(namespace: &Namespace, owner: &Owner, id: &OrderId) -> String {
    format!(
        "{}:order:{}:{}",
        namespace.as_str(),
        owner.as_str(),
        id.as_str()
    )
}
