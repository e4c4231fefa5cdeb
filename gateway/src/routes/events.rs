//! `POST /events`: validate, claim the idempotency key, publish with confirm, answer 202.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use time::OffsetDateTime;

use shared::{contract::ProductUpdate, model::EventId};

use super::AppState;
use crate::{
    error::ApiError,
    idempotency::{Begin, StoredResponse},
    request::{parse_event, to_micros},
};

/// The request header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Accepts a product update: `202 {"event_id", "status": "accepted"}` once the broker confirmed.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    request_body(content = crate::openapi::EventBody, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Client key (1-255 visible ASCII characters); becomes the event id. A repeat with the same body replays the first answer.")),
    responses(
        (status = 202, description = "Durably in the broker", body = crate::openapi::Accepted,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is a replay of the first answer"))),
        (status = 400, description = "Invalid body or header; `field` names it", body = crate::openapi::ErrorBody),
        (status = 409, description = "The first request with this key is still in progress", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body not declared as JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Key already used with another body", body = crate::openapi::ErrorBody),
        (status = 503, description = "RabbitMQ or Redis unavailable; nothing accepted; see Retry-After", body = crate::openapi::ErrorBody),
    )
)]
pub async fn post_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match accept(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            metrics::counter!("pipeline_events_rejected_total", "reason" => error.reason())
                .increment(1);
            error.into_response()
        }
    }
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received_at = OffsetDateTime::now_utc();
    require_json(headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest {
                message: rejection.body_text(),
                field: None,
            }
        }
    })?;
    let header_key = idempotency_key(headers)?;
    let request = parse_event(&body, received_at)?;
    let key = match (header_key, request.event_id.clone()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::field(
                "event_id",
                "event_id differs from the Idempotency-Key header",
            ));
        }
        (h, b) => h.or(b),
    };

    let lease = match &key {
        None => None,
        Some(key) => match state
            .idempotency
            .begin(key, &request.fingerprint)
            .await
            .map_err(|e| ApiError::unavailable("redis", e))?
        {
            Begin::Acquired(lease) => Some(lease),
            Begin::Replay(stored) => {
                metrics::counter!("pipeline_events_replayed_total").increment(1);
                return Ok(replay(stored));
            }
            Begin::Mismatch => return Err(ApiError::KeyReused),
            Begin::InFlight => return Err(ApiError::KeyInFlight),
        },
    };

    let update = ProductUpdate {
        event_id: key.unwrap_or_else(EventId::generate),
        product_id: request.product_id,
        price: request.price,
        stock: request.stock,
        occurred_at: request
            .occurred_at
            .unwrap_or_else(|| to_micros(received_at)),
        received_at,
    };
    if let Err(error) = state.publisher.publish(&update).await {
        if let Some(lease) = lease
            && let Err(e) = state.idempotency.release(lease).await
        {
            // The lease expires by itself; until then a retry gets 409.
            tracing::warn!(event_id = %update.event_id, error = %e, "Could not release the idempotency lease.");
        }
        return Err(ApiError::unavailable("rabbitmq", error));
    }

    let stored = StoredResponse {
        status: StatusCode::ACCEPTED.as_u16(),
        body: json!({ "event_id": update.event_id, "status": "accepted" }).to_string(),
    };
    if let Some(lease) = lease
        && let Err(e) = state.idempotency.complete(lease, &stored).await
    {
        // Accepted all the same: a retry after the lease expires publishes the same event id
        // again, and the processor's inbox applies it once.
        tracing::warn!(event_id = %update.event_id, error = %e, "Could not record the idempotent response.");
    }
    metrics::counter!("pipeline_events_accepted_total").increment(1);
    Ok(stored_response(stored, false))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|media| media == "application/json" || media.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// The `Idempotency-Key` header, bare or as a structured-field string (`"..."`).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<EventId>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = |why: String| ApiError::field("Idempotency-Key", format!("Idempotency-Key {why}"));
    let text = value
        .to_str()
        .map_err(|_| bad("may contain only visible ASCII characters".into()))?;
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map(Some).map_err(|e| bad(format!("{e}")))
}

fn replay(stored: StoredResponse) -> Response {
    stored_response(stored, true)
}

fn stored_response(stored: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    let body: serde_json::Value = serde_json::from_str(&stored.body).unwrap_or_default();
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
