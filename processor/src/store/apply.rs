//! One batch, one transaction: the inbox, the products merged field by field, the orders'
//! stock reservations, and the downstream events in the outbox.

use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};

use shared::{
    contract::OrderPlaced,
    model::{Price, ProductId, Stock},
    products,
};
use sqlx::PgPool;
use time::OffsetDateTime;

use super::{Applied, Batch, Ingest, Rejection, StoreError};
use crate::{
    downstream::{self, Downstream},
    lww::Field,
};

type ProductRow = (
    String,
    Option<Decimal>,
    Option<OffsetDateTime>,
    Option<String>,
    Option<i32>,
    Option<OffsetDateTime>,
    Option<String>,
    OffsetDateTime,
);

struct Current {
    price: Field<Decimal>,
    stock: Field<i32>,
    updated_at: OffsetDateTime,
    changed: bool,
}

/// Applies `items` in one transaction: records each in the inbox and applies the new ones in
/// order: an update merges into its product field by field; an order takes its quantity from
/// the product's stock or is rejected. Five statements at most, whatever the batch size.
///
/// An order changes the stock's value but not its version: a later stock update (by
/// `occurred_at`) sets the stock outright, an older one stays stale.
pub async fn apply(
    pool: &PgPool,
    items: &[Ingest],
    stock_low_threshold: i32,
) -> Result<Batch, StoreError> {
    let mut tx = pool.begin().await?;
    let new: HashSet<String> = sqlx::query_scalar(
        "INSERT INTO processed_events (event_id, product_id, occurred_at, received_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(
        items
            .iter()
            .map(|i| i.event_id().to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|i| i.product().to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|i| match i {
                Ingest::Product(u) => u.occurred_at,
                Ingest::Order(o) => o.received_at,
            })
            .collect::<Vec<_>>(),
    )
    .bind(items.iter().map(Ingest::received_at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut products: Vec<String> = items.iter().map(|i| i.product().to_string()).collect();
    products.sort_unstable();
    products.dedup();
    // Updates create their product; orders never do (an unknown product rejects the order).
    let mut created: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Ingest::Product(u) if new.contains(u.event_id.as_str()) => {
                Some(u.product_id.to_string())
            }
            _ => None,
        })
        .collect();
    created.sort_unstable();
    created.dedup();
    if !created.is_empty() {
        sqlx::query(
            "INSERT INTO products (product_id) SELECT UNNEST($1::text[])
             ON CONFLICT (product_id) DO NOTHING",
        )
        .bind(&created)
        .execute(&mut *tx)
        .await?;
    }
    // Locked in a fixed order, so concurrent batches can never deadlock on each other.
    let rows: Vec<ProductRow> = sqlx::query_as(
        "SELECT product_id, price, price_occurred_at, price_event_id,
                stock, stock_occurred_at, stock_event_id, updated_at
         FROM products WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
    )
    .bind(&products)
    .fetch_all(&mut *tx)
    .await?;
    let mut current: HashMap<String, Current> = rows
        .into_iter()
        .map(
            |(id, price, price_at, price_event, stock, stock_at, stock_event, at)| {
                let current = Current {
                    price: Field {
                        value: price,
                        version: price_at.zip(price_event),
                    },
                    stock: Field {
                        value: stock,
                        version: stock_at.zip(stock_event),
                    },
                    updated_at: at,
                    changed: false,
                };
                (id, current)
            },
        )
        .collect();

    let mut applied_here = HashSet::new();
    let mut outcomes = Vec::with_capacity(items.len());
    let mut orders: Vec<(&OrderPlaced, Option<Rejection>)> = Vec::new();
    let mut emitted: Vec<Downstream> = Vec::new();
    for item in items {
        let id = item.event_id().as_str();
        if !new.contains(id) || !applied_here.insert(id) {
            outcomes.push(Applied::Duplicate);
            continue;
        }
        let product = current.get_mut(item.product().as_str());
        let before = product.as_ref().map(|p| (p.price.value, p.stock.value));
        let outcome = match (item, product) {
            (Ingest::Product(update), Some(product)) => {
                let version = (update.occurred_at, id);
                let price = product.price.offer(update.price.map(Price::value), version);
                let stock = product.stock.offer(update.stock.map(Stock::value), version);
                product.changed |= price || stock;
                if price || stock {
                    Applied::Changed
                } else {
                    Applied::Stale
                }
            }
            // The row was created above; it cannot be missing.
            (Ingest::Product(_), None) => Applied::Stale,
            (Ingest::Order(order), product) => {
                let rejection = match product {
                    None => Some(Rejection::UnknownProduct),
                    Some(product) => {
                        let available = product.stock.value.unwrap_or(0);
                        if available < order.qty.value() {
                            Some(Rejection::InsufficientStock)
                        } else {
                            product.stock.value = Some(available - order.qty.value());
                            product.changed = true;
                            None
                        }
                    }
                };
                orders.push((order, rejection));
                emitted.push(downstream::order_decided(
                    order,
                    rejection.map(Rejection::as_str),
                ));
                rejection.map_or(Applied::OrderCreated, Applied::OrderRejected)
            }
        };
        if let (Some(before), Some(product)) = (before, current.get(item.product().as_str())) {
            emitted.extend(downstream::product_changed(
                id,
                item.product(),
                before,
                (product.price.value, product.stock.value),
                stock_low_threshold,
            ));
        }
        outcomes.push(outcome);
    }
    if !emitted.is_empty() {
        sqlx::query(
            "INSERT INTO outbox (event_id, source_event_id, routing_key, payload)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[])
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(emitted.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .bind(
            emitted
                .iter()
                .map(|e| e.source_event_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            emitted
                .iter()
                .map(|e| e.kind.to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(
            emitted
                .iter()
                .map(|e| e.payload.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    if !orders.is_empty() {
        sqlx::query(
            "INSERT INTO orders (order_id, sku, qty, email, status, reason, created_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[],
                                  $6::text[], $7::timestamptz[])
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(
            orders
                .iter()
                .map(|(o, _)| o.order_id.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|(o, _)| o.sku.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|(o, _)| o.qty.value())
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|(o, _)| o.email.as_ref().map(ToString::to_string))
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|(_, r)| if r.is_some() { "rejected" } else { "created" })
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|(_, r)| r.map(|r| r.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|(o, _)| o.received_at)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }

    let changed: Vec<(&String, &Current)> = current.iter().filter(|(_, c)| c.changed).collect();
    if !changed.is_empty() {
        let column = |f: fn(&Current) -> Option<OffsetDateTime>| {
            changed.iter().map(|(_, c)| f(c)).collect::<Vec<_>>()
        };
        let event = |f: fn(&Current) -> Option<String>| {
            changed.iter().map(|(_, c)| f(c)).collect::<Vec<_>>()
        };
        let stamped: Vec<(String, OffsetDateTime)> = sqlx::query_as(
            "UPDATE products AS p SET price = u.price, price_occurred_at = u.price_at,
                    price_event_id = u.price_event, stock = u.stock,
                    stock_occurred_at = u.stock_at, stock_event_id = u.stock_event,
                    updated_at = now()
             FROM UNNEST($1::text[], $2::numeric[], $3::timestamptz[], $4::text[],
                         $5::int4[], $6::timestamptz[], $7::text[])
                  AS u(product_id, price, price_at, price_event, stock, stock_at, stock_event)
             WHERE p.product_id = u.product_id
             RETURNING p.product_id, p.updated_at",
        )
        .bind(
            changed
                .iter()
                .map(|(id, _)| (*id).clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            changed
                .iter()
                .map(|(_, c)| c.price.value)
                .collect::<Vec<_>>(),
        )
        .bind(column(|c| c.price.version.as_ref().map(|v| v.0)))
        .bind(event(|c| c.price.version.as_ref().map(|v| v.1.clone())))
        .bind(
            changed
                .iter()
                .map(|(_, c)| c.stock.value)
                .collect::<Vec<_>>(),
        )
        .bind(column(|c| c.stock.version.as_ref().map(|v| v.0)))
        .bind(event(|c| c.stock.version.as_ref().map(|v| v.1.clone())))
        .fetch_all(&mut *tx)
        .await?;
        for (id, at) in stamped {
            if let Some(c) = current.get_mut(&id) {
                c.updated_at = at;
            }
        }
    }
    tx.commit().await?;

    let views = current
        .into_iter()
        .map(|(id, c)| {
            let id: ProductId = id
                .parse()
                .map_err(|e| sqlx::Error::Decode(format!("stored product id: {e}").into()))?;
            products::view(id, c.price.value, c.stock.value, c.updated_at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batch { outcomes, views })
}
