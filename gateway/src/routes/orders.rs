//! `POST /orders` (the order id is the idempotency key) and `GET /orders/{id}`.

use axum::{
    Json,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::json;

use shared::{
    api::{ApiError, bad},
    contract::OrderPlaced,
    model::OrderId,
    orders::Order,
    topology::Namespace,
};

use super::{
    AppState,
    ingest::{Ingest, answer, publish_once},
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
pub async fn post_order(State(state): State<AppState>, ingest: Ingest) -> Response {
    answer(accept(&state, ingest).await)
}

async fn accept(state: &AppState, ingest: Ingest) -> Result<Response, ApiError> {
    let request = parse_order(&ingest.body)?;
    let received_at = ingest.received_at;
    let order = OrderPlaced {
        event_id: OrderPlaced::event_id_of(&request.id),
        order_id: request.id,
        sku: request.sku,
        qty: request.qty,
        email: request.email,
        received_at,
    };
    let accepted = json!({ "order_id": order.order_id, "status": "pending" });
    let response = publish_once(
        state,
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
    let key = pending_order_key(&state.namespace, &order.order_id);
    state
        .cache_if_absent(&key, &pending, state.pending_order_ttl_seconds)
        .await;
    Ok(response)
}

/// The order's status: `pending` (accepted, not yet applied), `created`, or `rejected` with a
/// reason. Scope: `orders:read`.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, description = "The order", body = Order))
)]
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: OrderId = id.parse().map_err(|e| bad("id", format!("id {e}")))?;
    let pool = shared::api::pool(&state.database)?;
    let decided = shared::orders::load(pool, &id)
        .await
        .map_err(shared::api::db)?;
    if let Some(order) = decided {
        return Ok(Json(order).into_response());
    }
    let pending = state
        .cached(&pending_order_key(&state.namespace, &id))
        .await
        .ok_or_else(|| ApiError::NotFound(format!("no order with id {id}").into()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], pending).into_response())
}

/// Redis key of an order accepted but not yet applied (so `GET /orders/{id}` can say
/// `pending`); the gateway alone reads and writes it.
fn pending_order_key(namespace: &Namespace, id: &OrderId) -> String {
    format!("{}:order:{}", namespace.as_str(), id.as_str())
}
