//! Downstream events: what the processor announces after each applied change, on the events
//! exchange (routing key = the type), and what a subscriber's webhook carries byte for byte: the
//! Standard Webhooks payload `{"type", "timestamp", "data"}`, the event's own fields under
//! `data`. The event's id travels beside the body: the AMQP message id, then the `webhook-id`.
//!
//! [`Announcement::body`] is the one way to write an event and [`Announcement::decode`] the one
//! way to read one; a type the decoder does not know is an error the consumer dead-letters, never
//! a silent skip.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{DownstreamId, EventKey};
use crate::model::{Email, EventId, OrderId, Owner, Price, ProductId, Quantity, Rejection, Stock};

/// The type of a downstream event, also its routing key on the events exchange.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::Type, ToSchema,
)]
#[sqlx(type_name = "text")]
pub enum EventType {
    /// A catalog entry was created, with its first price and stock (`product.created`).
    #[sqlx(rename = "product.created")]
    #[serde(rename = "product.created")]
    ProductCreated,
    /// A product's price or stock changed (`product.updated`).
    #[sqlx(rename = "product.updated")]
    #[serde(rename = "product.updated")]
    ProductUpdated,
    /// A product's stock fell below the threshold (`stock.low`).
    #[sqlx(rename = "stock.low")]
    #[serde(rename = "stock.low")]
    StockLow,
    /// An order reserved its stock (`order.created`).
    #[sqlx(rename = "order.created")]
    #[serde(rename = "order.created")]
    OrderCreated,
    /// An order was rejected (`order.rejected`).
    #[sqlx(rename = "order.rejected")]
    #[serde(rename = "order.rejected")]
    OrderRejected,
    /// An image of a product is processed and stored (`product.images_ready`).
    #[sqlx(rename = "product.images_ready")]
    #[serde(rename = "product.images_ready")]
    ImagesReady,
}

impl EventType {
    /// Every type.
    pub const ALL: [Self; 6] = [
        Self::ProductCreated,
        Self::ProductUpdated,
        Self::StockLow,
        Self::OrderCreated,
        Self::OrderRejected,
        Self::ImagesReady,
    ];

    /// The type's name, also its routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProductCreated => "product.created",
            Self::ProductUpdated => "product.updated",
            Self::StockLow => "stock.low",
            Self::OrderCreated => "order.created",
            Self::OrderRejected => "order.rejected",
            Self::ImagesReady => "product.images_ready",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A product's price and stock at one moment (`null` for a field never set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductValues {
    /// The price.
    pub price: Option<Price>,
    /// The stock.
    #[schema(value_type = Option<i32>)]
    pub stock: Option<Stock>,
}

/// `product.updated`: a product's values before and after a change (and `product.created`: a
/// catalog entry's, before and after its creation applied its price and stock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdated {
    /// The event that changed it.
    #[schema(value_type = String)]
    pub source_event_id: EventId,
    /// The product.
    #[schema(value_type = String)]
    pub product_id: ProductId,
    /// Before.
    pub old: ProductValues,
    /// After.
    pub new: ProductValues,
}

/// `stock.low`: a product's stock fell from at or above the threshold (or unset) to below it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockLow {
    /// The event that lowered it.
    #[schema(value_type = String)]
    pub source_event_id: EventId,
    /// The product.
    #[schema(value_type = String)]
    pub product_id: ProductId,
    /// The stock now.
    #[schema(value_type = i32)]
    pub stock: Stock,
    /// The threshold it fell below.
    pub threshold: i32,
}

/// `order.created` and `order.rejected`: what became of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderDecided {
    /// The order's event (`order:{order_id}`).
    #[schema(value_type = String)]
    pub source_event_id: EventId,
    /// The client's order id.
    #[schema(value_type = String)]
    pub order_id: OrderId,
    /// The product ordered.
    #[schema(value_type = String)]
    pub sku: ProductId,
    /// Units ordered.
    #[schema(value_type = i32)]
    pub qty: Quantity,
    /// The customer's address, if given.
    #[schema(value_type = Option<String>)]
    pub email: Option<Email>,
    /// Why it was rejected; `null` when created.
    pub reason: Option<Rejection>,
    /// The name of the API key that placed it (order ids are unique per key); absent for
    /// orders placed before ids were scoped by key.
    #[serde(default, skip_serializing_if = "Owner::is_legacy")]
    #[schema(value_type = Option<String>)]
    pub placed_by: Owner,
}

