//! The wire contract between the services: what travels on the ingest shards, what the read
//! cache holds, and the names of the AMQP headers and message types.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{Email, EventId, OrderId, Price, ProductId, Quantity, Stock};

/// AMQP `type` of a product update on the ingest shards.
pub const KIND_PRODUCT_UPDATE: &str = "product.update";
/// AMQP `type` of an order on the ingest shards (routed to its product's shard).
pub const KIND_ORDER_CREATE: &str = "order.create";

/// Every downstream event type, each also its routing key on the events exchange.
pub const DOWNSTREAM_TYPES: [&str; 4] = [
    "product.updated",
    "stock.low",
    "order.created",
    "order.rejected",
];

/// AMQP headers the pipeline sets on its own messages.
pub mod headers {
    /// Why a message is in the dead-letter queue (`unparseable`, `invalid`, ...).
    pub const DEAD_REASON: &str = "x-pipeline-reason";
    /// The last error seen for a dead-lettered message.
    pub const DEAD_ERROR: &str = "x-pipeline-error";
    /// Which service set the message aside.
    pub const DEAD_SERVICE: &str = "x-pipeline-service";
    /// When the message was first set aside (RFC 3339).
    pub const DEAD_AT: &str = "x-pipeline-first-failed-at";
    /// Unique id of a dead letter (stable across its redeliveries).
    pub const DEAD_LETTER_ID: &str = "x-pipeline-dead-letter-id";
    /// Failed attempts so far (the retry ladder's rung).
    pub const ATTEMPTS: &str = "x-pipeline-attempts";
    /// The routing key the message had on the ingest exchange.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-pipeline-routing-key";
}

/// A message the gateway publishes to the ingest shards.
pub trait IngestMessage: Serialize {
    /// Its AMQP `type`.
    const KIND: &'static str;
    /// Its event id (the AMQP `message_id`).
    fn event_id(&self) -> &EventId;
    /// The product whose shard it goes to, so a product's messages stay in order.
    fn shard_key(&self) -> &ProductId;
    /// When the gateway accepted it.
    fn received_at(&self) -> OffsetDateTime;
}

impl IngestMessage for ProductUpdate {
    const KIND: &'static str = KIND_PRODUCT_UPDATE;
    fn event_id(&self) -> &EventId {
        &self.event_id
    }
    fn shard_key(&self) -> &ProductId {
        &self.product_id
    }
    fn received_at(&self) -> OffsetDateTime {
        self.received_at
    }
}

impl IngestMessage for OrderPlaced {
    const KIND: &'static str = KIND_ORDER_CREATE;
    fn event_id(&self) -> &EventId {
        &self.event_id
    }
    fn shard_key(&self) -> &ProductId {
        &self.sku
    }
    fn received_at(&self) -> OffsetDateTime {
        self.received_at
    }
}

/// A change to one product's price and/or stock, as published by the gateway.
///
/// Deserialising checks every rule again (a message can come from anywhere that can publish).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ProductUpdateWire")]
pub struct ProductUpdate {
    /// The event's one key.
    pub event_id: EventId,
    /// The product changed.
    pub product_id: ProductId,
    /// The new price, if this event sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// The new stock, if this event sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock: Option<Stock>,
    /// When the change happened at its source: the last-writer-wins clock (microseconds).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// When the gateway accepted it (for end-to-end latency).
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

/// Why a [`ProductUpdate`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an update must set at least one of price and stock")]
pub struct EmptyUpdate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductUpdateWire {
    event_id: EventId,
    product_id: ProductId,
    #[serde(default)]
    price: Option<Price>,
    #[serde(default)]
    stock: Option<Stock>,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
}

impl TryFrom<ProductUpdateWire> for ProductUpdate {
    type Error = EmptyUpdate;

    fn try_from(w: ProductUpdateWire) -> Result<Self, Self::Error> {
        if w.price.is_none() && w.stock.is_none() {
            return Err(EmptyUpdate);
        }
        Ok(Self {
            event_id: w.event_id,
            product_id: w.product_id,
            price: w.price,
            stock: w.stock,
            occurred_at: w.occurred_at,
            received_at: w.received_at,
        })
    }
}

/// An order for `qty` units of `sku`, as published by the gateway. Its event id is
/// [`OrderPlaced::event_id_of`] its order id, so repeats are recognised end to end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    /// `order:{order_id}`.
    pub event_id: EventId,
    /// The client's order id.
    pub order_id: OrderId,
    /// The product ordered.
    pub sku: ProductId,
    /// Units ordered.
    pub qty: Quantity,
    /// The customer's address, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// When the gateway accepted it.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

impl OrderPlaced {
    /// The event id of an order: its order id in the `order:` key space.
    pub fn event_id_of(order: &OrderId) -> EventId {
        format!("order:{}", order.as_str())
            .parse()
            .expect("an order id is a valid event id once prefixed")
    }
}

/// Redis key of an event id's idempotency record (a hash whose `state` is `lease` while it is
/// being published and `done` once accepted).
pub fn idempotency_key(namespace: &crate::topology::Namespace, id: &str) -> String {
    format!("{}:idem:{id}", namespace.as_str())
}

/// Redis key of an order accepted but not yet applied (so `GET /orders/{id}` can say `pending`).
pub fn pending_order_key(namespace: &crate::topology::Namespace, id: &OrderId) -> String {
    format!("{}:order:{}", namespace.as_str(), id.as_str())
}

/// A product's current state, as served by `GET /products/{id}` and held in the read cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductView {
    /// The product.
    pub product_id: ProductId,
    /// Current price; `null` if never set.
    pub price: Option<Price>,
    /// Current stock; `null` if never set.
    pub stock: Option<Stock>,
    /// When the product last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// How long a cached product view lives; every applied change rewrites it.
pub const PRODUCT_CACHE_TTL_SECONDS: u64 = 3600;

/// Redis key of a product's cached view.
pub fn product_cache_key(namespace: &crate::topology::Namespace, id: &ProductId) -> String {
    format!("{}:product:{}", namespace.as_str(), id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_with_neither_field_is_refused_on_the_wire() {
        let body = r#"{"event_id":"e1","product_id":"p1","occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<ProductUpdate>(body).is_err());
    }

    #[test]
    fn an_update_round_trips_with_exact_price() {
        let body = r#"{"event_id":"e1","product_id":"p1","price":49.99,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00.5Z"}"#;
        let update: ProductUpdate = serde_json::from_str(body).expect("valid update");
        let again = serde_json::to_string(&update).expect("serialises");
        assert!(again.contains(r#""price":49.99"#), "{again}");
        assert_eq!(
            serde_json::from_str::<ProductUpdate>(&again).expect("valid"),
            update
        );
    }
}
