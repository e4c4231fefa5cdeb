//! `POST /orders` (the order id is the idempotency key) and `GET /orders/{id}`.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::Response,
};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use shared::{
    contract::{OrderPlaced, pending_order_key},
    model::OrderId,
};

use super::{
    AppState,
    ingest::{answer, json_body, publish_once},
};
use crate::{error::ApiError, request::parse_order};

/// Accepts an order: `202 {"order_id", "status": "pending"}` once the broker confirmed. The
/// processor then reserves the stock or rejects the order.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body(content = crate::openapi::OrderBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Durably in the broker; the order is pending", body = crate::openapi::OrderAccepted,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is a replay of the first answer"))),
        (status = 400, description = "Invalid body; `field` names it", body = crate::openapi::ErrorBody),
        (status = 409, description = "The same order is still being published", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "This order id was used with another body", body = crate::openapi::ErrorBody),
        (status = 503, description = "RabbitMQ or Redis unavailable; nothing accepted; see Retry-After", body = crate::openapi::ErrorBody),
    )
)]
pub async fn post_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(accept(&state, &headers, body).await)
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received_at = OffsetDateTime::now_utc();
    let body = json_body(headers, body)?;
    let request = parse_order(&body)?;
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
        &shared::trace::from_http(headers),
    )
    .await?;
    // Until the processor applies it, the order reads as pending (best effort: a read falls
    // back to 404 only in the moments before the processor has it).
    let pending = json!({
        "order_id": order.order_id,
        "sku": order.sku,
        "qty": order.qty,
        "status": "pending",
        "created_at": received_at.format(&Rfc3339).ok(),
    });
    let key = pending_order_key(&state.namespace, &order.order_id);
    state
        .cache_if_absent(&key, &pending.to_string(), state.pending_order_ttl_seconds)
        .await;
    Ok(response)
}

/// The order's status: `pending` (accepted, not yet applied), `created`, or `rejected` with a
/// reason.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = crate::openapi::OrderStatus),
        (status = 400, description = "Invalid order id", body = crate::openapi::ErrorBody),
        (status = 404, description = "Unknown order", body = crate::openapi::ErrorBody),
        (status = 503, description = "PostgreSQL unavailable", body = crate::openapi::ErrorBody),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: OrderId = id
        .parse()
        .map_err(|e| ApiError::field("id", format!("id {e}")))?;
    if !state.database.is_migrated() {
        return Err(ApiError::unavailable("postgres", "schema not ready"));
    }
    type Row = (
        String,
        i32,
        Option<String>,
        String,
        Option<String>,
        OffsetDateTime,
        OffsetDateTime,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT sku, qty, email, status, reason, created_at, updated_at FROM orders WHERE order_id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(state.database.pool())
    .await
    .map_err(|e| ApiError::unavailable("postgres", e))?;
    if let Some((sku, qty, email, status, reason, created_at, updated_at)) = row {
        return Ok(Json(json!({
            "order_id": id,
            "sku": sku,
            "qty": qty,
            "email": email,
            "status": status,
            "reason": reason,
            "created_at": created_at.format(&Rfc3339).ok(),
            "updated_at": updated_at.format(&Rfc3339).ok(),
        })));
    }
    let pending = state
        .cached(&pending_order_key(&state.namespace, &id))
        .await
        .and_then(|json| serde_json::from_str::<Value>(&json).ok());
    pending
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no order with id {id}")))
}