/// A downstream event: one variant per type, each with its payload.
#[derive(Clone, Debug, PartialEq)]
pub enum DownstreamEvent {
    /// `product.created`.
    ProductCreated(ProductUpdated),
    /// `product.updated`.
    ProductUpdated(ProductUpdated),
    /// `stock.low`.
    StockLow(StockLow),
    /// `order.created`.
    OrderCreated(OrderDecided),
    /// `order.rejected`.
    OrderRejected(OrderDecided),
    /// `product.images_ready`.
    ImagesReady(super::ImagesReady),
}

impl DownstreamEvent {
    /// Its type.
    pub fn event_type(&self) -> EventType {
        match self {
            Self::ProductCreated(_) => EventType::ProductCreated,
            Self::ProductUpdated(_) => EventType::ProductUpdated,
            Self::StockLow(_) => EventType::StockLow,
            Self::OrderCreated(_) => EventType::OrderCreated,
            Self::OrderRejected(_) => EventType::OrderRejected,
            Self::ImagesReady(_) => EventType::ImagesReady,
        }
    }

    /// The event that caused it.
    pub fn source_event_id(&self) -> &EventId {
        match self {
            Self::ProductCreated(e) | Self::ProductUpdated(e) => &e.source_event_id,
            Self::StockLow(e) => &e.source_event_id,
            Self::OrderCreated(e) | Self::OrderRejected(e) => &e.source_event_id,
            Self::ImagesReady(e) => &e.source_event_id,
        }
    }
}

/// A downstream event with its id and the time it happened, as published and delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    /// Its id: the AMQP message id and the `webhook-id`.
    pub id: DownstreamId,
    /// When the change was applied (RFC 3339 in the body).
    pub timestamp: OffsetDateTime,
    /// What happened.
    pub event: DownstreamEvent,
}

/// A body that is not a downstream event this version knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a downstream event: {0}")]
pub struct UndecodableEvent(pub String);

