//! The `products` table (the processor's) and the products' read cache in Redis ([`cache`]):
//! the current state of each product, every field with the version that set it ([`lww`]). The
//! processor locks, merges and saves rows in its batch transaction and rewrites the cache; the
//! gateway and the dashboard read here.

pub mod cache;
pub mod lww;

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::{
    contract::ProductView,
    model::{Price, ProductId, Stock},
};

pub use cache::StateCache;
use lww::Field;

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

/// How many products there are.
pub async fn count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(pool)
        .await
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

/// A product's row, locked for a change: each field with the version that set it.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    /// The product.
    pub product_id: ProductId,
    /// Its price.
    pub price: Field<Decimal>,
    /// Its stock.
    pub stock: Field<i32>,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

impl Versioned {
    /// A product no event has set yet (no row until [`save`] writes it), stamped `at`.
    pub fn new(product_id: &ProductId, at: OffsetDateTime) -> Self {
        Self {
            product_id: product_id.clone(),
            price: Field::default(),
            stock: Field::default(),
            updated_at: at,
        }
    }

    /// Its current view.
    pub fn view(&self) -> Result<ProductView, sqlx::Error> {
        view(
            self.product_id.clone(),
            self.price.value,
            self.stock.value,
            self.updated_at,
        )
    }
}

type Row = (
    String,
    Option<Decimal>,
    Option<OffsetDateTime>,
    Option<String>,
    Option<i32>,
    Option<OffsetDateTime>,
    Option<String>,
    OffsetDateTime,
);

/// Locks the products `ids` that exist, in id order, so that concurrent batches can never
/// deadlock on each other.
pub async fn lock(
    tx: &mut PgConnection,
    ids: &[&ProductId],
) -> Result<Vec<Versioned>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT product_id, price, price_occurred_at, price_event_id,
                stock, stock_occurred_at, stock_event_id, updated_at
         FROM products WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
    )
    .bind(ids.iter().map(|id| id.as_str()).collect::<Vec<_>>())
    .fetch_all(tx)
    .await?;
    rows.into_iter()
        .map(
            |(product_id, price, price_at, price_event, stock, stock_at, stock_event, at)| {
                Ok(Versioned {
                    product_id: product_id.parse().map_err(|e| {
                        sqlx::Error::Decode(format!("stored product id: {e}").into())
                    })?,
                    price: Field {
                        value: price,
                        version: price_at.zip(price_event),
                    },
                    stock: Field {
                        value: stock,
                        version: stock_at.zip(stock_event),
                    },
                    updated_at: at,
                })
            },
        )
        .collect()
}

/// Saves `changed` rows (locked by [`lock`] in the same transaction, or new) and stamps their
/// `updated_at` with the time of the save.
pub async fn save(
    tx: &mut PgConnection,
    changed: &mut [&mut Versioned],
) -> Result<(), sqlx::Error> {
    if changed.is_empty() {
        return Ok(());
    }
    let at = |f: fn(&Versioned) -> &Option<(OffsetDateTime, String)>| {
        changed
            .iter()
            .map(|p| f(p).as_ref().map(|v| v.0))
            .collect::<Vec<_>>()
    };
    let by = |f: fn(&Versioned) -> &Option<(OffsetDateTime, String)>| {
        changed
            .iter()
            .map(|p| f(p).as_ref().map(|v| v.1.clone()))
            .collect::<Vec<_>>()
    };
    let stamped: Vec<(String, OffsetDateTime)> = sqlx::query_as(
        "INSERT INTO products AS p (product_id, price, price_occurred_at, price_event_id,
                                     stock, stock_occurred_at, stock_event_id)
         SELECT * FROM UNNEST($1::text[], $2::numeric[], $3::timestamptz[], $4::text[],
                              $5::int4[], $6::timestamptz[], $7::text[])
         ON CONFLICT (product_id) DO UPDATE SET price = excluded.price,
                price_occurred_at = excluded.price_occurred_at,
                price_event_id = excluded.price_event_id, stock = excluded.stock,
                stock_occurred_at = excluded.stock_occurred_at,
                stock_event_id = excluded.stock_event_id, updated_at = now()
         RETURNING p.product_id, p.updated_at",
    )
    .bind(
        changed
            .iter()
            .map(|p| p.product_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(changed.iter().map(|p| p.price.value).collect::<Vec<_>>())
    .bind(at(|p| &p.price.version))
    .bind(by(|p| &p.price.version))
    .bind(changed.iter().map(|p| p.stock.value).collect::<Vec<_>>())
    .bind(at(|p| &p.stock.version))
    .bind(by(|p| &p.stock.version))
    .fetch_all(tx)
    .await?;
    let stamped: std::collections::HashMap<String, OffsetDateTime> = stamped.into_iter().collect();
    for p in changed.iter_mut() {
        if let Some(updated_at) = stamped.get(p.product_id.as_str()) {
            p.updated_at = *updated_at;
        }
    }
    Ok(())
}
