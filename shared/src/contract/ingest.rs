//! What travels on the ingest shards: product updates and orders, as the gateway publishes them
//! and the processor decodes them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{Email, EventId, OrderId, Owner, Price, ProductId, Quantity, Stock};

/// What a message on the ingest shards is (its AMQP `type`). The kind is part of an event's
/// identity: an order and a product update may carry the same event id without meeting, in the
/// gateway's idempotency records, the processor's inbox or the downstream ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
#[sqlx(type_name = "text")]
pub enum IngestKind {
    /// A product's new price and/or stock (`product.update`).
    #[sqlx(rename = "product.update")]
    ProductUpdate,
    /// An order reserving stock (`order.create`), routed to its product's shard.
    #[sqlx(rename = "order.create")]
    OrderCreate,
    /// A catalog entry's creation (`product.create`): its first price and stock, applied like
    /// an update, announced as `product.created`.
    #[sqlx(rename = "product.create")]
    ProductCreate,
}

impl IngestKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::ProductUpdate, Self::OrderCreate, Self::ProductCreate];

    /// The AMQP `type`, also the kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProductUpdate => "product.update",
            Self::OrderCreate => "order.create",
            Self::ProductCreate => "product.create",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An event's identity, everywhere it goes: its kind, the API key whose space its id is in, and
/// its id. The gateway's idempotency records, the processor's inbox and the
/// downstream ids all key on it, so two keys' identical ids never meet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    /// What kind of event.
    pub kind: IngestKind,
    /// Whose id space it is in.
    pub owner: Owner,
    /// Its id.
    pub id: EventId,
}

/// A message the gateway publishes to the ingest shards.
pub trait IngestMessage: Serialize {
    /// Its kind (the AMQP `type`).
    const KIND: IngestKind;
    /// Its event id (the AMQP `message_id`).
    fn event_id(&self) -> &EventId;
    /// The API key whose space its id is in.
    fn owner(&self) -> &Owner;
    /// The product whose shard it goes to, so a product's messages stay in order.
    fn shard_key(&self) -> &ProductId;
    /// When the gateway accepted it.
    fn received_at(&self) -> OffsetDateTime;
}

impl IngestMessage for ProductUpdate {
    const KIND: IngestKind = IngestKind::ProductUpdate;
    fn event_id(&self) -> &EventId {
        &self.event_id
    }
    fn owner(&self) -> &Owner {
        &self.owner
    }
    fn shard_key(&self) -> &ProductId {
        &self.product_id
    }
    fn received_at(&self) -> OffsetDateTime {
        self.received_at
    }
}

impl IngestMessage for NewProduct {
    const KIND: IngestKind = IngestKind::ProductCreate;
    fn event_id(&self) -> &EventId {
        &self.0.event_id
    }
    fn owner(&self) -> &Owner {
        &self.0.owner
    }
    fn shard_key(&self) -> &ProductId {
        &self.0.product_id
    }
    fn received_at(&self) -> OffsetDateTime {
        self.0.received_at
    }
}

impl IngestMessage for OrderPlaced {
    const KIND: IngestKind = IngestKind::OrderCreate;
    fn event_id(&self) -> &EventId {
        &self.event_id
    }
    fn owner(&self) -> &Owner {
        &self.owner
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
    /// The API key whose space the id is in (absent from messages published before
    /// identifiers were scoped by key: the legacy space).
    #[serde(default, skip_serializing_if = "Owner::is_legacy")]
    pub owner: Owner,
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
    #[serde(default)]
    owner: Owner,
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
            owner: w.owner,
            product_id: w.product_id,
            price: w.price,
            stock: w.stock,
            occurred_at: w.occurred_at,
            received_at: w.received_at,
        })
    }
}

/// A catalog entry's creation: its price and stock as an update at the creation's time, with
/// the event id [`NewProduct::event_id_of`] its product (one creation per product).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NewProduct(pub ProductUpdate);

impl NewProduct {
    /// The event id of a product's creation: its id in the `create:` key space.
    pub fn event_id_of(product: &ProductId) -> EventId {
        format!("create:{}", product.as_str())
            .parse()
            .expect("a product id is a valid event id once prefixed")
    }
}

/// An order for `qty` units of `sku`, as published by the gateway. Its event id is
/// [`OrderPlaced::event_id_of`] its order id, so repeats are recognised end to end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    /// `order:{order_id}`.
    pub event_id: EventId,
    /// The API key that placed it: order ids live in its space, and the order is its to read.
    #[serde(default, skip_serializing_if = "Owner::is_legacy")]
    pub owner: Owner,
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

/// A message from an ingest shard, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingest {
    /// A product's new price and/or stock.
    Product(ProductUpdate),
    /// An order reserving stock.
    Order(OrderPlaced),
    /// A catalog entry's creation: its first price and stock.
    Created(ProductUpdate),
}

