//! PostgreSQL, the source of truth: the inbox and the products, changed together in one
//! transaction so an event's effect and the record that it was applied can never part.

use rust_decimal::Decimal;
use shared::{
    contract::{ProductUpdate, ProductView},
    model::{Price, Stock},
    products,
};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::lww::Field;

/// What applying an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// At least one field took the event's value; the product is now `view`.
    Changed(ProductView),
    /// The event is recorded but every field it carried already had a newer value.
    Stale,
    /// The event was applied before: nothing was done.
    Duplicate,
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

type ProductRow = (
    Option<Decimal>,
    Option<OffsetDateTime>,
    Option<String>,
    Option<i32>,
    Option<OffsetDateTime>,
    Option<String>,
);

/// Records the event in the inbox and, if it is new, merges it into its product field by field.
pub async fn apply(pool: &PgPool, update: &ProductUpdate) -> Result<Applied, StoreError> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO processed_events (event_id, product_id, occurred_at, received_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(update.event_id.as_str())
    .bind(update.product_id.as_str())
    .bind(update.occurred_at)
    .bind(update.received_at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(Applied::Duplicate);
    }
    sqlx::query(
        "INSERT INTO products (product_id) VALUES ($1) ON CONFLICT (product_id) DO NOTHING",
    )
    .bind(update.product_id.as_str())
    .execute(&mut *tx)
    .await?;
    let (price, price_at, price_event, stock, stock_at, stock_event): ProductRow = sqlx::query_as(
        "SELECT price, price_occurred_at, price_event_id, stock, stock_occurred_at, stock_event_id
         FROM products WHERE product_id = $1 FOR UPDATE",
    )
    .bind(update.product_id.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let mut price = Field {
        value: price,
        version: price_at.zip(price_event),
    };
    let mut stock = Field {
        value: stock,
        version: stock_at.zip(stock_event),
    };
    let version = (update.occurred_at, update.event_id.as_str());
    let price_changed = price.offer(update.price.map(Price::value), version);
    let stock_changed = stock.offer(update.stock.map(Stock::value), version);
    if !price_changed && !stock_changed {
        tx.commit().await?;
        return Ok(Applied::Stale);
    }
    let (price_at, price_event) = price.version.unzip();
    let (stock_at, stock_event) = stock.version.unzip();
    let updated_at: OffsetDateTime = sqlx::query_scalar(
        "UPDATE products SET price = $2, price_occurred_at = $3, price_event_id = $4,
                stock = $5, stock_occurred_at = $6, stock_event_id = $7, updated_at = now()
         WHERE product_id = $1 RETURNING updated_at",
    )
    .bind(update.product_id.as_str())
    .bind(price.value)
    .bind(price_at)
    .bind(price_event)
    .bind(stock.value)
    .bind(stock_at)
    .bind(stock_event)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Applied::Changed(products::view(
        update.product_id.clone(),
        price.value,
        stock.value,
        updated_at,
    )?))
}
