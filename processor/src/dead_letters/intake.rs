//! Taking dead letters off the dead-letter queue into the `dead_letters` table, so they can be
//! listed, filtered and replayed. Each is acknowledged only after its row is committed.

use lapin::message::Delivery;
use shared::{contract::headers, model::EventId, topology::DELIVERY_LIMIT};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Reason, number_header, store::DeadLetter, text_header};

/// Reads a dead letter's record from the delivery, whoever set it aside.
pub fn record(delivery: &Delivery) -> DeadLetter {
    let properties = &delivery.properties;
    let body: Option<serde_json::Value> = serde_json::from_slice(&delivery.data).ok();
    let body_field = |key: &str| {
        body.as_ref()
            .and_then(|b| b.get(key))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let event_id = properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| body_field("event_id"));
    let (id, reason, error, service) = match text_header(properties, headers::DEAD_REASON) {
        Some(reason) => (
            text_header(properties, headers::DEAD_LETTER_ID)
                .unwrap_or_else(|| EventId::generate().to_string()),
            reason,
            text_header(properties, headers::DEAD_ERROR).unwrap_or_default(),
            text_header(properties, headers::DEAD_SERVICE).unwrap_or_else(|| "processor".into()),
        ),
        // Dead-lettered by the broker itself: a shard's delivery limit.
        None => {
            let reason = match text_header(properties, "x-first-death-reason").as_deref() {
                Some("delivery_limit") | None => Reason::DeliveryLimit.as_str().to_owned(),
                Some(other) => other.to_owned(),
            };
            let id = match &event_id {
                Some(event) => format!("{reason}:{event}"),
                None => EventId::generate().to_string(),
            };
            let error =
                format!("redelivered more than {DELIVERY_LIMIT} times without being acknowledged");
            (id, reason, error, "rabbitmq".to_owned())
        }
    };
    let attempts = number_header(properties, headers::ATTEMPTS)
        .or_else(|| number_header(properties, "x-delivery-count").map(|c| c + 1))
        .unwrap_or(DELIVERY_LIMIT + 1);
    let first_failed_at = text_header(properties, headers::DEAD_AT)
        .and_then(|at| OffsetDateTime::parse(&at, &Rfc3339).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    DeadLetter {
        id,
        event_id,
        product_id: body_field("product_id"),
        reason,
        error,
        attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        service,
        routing_key: text_header(properties, headers::ORIGINAL_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.to_string()),
        message_type: properties.kind().as_ref().map(ToString::to_string),
        first_failed_at,
        dead_lettered_at: OffsetDateTime::now_utc(),
        payload: delivery.data.clone(),
        trace_id: text_header(properties, shared::trace::TRACEPARENT)
            .and_then(|tp| tp.split('-').nth(1).map(str::to_owned)),
    }
}
