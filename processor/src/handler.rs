//! Applying a batch of ingest messages (product updates and orders) in one transaction: knows
//! nothing about AMQP. The consumer decides what to do with the delivery from the result.

use shared::{
    connect::{postgres::Database, redis::CommandError},
    processor::products::StateCache,
};
use time::OffsetDateTime;

use shared::contract::Ingest;

use crate::{
    downstream::Pending,
    shards::Fence,
    store::{self, Outcome, StoreError},
};

/// What the handler needs.
#[derive(Clone)]
pub struct Deps {
    /// The source of truth.
    pub database: Database,
    /// The products' read cache.
    pub cache: StateCache,
    /// Stock below this emits `stock.low` when crossed.
    pub stock_low_threshold: i32,
}

/// Why an event was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Applying failed in PostgreSQL (or the shard's lease was lost): [`StoreError`] says
    /// whose fault it is.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read cache could not be refreshed: not the event's fault; hold it and retry in
    /// place (the batch is applied by then, so the retry finds it in the inbox).
    #[error("redis unavailable: {0}")]
    Cache(#[from] CommandError),
}

impl HandleError {
    /// True when a dependency is down, so retrying in place may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Unavailable(_) | StoreError::Raced) | Self::Cache(_)
        )
    }
}

/// What a batch did: one outcome per item, and the downstream events it caused.
#[derive(Debug)]
pub struct Handled {
    /// Per item, in order.
    pub outcomes: Vec<Outcome>,
    /// To publish.
    pub emitted: Vec<Pending>,
}

/// Applies `items` (in order, in one transaction, while `fence` holds their shard) exactly once
/// each and refreshes the cached view of every product they touch.
///
/// Safe to call again after any failure: a second call finds the events in the inbox, changes
/// nothing, and still refreshes the cache (repairing a cache write lost to a crash).
pub async fn handle(items: &[Ingest], deps: &Deps, fence: &Fence) -> Result<Handled, HandleError> {
    let pool = deps.database.ready().map_err(StoreError::Unavailable)?;
    let batch = store::apply(pool, items, deps.stock_low_threshold, fence).await?;
    deps.cache.put_all(&batch.views).await?;
    let now = OffsetDateTime::now_utc();
    for (item, outcome) in items.iter().zip(&batch.outcomes) {
        if *outcome != Outcome::Duplicate {
            let latency = (now - item.received_at()).as_seconds_f64();
            metrics::histogram!(shared::metric::END_TO_END_DURATION_SECONDS)
                .record(latency.max(0.0));
        }
    }
    Ok(Handled {
        outcomes: batch.outcomes,
        emitted: batch.emitted,
    })
}