/// Why a message on an ingest shard cannot be applied, whatever happens later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// Not JSON, or a message type the pipeline does not know.
    #[error("{0}")]
    Unparseable(String),
    /// JSON that breaks the contract's rules.
    #[error("{0}")]
    Invalid(String),
}

impl Ingest {
    /// Decodes a message by its AMQP `type` (a product update when it has none).
    pub fn decode(kind: Option<&str>, data: &[u8]) -> Result<Self, Undecodable> {
        let decoded = match kind.map(|k| (k, IngestKind::parse(k))) {
            None | Some((_, Some(IngestKind::ProductUpdate))) => {
                serde_json::from_slice(data).map(Self::Product)
            }
            Some((_, Some(IngestKind::OrderCreate))) => {
                serde_json::from_slice(data).map(Self::Order)
            }
            Some((_, Some(IngestKind::ProductCreate))) => {
                serde_json::from_slice(data).map(Self::Created)
            }
            Some((other, None)) => {
                return Err(Undecodable::Unparseable(format!(
                    "unknown message type {other:?}"
                )));
            }
        };
        decoded.map_err(|e| {
            if e.is_data() {
                Undecodable::Invalid(e.to_string())
            } else {
                Undecodable::Unparseable(e.to_string())
            }
        })
    }

    /// What kind of message it is (with the event id, its identity).
    pub fn kind(&self) -> IngestKind {
        match self {
            Self::Product(_) => IngestKind::ProductUpdate,
            Self::Order(_) => IngestKind::OrderCreate,
            Self::Created(_) => IngestKind::ProductCreate,
        }
    }

    /// The event id.
    pub fn event_id(&self) -> &EventId {
        match self {
            Self::Product(u) | Self::Created(u) => &u.event_id,
            Self::Order(o) => &o.event_id,
        }
    }

    /// The API key whose space its id is in.
    pub fn owner(&self) -> &Owner {
        match self {
            Self::Product(u) | Self::Created(u) => &u.owner,
            Self::Order(o) => &o.owner,
        }
    }

    /// Its identity: kind, owner and id.
    pub fn key(&self) -> EventKey {
        EventKey {
            kind: self.kind(),
            owner: self.owner().clone(),
            id: self.event_id().clone(),
        }
    }

    /// The product it concerns.
    pub fn product(&self) -> &ProductId {
        match self {
            Self::Product(u) | Self::Created(u) => &u.product_id,
            Self::Order(o) => &o.sku,
        }
    }

    /// When the gateway accepted it.
    pub fn received_at(&self) -> OffsetDateTime {
        match self {
            Self::Product(u) | Self::Created(u) => u.received_at,
            Self::Order(o) => o.received_at,
        }
    }
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

    #[test]
    fn the_owner_travels_and_a_message_without_one_is_in_the_legacy_space() {
        let legacy = r#"{"event_id":"e1","product_id":"p1","stock":1,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
        let update: ProductUpdate = serde_json::from_str(legacy).expect("valid update");
        assert!(update.owner.is_legacy());
        assert_eq!(serde_json::to_string(&update).expect("serialises"), legacy);
        let owned = ProductUpdate {
            owner: "storefront".parse().expect("valid"),
            ..update
        };
        let again = serde_json::to_string(&owned).expect("serialises");
        assert!(again.contains(r#""owner":"storefront""#), "{again}");
        let decoded = Ingest::decode(None, again.as_bytes()).expect("valid");
        assert_eq!(decoded.owner().as_str(), "storefront");
        assert_ne!(
            decoded.key(),
            Ingest::Product(serde_json::from_str(legacy).expect("valid")).key()
        );
        let bad_owner = legacy.replace(r#""event_id":"e1","#, r#""event_id":"e1","owner":"a b","#);
        assert!(matches!(
            Ingest::decode(None, bad_owner.as_bytes()),
            Err(Undecodable::Invalid(_))
        ));
    }

    #[test]
    fn garbage_is_unparseable_and_rule_breaking_json_is_invalid() {
        let unparseable = |k: Option<&str>, d: &[u8]| {
            matches!(Ingest::decode(k, d), Err(Undecodable::Unparseable(_)))
        };
        let invalid = |k: Option<&str>, d: &[u8]| {
            matches!(Ingest::decode(k, d), Err(Undecodable::Invalid(_)))
        };
        assert!(unparseable(None, b"not json"));
        assert!(unparseable(Some("order.cancel"), b"{}"));
        assert!(invalid(Some("order.create"), b"{}"));
        let no_fields = br#"{"event_id":"e","product_id":"p","occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
        assert!(invalid(None, no_fields));
        let negative = br#"{"event_id":"e","product_id":"p","stock":-1,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
        assert!(invalid(None, negative));
    }
}