#[derive(Serialize)]
struct Wire<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    data: &'a T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWire<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl Announcement {
    /// The announcement of `event`, caused by the event `source`, at `timestamp`.
    pub fn new(source: &EventKey, event: DownstreamEvent, timestamp: OffsetDateTime) -> Self {
        Self {
            id: DownstreamId::of(source, event.event_type()),
            timestamp,
            event,
        }
    }

    /// The body: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> Vec<u8> {
        self.text().into_bytes()
    }

    /// The body as text (JSON is UTF-8).
    pub fn text(&self) -> String {
        fn wire<T: Serialize>(kind: EventType, timestamp: OffsetDateTime, data: &T) -> String {
            serde_json::to_string(&Wire {
                kind: kind.as_str(),
                timestamp,
                data,
            })
            .expect("a downstream event always serialises")
        }
        let kind = self.event.event_type();
        match &self.event {
            DownstreamEvent::ProductCreated(e) | DownstreamEvent::ProductUpdated(e) => {
                wire(kind, self.timestamp, e)
            }
            DownstreamEvent::StockLow(e) => wire(kind, self.timestamp, e),
            DownstreamEvent::OrderCreated(e) | DownstreamEvent::OrderRejected(e) => {
                wire(kind, self.timestamp, e)
            }
            DownstreamEvent::ImagesReady(e) => wire(kind, self.timestamp, e),
        }
    }

    /// Reads the event with id `id` from its body.
    pub fn decode(id: &str, body: &[u8]) -> Result<Self, UndecodableEvent> {
        let bad = |e: serde_json::Error| UndecodableEvent(e.to_string());
        let raw: RawWire<'_> = serde_json::from_slice(body).map_err(bad)?;
        let data = raw.data.get();
        use serde_json::from_str;
        let event = match EventType::parse(raw.kind) {
            Some(EventType::ProductCreated) => from_str(data).map(DownstreamEvent::ProductCreated),
            Some(EventType::ProductUpdated) => from_str(data).map(DownstreamEvent::ProductUpdated),
            Some(EventType::StockLow) => from_str(data).map(DownstreamEvent::StockLow),
            Some(EventType::OrderCreated) => from_str(data).map(DownstreamEvent::OrderCreated),
            Some(EventType::OrderRejected) => from_str(data).map(DownstreamEvent::OrderRejected),
            Some(EventType::ImagesReady) => from_str(data).map(DownstreamEvent::ImagesReady),
            None => {
                return Err(UndecodableEvent(format!(
                    "unknown event type {:?}",
                    raw.kind
                )));
            }
        }
        .map_err(bad)?;
        if id.is_empty() {
            return Err(UndecodableEvent("the event has no id".into()));
        }
        let id = id
            .parse()
            .map_err(|e| UndecodableEvent(format!("the event's id {e}")))?;
        Ok(Self {
            id,
            timestamp: raw.timestamp,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{
        IngestKind,
        samples::{id, key},
    };

    fn every_variant() -> Vec<(IngestKind, DownstreamEvent)> {
        let product: ProductId = "p1".parse().expect("valid");
        let price: Price = "49.9999".parse().expect("valid");
        let order = OrderDecided {
            source_event_id: id("order:o1"),
            order_id: "o1".parse().expect("valid"),
            sku: product.clone(),
            qty: "2".parse().expect("valid"),
            email: Some("a@b.co".parse().expect("valid")),
            reason: None,
            placed_by: "storefront".parse().expect("valid"),
        };
        vec![
            (
                IngestKind::ProductUpdate,
                DownstreamEvent::ProductUpdated(ProductUpdated {
                    source_event_id: id("e1"),
                    product_id: product.clone(),
                    old: ProductValues {
                        price: None,
                        stock: None,
                    },
                    new: ProductValues {
                        price: Some(price),
                        stock: Some(Stock::new(3).expect("valid")),
                    },
                }),
            ),
            (
                IngestKind::ProductUpdate,
                DownstreamEvent::StockLow(StockLow {
                    source_event_id: id("e1"),
                    product_id: product,
                    stock: Stock::new(3).expect("valid"),
                    threshold: 10,
                }),
            ),
            (
                IngestKind::OrderCreate,
                DownstreamEvent::OrderCreated(order.clone()),
            ),
            (
                IngestKind::OrderCreate,
                DownstreamEvent::OrderRejected(OrderDecided {
                    reason: Some(Rejection::InsufficientStock),
                    ..order
                }),
            ),
        ]
    }

    #[test]
    fn every_variant_round_trips_with_an_exact_price() {
        let at = time::macros::datetime!(2026-06-01 12:00:00.25 UTC);
        for (kind, event) in every_variant() {
            let source = key(kind, "storefront", event.source_event_id());
            let announced = Announcement::new(&source, event, at);
            let body = announced.body();
            let text = String::from_utf8(body.clone()).expect("UTF-8");
            assert!(
                text.starts_with(&format!(
                    r#"{{"type":"{}","timestamp":"2026-06-01T12:00:00.25Z","data":{{"#,
                    announced.event.event_type()
                )),
                "{text}"
            );
            assert_eq!(
                Announcement::decode(announced.id.as_str(), &body).expect("decodes"),
                announced
            );
        }
        let (kind, event) = every_variant().swap_remove(0);
        let source = key(kind, "", event.source_event_id());
        let body = Announcement::new(&source, event, at).body();
        assert!(String::from_utf8_lossy(&body).contains(r#""price":49.9999"#));
    }

    #[test]
    fn every_payload_has_the_fields_its_documented_schema_names() {
        use utoipa::PartialSchema;
        let at = time::macros::datetime!(2026-06-01 12:00:00 UTC);
        for (kind, event) in every_variant() {
            let schema = match &event {
                DownstreamEvent::ProductCreated(_) | DownstreamEvent::ProductUpdated(_) => {
                    ProductUpdated::schema()
                }
                DownstreamEvent::StockLow(_) => StockLow::schema(),
                DownstreamEvent::OrderCreated(_) | DownstreamEvent::OrderRejected(_) => {
                    OrderDecided::schema()
                }
                DownstreamEvent::ImagesReady(_) => super::super::ImagesReady::schema(),
            };
            let schema = serde_json::to_value(schema).expect("JSON");
            let source = key(kind, "storefront", event.source_event_id());
            let body: serde_json::Value =
                serde_json::from_slice(&Announcement::new(&source, event, at).body())
                    .expect("JSON");
            let fields: std::collections::BTreeSet<&String> =
                body["data"].as_object().expect("data").keys().collect();
            let named: std::collections::BTreeSet<&String> = schema["properties"]
                .as_object()
                .expect("properties")
                .keys()
                .collect();
            assert!(fields.is_subset(&named), "{fields:?} not all in {named:?}");
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().expect("a name").to_owned();
                assert!(fields.contains(&required), "{required} missing from {body}");
            }
        }
    }

    #[test]
    fn unknown_types_and_broken_payloads_are_errors() {
        for body in [
            &br#"{"type":"product.deleted","timestamp":"2026-01-01T00:00:00Z","data":{}}"#[..],
            br#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{"stock":1}}"#,
            br#"{"type":"stock.low","data":{}}"#,
            b"not json",
        ] {
            assert!(Announcement::decode("msg_1", body).is_err());
        }
    }
}
