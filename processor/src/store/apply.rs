//! One batch, one transaction: the inbox, the products merged field by field, the orders'
//! stock reservations, and the downstream events in the outbox.

use std::collections::{HashMap, HashSet};

use shared::{
    contract::{Ingest, OrderPlaced},
    model::{Price, Rejection, Stock},
    orders,
    products::{self, Versioned},
};
use sqlx::PgPool;
use time::OffsetDateTime;

use super::{Applied, Batch, StoreError, inbox};
use crate::downstream::{self, Pending};

/// What a batch decides before it writes: the products it holds locked, and what follows.
struct Decisions<'a> {
    products: HashMap<String, (Versioned, bool)>,
    outcomes: Vec<Applied>,
    orders: Vec<(&'a OrderPlaced, Option<Rejection>)>,
    emitted: Vec<Pending>,
    at: OffsetDateTime,
    stock_low_threshold: i32,
}

/// Applies `items` in one transaction: records each in the inbox and applies the new ones in
/// order: an update merges into its product field by field; an order takes its quantity from
/// the product's stock or is rejected. Six statements at most, whatever the batch size.
///
/// An order changes the stock's value but not its version: a later stock update (by
/// `occurred_at`) sets the stock outright, an older one stays stale.
pub async fn apply(
    pool: &PgPool,
    items: &[Ingest],
    stock_low_threshold: i32,
) -> Result<Batch, StoreError> {
    let mut tx = pool.begin().await?;
    let new = inbox::record(&mut tx, items).await?;
    let is_new = |item: &Ingest| new.contains(&(item.kind(), item.event_id().to_string()));
    // Updates create their product; orders never do (an unknown product rejects the order).
    let created: Vec<String> = sorted(items.iter().filter(|i| is_new(i)).filter_map(|i| match i {
        Ingest::Product(u) => Some(u.product_id.to_string()),
        Ingest::Order(_) => None,
    }));
    products::create(&mut tx, &created).await?;
    let touched = sorted(items.iter().map(|i| i.product().to_string()));
    let mut decisions = Decisions {
        products: products::lock(&mut tx, &touched)
            .await?
            .into_iter()
            .map(|p| (p.product_id.clone(), (p, false)))
            .collect(),
        outcomes: Vec::with_capacity(items.len()),
        orders: Vec::new(),
        emitted: Vec::new(),
        at: OffsetDateTime::now_utc(),
        stock_low_threshold,
    };
    let mut applied_here = HashSet::new();
    for item in items {
        let first = applied_here.insert((item.kind(), item.event_id().as_str()));
        let outcome = if is_new(item) && first {
            decisions.decide(item)
        } else {
            Applied::Duplicate
        };
        decisions.outcomes.push(outcome);
    }
    downstream::record(&mut tx, &decisions.emitted).await?;
    orders::insert(&mut tx, &decisions.orders).await?;
    let mut changed: Vec<&mut Versioned> = decisions
        .products
        .values_mut()
        .filter(|(_, changed)| *changed)
        .map(|(p, _)| p)
        .collect();
    products::save(&mut tx, &mut changed).await?;
    tx.commit().await?;
    let views = decisions
        .products
        .values()
        .map(|(p, _)| p.view())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batch {
        outcomes: decisions.outcomes,
        views,
    })
}

/// The distinct values of `ids`, sorted.
fn sorted(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl<'a> Decisions<'a> {
    /// Applies one new event to the locked products and notes what it emits.
    fn decide(&mut self, item: &'a Ingest) -> Applied {
        let id = item.event_id().as_str();
        let entry = self.products.get_mut(item.product().as_str());
        let before = entry.as_ref().map(|(p, _)| (p.price.value, p.stock.value));
        let outcome = match (item, entry) {
            (Ingest::Product(update), Some((product, changed))) => {
                let version = (update.occurred_at, id);
                let price = product.price.offer(update.price.map(Price::value), version);
                let stock = product.stock.offer(update.stock.map(Stock::value), version);
                *changed |= price || stock;
                if price || stock {
                    Applied::Changed
                } else {
                    Applied::Stale
                }
            }
            // The row was created before the lock; it cannot be missing.
            (Ingest::Product(_), None) => Applied::Stale,
            (Ingest::Order(order), entry) => {
                let rejection = reserve(order, entry);
                self.orders.push((order, rejection));
                self.emitted
                    .push(downstream::order_decided(order, rejection, self.at));
                rejection.map_or(Applied::OrderCreated, Applied::OrderRejected)
            }
        };
        if let (Some(before), Some((product, _))) =
            (before, self.products.get(item.product().as_str()))
        {
            self.emitted.extend(downstream::product_changed(
                item.kind(),
                item.event_id(),
                item.product(),
                (before, (product.price.value, product.stock.value)),
                self.stock_low_threshold,
                self.at,
            ));
        }
        outcome
    }
}

/// Takes the order's quantity from its product's stock, or says why not.
fn reserve(order: &OrderPlaced, product: Option<&mut (Versioned, bool)>) -> Option<Rejection> {
    let Some((product, changed)) = product else {
        return Some(Rejection::UnknownProduct);
    };
    let available = product.stock.value.unwrap_or(0);
    if available < order.qty.value() {
        return Some(Rejection::InsufficientStock);
    }
    product.stock.value = Some(available - order.qty.value());
    *changed = true;
    None
}
