//! PostgreSQL, the source of truth: the inbox, the products and the orders, changed together in
//! one transaction so an event's effect and the record that it was applied can never part.
//!
//! This module names what a batch is made of and what became of it; [`apply`] does it.

mod apply;

use shared::{
    contract::{OrderPlaced, ProductUpdate, ProductView},
    model::{EventId, ProductId},
};
use time::OffsetDateTime;

pub use apply::apply;

/// A message from an ingest shard.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingest {
    /// A product's new price and/or stock.
    Product(ProductUpdate),
    /// An order reserving stock.
    Order(OrderPlaced),
}

impl Ingest {
    /// The event id.
    pub fn event_id(&self) -> &EventId {
        match self {
            Self::Product(u) => &u.event_id,
            Self::Order(o) => &o.event_id,
        }
    }

    /// The product it concerns.
    pub fn product(&self) -> &ProductId {
        match self {
            Self::Product(u) => &u.product_id,
            Self::Order(o) => &o.sku,
        }
    }

    /// When the gateway accepted it.
    pub fn received_at(&self) -> OffsetDateTime {
        match self {
            Self::Product(u) => u.received_at,
            Self::Order(o) => o.received_at,
        }
    }
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No event ever created the product.
    UnknownProduct,
    /// Less stock than ordered (stock never set counts as none).
    InsufficientStock,
}

impl Rejection {
    /// The reason as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownProduct => "unknown_product",
            Self::InsufficientStock => "insufficient_stock",
        }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// At least one field took the event's value.
    Changed,
    /// The event is recorded but every field it carried already had a newer value.
    Stale,
    /// The event was applied before (or earlier in the same batch): nothing was done.
    Duplicate,
    /// The order reserved its stock.
    OrderCreated,
    /// The order was rejected; stock unchanged.
    OrderRejected(Rejection),
}

/// What applying a batch did: one outcome per event, in order, and the current view of every
/// product the batch touched.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Per event, in the order given.
    pub outcomes: Vec<Applied>,
    /// The products' state after the batch.
    pub views: Vec<ProductView>,
}

/// A failure to apply, by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL is unreachable or failing: not the message's fault; retry it in place.
    #[error("postgres unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// PostgreSQL refused this message's data (a constraint or data error): retrying will not help.
    #[error("postgres refused the event: {0}")]
    Refused(sqlx::Error),
    /// Applying this event failed in a way that may pass later (a serialization failure, a
    /// deadlock, a trigger's exception): retry it later, off its shard.
    #[error("applying the event failed: {0}")]
    Failed(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let class = match &e {
            sqlx::Error::Decode(_) => Some("22".to_owned()),
            sqlx::Error::Database(db) => db.code().map(|c| c.chars().take(2).collect()),
            _ => None,
        };
        match class.as_deref() {
            // Data exception, integrity constraint violation.
            Some("22" | "23") => Self::Refused(e),
            // Transaction rollback (serialization failure, deadlock), PL/pgSQL raise.
            Some("40" | "P0") => Self::Failed(e),
            _ => Self::Unavailable(e),
        }
    }
}
