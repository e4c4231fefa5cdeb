//! `POST /events`: validate, claim the idempotency key, publish with confirm, answer 202.

use axum::{Extension, extract::State, response::Response};
use serde_json::json;

use shared::{auth::Caller, contract::ProductUpdate, model::EventId};

use super::{
    AppState,
    ingest::{Ingest, Refused, idempotency_key, publish_once},
};
use crate::request::{parse_event, to_micros};

/// Accepts a product update: `202 {"event_id", "status": "accepted"}` once the broker confirmed.
/// Scope: `events:write`.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    request_body(content = crate::openapi::EventBody, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Client key (1-255 visible ASCII characters); becomes the event id. A repeat with the same body replays the first answer.")),
    responses((status = 202, description = "Durably in the broker", body = crate::openapi::Accepted))
)]
pub async fn post_event(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Ingest {
        received_at,
        headers,
        body,
    }: Ingest,
) -> Result<Response, Refused> {
    let header_key = idempotency_key(&headers)?;
    let request = parse_event(&body, received_at)?;
    let key = match (header_key, request.event_id.clone()) {
        (Some(h), Some(b)) if h != b => {
            return Err(shared::api::bad(
                "event_id",
                "event_id differs from the Idempotency-Key header",
            )
            .into());
        }
        (h, b) => h.or(b),
    };
    let update = ProductUpdate {
        event_id: key.clone().unwrap_or_else(EventId::generate),
        owner: caller.owner.clone(),
        product_id: request.product_id,
        price: request.price,
        stock: request.stock,
        occurred_at: request
            .occurred_at
            .unwrap_or_else(|| to_micros(received_at)),
        received_at,
    };
    let accepted = json!({ "event_id": update.event_id, "status": "accepted" });
    let trace = shared::trace::from_http(&headers);
    Ok(publish_once(
        &state,
        key.as_ref(),
        &request.fingerprint,
        &update,
        accepted,
        &trace,
    )
    .await?)
}
