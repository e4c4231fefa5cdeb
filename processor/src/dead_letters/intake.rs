//! Taking dead letters off the dead-letter queue into the `dead_letters` table, so they can be
//! listed, filtered and replayed. Each is acknowledged only after its row is committed. Its
//! reason is what set it aside said, or the broker's own (`delivery_limit`, `rejected`,
//! `expired`, `maxlen`), and its source is the queue it was consumed from.

use shared::{consume::Received, contract::headers, model::EventId, topology::DELIVERY_LIMIT};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use shared::dead_letter::{Reason, number_header, text_header};

use super::store::DeadLetter;

/// Reads a dead letter's record from the delivery, whoever set it aside.
pub fn record(delivery: &Received) -> DeadLetter {
    let properties = &delivery.properties;
    let body: Option<serde_json::Value> = serde_json::from_slice(&delivery.data).ok();
    let body_field = |key: &str| {
        body.as_ref()
            .and_then(|b| b.get(key))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let source_queue = text_header(properties, headers::SOURCE_QUEUE)
        .or_else(|| text_header(properties, "x-first-death-queue"));
    let event_id = properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| body_field("event_id"));
    let owner = body_field("owner").filter(|o| !o.is_empty());
    let Origin {
        id,
        reason,
        error,
        service,
    } = origin(
        properties,
        event_id.as_deref(),
        owner.as_deref(),
        source_queue.as_deref(),
    );
    let attempts = number_header(properties, headers::ATTEMPTS)
        .or_else(|| number_header(properties, "x-delivery-count").map(|c| c + 1))
        .unwrap_or(DELIVERY_LIMIT + 1);
    let first_failed_at = text_header(properties, headers::DEAD_AT)
        .and_then(|at| OffsetDateTime::parse(&at, &Rfc3339).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    storable_fields(DeadLetter {
        id,
        event_id,
        owner,
        product_id: body_field("product_id"),
        reason,
        error,
        attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        service,
        // A routing key is an AMQP short string: a header claiming a longer one is ignored.
        routing_key: text_header(properties, headers::ORIGINAL_ROUTING_KEY)
            .filter(|key| key.len() <= 255)
            .unwrap_or_else(|| delivery.routing_key.to_string()),
        message_type: properties.kind().as_ref().map(ToString::to_string),
        first_failed_at,
        dead_lettered_at: OffsetDateTime::now_utc(),
        payload: delivery.data.clone(),
        trace_id: text_header(properties, shared::trace::TRACEPARENT)
            .and_then(|tp| tp.split('-').nth(1).map(str::to_owned)),
        replay_job: None,
        replay_claimed_until: None,
        source_queue,
    })
}

/// Who set a dead letter aside, and why.
struct Origin {
    /// The dead letter's id.
    id: String,
    /// Why.
    reason: Reason,
    /// The last error, in words.
    error: String,
    /// The service, or `rabbitmq`.
    service: String,
}

/// The origin a dead letter's headers tell: a service's own (`x-pipeline-dead-*`), or else the
/// broker's (a delivery limit, a rejection, an expiry).
fn origin(
    properties: &lapin::BasicProperties,
    event_id: Option<&str>,
    owner: Option<&str>,
    source_queue: Option<&str>,
) -> Origin {
    if let Some(named) = text_header(properties, headers::DEAD_REASON) {
        let error = text_header(properties, headers::DEAD_ERROR).unwrap_or_default();
        // A reason this version does not know (set by a newer one) is kept in the error.
        let (reason, error) = match Reason::parse(&named) {
            Some(reason) => (reason, error),
            None => (Reason::Invalid, format!("{named}: {error}")),
        };
        return Origin {
            id: text_header(properties, headers::DEAD_LETTER_ID)
                .unwrap_or_else(|| EventId::generate().to_string()),
            reason,
            error,
            service: text_header(properties, headers::DEAD_SERVICE)
                .unwrap_or_else(|| "processor".into()),
        };
    }
    let reason = text_header(properties, "x-first-death-reason")
        .and_then(|r| Reason::parse(&r))
        .unwrap_or(Reason::DeliveryLimit);
    // One per event: an event of another key with the same id is another dead letter.
    let id = match (event_id, owner) {
        (Some(event), Some(owner)) => format!("{}:{owner}:{event}", reason.as_str()),
        (Some(event), None) => format!("{}:{event}", reason.as_str()),
        (None, _) => EventId::generate().to_string(),
    };
    Origin {
        id,
        reason,
        error: broker_error(reason, source_queue.unwrap_or("its queue")),
        service: "rabbitmq".to_owned(),
    }
}

/// `dead` with every text field [`storable`]: the headers and body it was read from are
/// anyone's, and a NUL byte in one would make PostgreSQL refuse the row.
fn storable_fields(dead: DeadLetter) -> DeadLetter {
    DeadLetter {
        id: storable(dead.id),
        event_id: dead.event_id.map(storable),
        owner: dead.owner.map(storable),
        product_id: dead.product_id.map(storable),
        error: storable(dead.error),
        service: storable(dead.service),
        routing_key: storable(dead.routing_key),
        message_type: dead.message_type.map(storable),
        trace_id: dead.trace_id.map(storable),
        source_queue: dead.source_queue.map(storable),
        ..dead
    }
}

/// `dead` kept with what PostgreSQL cannot refuse: a fresh id, its reason, times, attempts,
/// body and where it goes back to, with `refusal` as its error; the fields read from its
/// headers and body are left out.
pub fn plain(dead: DeadLetter, refusal: &sqlx::Error) -> DeadLetter {
    DeadLetter {
        id: EventId::generate().to_string(),
        event_id: None,
        owner: None,
        product_id: None,
        error: storable(format!(
            "its fields were refused by PostgreSQL ({refusal}); the body is kept as it came"
        )),
        message_type: None,
        trace_id: None,
        ..dead
    }
}

/// `text` as PostgreSQL's text holds it: every NUL byte (which it refuses) replaced by U+FFFD.
fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// What the broker's reason for dead-lettering means, in words.
fn broker_error(reason: Reason, queue: &str) -> String {
    match reason {
        Reason::Rejected => format!("rejected by the consumer of {queue}"),
        Reason::Expired => format!("expired in {queue}"),
        Reason::Maxlen => format!("dropped by the length limit of {queue}"),
        _ => format!(
            "redelivered more than {DELIVERY_LIMIT} times from {queue} without being acknowledged"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_postgres_refuses_is_made_storable_and_other_text_kept() {
        assert_eq!(storable("a\0b\0".to_owned()), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable("plain".to_owned()), "plain");
    }
}
