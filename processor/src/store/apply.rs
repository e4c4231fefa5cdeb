//! One batch, one transaction: the shard's lease checked ([`crate::shards::leases::fence`]),
//! the products' rows locked, the inbox read, the plan decided ([`super::plan::decide`]), then
//! the inbox rows (with the downstream events each caused), the orders and the products
//! written.

use std::time::Instant;

use shared::{contract::Ingest, model::ProductId, processor::orders, processor::products};
use sqlx::PgPool;
use time::OffsetDateTime;

use super::{Batch, StoreError, inbox, plan};
use crate::shards::Fence;

/// Applies `items` in one transaction of six statements whatever the batch size: checks that
/// `fence` still holds the shard (else [`StoreError::Fenced`], nothing written), locks the rows
/// of the products they touch (in id order, so concurrent batches never deadlock), reads which
/// events the inbox already holds, decides, and writes the new events' inbox rows (each with
/// the downstream events it caused), the orders and the changed rows. If another transaction
/// recorded one of the events meanwhile, nothing is written ([`StoreError::Raced`]).
pub async fn apply(
    pool: &PgPool,
    items: &[Ingest],
    stock_low_threshold: i32,
    fence: &Fence,
) -> Result<Batch, StoreError> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    if !fence.holds(&mut tx).await? {
        return Err(StoreError::Fenced);
    }
    let mut touched: Vec<&ProductId> = items.iter().map(Ingest::product).collect();
    touched.sort_unstable();
    touched.dedup();
    let rows = products::lock(&mut tx, &touched).await?;
    let seen = inbox::seen(&mut tx, items).await?;
    let new = items
        .iter()
        .map(Ingest::key)
        .filter(|key| !seen.contains(key))
        .collect();
    let deciding = Instant::now();
    let mut plan = plan::decide(
        items,
        &new,
        rows,
        stock_low_threshold,
        OffsetDateTime::now_utc(),
    );
    let decided = deciding.elapsed();
    let applied = plan.applied(items);
    if inbox::record(&mut tx, &applied).await? < applied.len() as u64 {
        return Err(StoreError::Raced);
    }
    orders::insert(&mut tx, &plan.orders).await?;
    products::save(&mut tx, &mut plan.changed()).await?;
    tx.commit().await?;
    crate::stage::record(crate::stage::Stage::Decide, decided);
    crate::stage::record(crate::stage::Stage::Persist, started.elapsed() - decided);
    let views = plan
        .products
        .values()
        .map(|(p, _)| p.view())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batch {
        outcomes: plan.outcomes,
        views,
        emitted: plan.emitted,
    })
}
