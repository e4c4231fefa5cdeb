//! PostgreSQL, the source of truth: the inbox, the products and the orders, changed together in
//! one transaction so an event's effect and the record that it was applied can never part.
//!
//! This module names what a batch is made of and what became of it; [`plan`] decides it without
//! I/O and [`apply`] reads and writes it, through the owners of the tables: [`inbox`],
//! [`shared::processor::products`] and [`shared::processor::orders`]. [`retries`] notes events
//! on the retry ladder.

mod apply;
pub mod inbox;
pub mod plan;
pub mod retention;
pub mod retries;

use shared::{connect::postgres::Fault, contract::ProductView, model::Rejection};

use crate::downstream::Pending;

pub use apply::apply;

/// What became of an event: decided by [`plan::decide`], counted and logged by the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// At least one field took the event's value.
    Changed,
    /// The event is recorded but every field it carried already had a newer value.
    Stale,
    /// The event was applied before (or earlier in the same batch): nothing was done.
    Duplicate,
    /// The order reserved its stock.
    OrderCreated,
    /// The order was rejected, for this reason; stock unchanged.
    OrderRejected(Rejection),
}

impl Outcome {
    /// Its label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "applied",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::OrderCreated => "order_created",
            Self::OrderRejected(_) => "order_rejected",
        }
    }
}

/// What applying a batch did: one outcome per event, in order, the current view of every
/// product the batch touched, and the downstream events it caused (kept on their sources'
/// inbox rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Per event, in the order given.
    pub outcomes: Vec<Outcome>,
    /// The products' state after the batch.
    pub views: Vec<ProductView>,
    /// The downstream events the batch caused, to publish.
    pub emitted: Vec<Pending>,
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
    /// This replica no longer holds the shard: another claimed it. Nothing was written.
    #[error("the shard's lease is held by another replica")]
    Fenced,
    /// Another transaction recorded one of the batch's events between this one's read of the
    /// inbox and its write (which the shard's lease should prevent). Nothing was written; a
    /// retry finds the event in the inbox.
    #[error("another transaction recorded one of the events meanwhile")]
    Raced,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match Fault::of(&e) {
            Fault::Refused => Self::Refused(e),
            Fault::Conflict => Self::Failed(e),
            Fault::Outage => Self::Unavailable(e),
        }
    }
}
