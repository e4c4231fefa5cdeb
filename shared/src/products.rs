//! Reading a product's current state from PostgreSQL, the source of truth (the gateway's reads
//! on a cache miss, the processor's cache refresh).

use rust_decimal::Decimal;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{
    contract::ProductView,
    model::{Price, ProductId, Stock},
};

/// The product's current state, `None` if no event ever touched it.
pub async fn load(pool: &PgPool, id: &ProductId) -> Result<Option<ProductView>, sqlx::Error> {
    let row: Option<(Option<Decimal>, Option<i32>, OffsetDateTime)> =
        sqlx::query_as("SELECT price, stock, updated_at FROM products WHERE product_id = $1")
            .bind(id.as_str())
            .fetch_optional(pool)
            .await?;
    row.map(|(price, stock, at)| view(id.clone(), price, stock, at))
        .transpose()
}

/// Builds a view from stored columns, checking them against the value rules once more.
pub fn view(
    product_id: ProductId,
    price: Option<Decimal>,
    stock: Option<i32>,
    updated_at: OffsetDateTime,
) -> Result<ProductView, sqlx::Error> {
    let corrupt = |what: String| sqlx::Error::Decode(what.into());
    Ok(ProductView {
        product_id,
        price: price
            .map(Price::new)
            .transpose()
            .map_err(|e| corrupt(format!("stored price: {e}")))?,
        stock: stock
            .map(|s| Stock::new(i64::from(s)))
            .transpose()
            .map_err(|e| corrupt(format!("stored stock: {e}")))?,
        updated_at,
    })
}
