//! Applying a batch of ingest messages (product updates and orders) in one transaction: knows
//! nothing about AMQP. The consumer decides what to do with the delivery from the result.

use redis::aio::ConnectionManager;
use shared::{
    connect::{postgres::Database, redis::timed},
    contract::ProductView,
    products::cache_key,
    topology::Namespace,
};
use time::OffsetDateTime;

use shared::contract::Ingest;

use crate::{
    downstream::Pending,
    shards::Fence,
    store::{self, Applied, StoreError},
};

/// What the handler needs.
#[derive(Clone)]
pub struct Deps {
    /// The source of truth.
    pub database: Database,
    /// The read cache.
    pub redis: ConnectionManager,
    /// Prefix of cache keys.
    pub namespace: Namespace,
    /// Stock below this emits `stock.low` when crossed.
    pub stock_low_threshold: i32,
    /// How long a cached view lives.
    pub cache_ttl_seconds: u64,
}

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It changed at least one field.
    Applied,
    /// It was recorded, but newer values already held every field it carried.
    Stale,
    /// It had been applied before; nothing changed.
    Duplicate,
    /// An order that reserved its stock.
    OrderCreated,
    /// An order rejected (unknown product, insufficient stock); stock unchanged.
    OrderRejected,
}

impl Outcome {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::OrderCreated => "order_created",
            Self::OrderRejected => "order_rejected",
        }
    }
}

/// Why an event was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A dependency is down: not the event's fault; hold it and retry in place.
    #[error("{dependency} unavailable: {error}")]
    Unavailable {
        /// `postgres` or `redis`.
        dependency: &'static str,
        /// What failed.
        error: String,
    },
    /// The event itself cannot be applied; retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// Applying this event failed; it may pass later (the retry ladder).
    #[error("failed: {0}")]
    Failed(String),
    /// The shard belongs to another replica now: give the events back and stop consuming it.
    #[error("the shard's lease is held by another replica")]
    Fenced,
}

impl HandleError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => Self::Unavailable {
                dependency: "postgres",
                error: e.to_string(),
            },
            StoreError::Refused(e) => Self::Refused(e.to_string()),
            StoreError::Failed(e) => Self::Failed(e.to_string()),
            StoreError::Fenced => Self::Fenced,
        }
    }
}

/// What a batch did: one outcome per item, and the downstream events it left in the outbox.
#[derive(Debug)]
pub struct Handled {
    /// Per item, in order.
    pub outcomes: Vec<Outcome>,
    /// To publish, then forget.
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
    refresh_cache(deps, &batch.views).await?;
    let now = OffsetDateTime::now_utc();
    let outcomes = items
        .iter()
        .zip(batch.outcomes)
        .map(|(item, applied)| {
            let outcome = match applied {
                Applied::Changed => Outcome::Applied,
                Applied::Stale => Outcome::Stale,
                Applied::Duplicate => Outcome::Duplicate,
                Applied::OrderCreated => Outcome::OrderCreated,
                Applied::OrderRejected(_) => Outcome::OrderRejected,
            };
            if outcome != Outcome::Duplicate {
                let latency = (now - item.received_at()).as_seconds_f64();
                metrics::histogram!(shared::metric::END_TO_END_DURATION_SECONDS)
                    .record(latency.max(0.0));
            }
            outcome
        })
        .collect();
    Ok(Handled {
        outcomes,
        emitted: batch.emitted,
    })
}

/// Writes every view to the cache in one pipelined round trip.
async fn refresh_cache(deps: &Deps, views: &[ProductView]) -> Result<(), HandleError> {
    if views.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for view in views {
        let json = serde_json::to_string(view).expect("a product view always serialises");
        pipe.cmd("SET")
            .arg(cache_key(&deps.namespace, &view.product_id))
            .arg(json)
            .arg("EX")
            .arg(deps.cache_ttl_seconds)
            .ignore();
    }
    let mut redis = deps.redis.clone();
    let unavailable = |error: String| HandleError::Unavailable {
        dependency: "redis",
        error,
    };
    timed(pipe.query_async::<()>(&mut redis))
        .await
        .map_err(|e| unavailable(e.to_string()))
}
