//! The `orders` table (the processor's): every decided order, by the API key that placed it and
//! its id (order ids are unique per key). The processor writes it in the batch transaction that
//! reserves the stock; the gateway (`GET /orders/{id}`) and the dashboard read it here.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    contract::OrderPlaced,
    model::{OrderId, Owner, Rejection},
};

/// What became of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted, not yet decided: only ever in the gateway's cache, never stored here.
    Pending,
    /// Its stock is reserved.
    Created,
    /// Refused; the reason says why.
    Rejected,
}

/// An order, as stored (once decided) and served.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Order {
    /// Its id (unique among the orders of the key that placed it).
    pub order_id: String,
    /// The name of the API key that placed it; empty for orders placed before ids were scoped
    /// by key.
    pub placed_by: String,
    /// The product ordered.
    pub sku: String,
    /// Units ordered.
    pub qty: i32,
    /// The customer's address, when given.
    pub email: Option<String>,
    /// What became of it.
    pub status: OrderStatus,
    /// Why it was rejected.
    pub reason: Option<Rejection>,
    /// When the gateway accepted it.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was decided (while pending: when it was accepted).
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Orders by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Counts {
    /// Every decided order.
    pub total: i64,
    /// Those whose stock is reserved.
    pub created: i64,
    /// Those refused.
    pub rejected: i64,
}

impl Order {
    /// An order just accepted, not yet decided.
    pub fn pending(placed: &OrderPlaced) -> Self {
        Self {
            order_id: placed.order_id.to_string(),
            placed_by: placed.owner.to_string(),
            sku: placed.sku.to_string(),
            qty: placed.qty.value(),
            email: placed.email.as_ref().map(ToString::to_string),
            status: OrderStatus::Pending,
            reason: None,
            created_at: placed.received_at,
            updated_at: placed.received_at,
        }
    }
}

const COLUMNS: &str =
    "order_id, placed_by, sku, qty, email, status, reason, created_at, updated_at";

/// Records decided orders (in the caller's transaction); an order recorded before is kept.
pub async fn insert(
    tx: &mut PgConnection,
    decided: &[(&OrderPlaced, Option<Rejection>)],
) -> Result<(), sqlx::Error> {
    if decided.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&(&OrderPlaced, Option<Rejection>)) -> Option<String>| {
        decided.iter().map(f).collect::<Vec<_>>()
    };
    sqlx::query(
        "INSERT INTO orders (order_id, sku, qty, email, status, reason, created_at, placed_by)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[],
                              $6::text[], $7::timestamptz[], $8::text[])
         ON CONFLICT (placed_by, order_id) DO NOTHING",
    )
    .bind(column(|(o, _)| Some(o.order_id.to_string())))
    .bind(column(|(o, _)| Some(o.sku.to_string())))
    .bind(
        decided
            .iter()
            .map(|(o, _)| o.qty.value())
            .collect::<Vec<_>>(),
    )
    .bind(column(|(o, _)| o.email.as_ref().map(ToString::to_string)))
    .bind(
        decided
            .iter()
            .map(|(_, r)| match r {
                None => OrderStatus::Created,
                Some(_) => OrderStatus::Rejected,
            })
            .collect::<Vec<_>>(),
    )
    .bind(decided.iter().map(|(_, r)| *r).collect::<Vec<_>>())
    .bind(
        decided
            .iter()
            .map(|(o, _)| o.received_at)
            .collect::<Vec<_>>(),
    )
    .bind(column(|(o, _)| Some(o.owner.to_string())))
    .execute(tx)
    .await?;
    Ok(())
}

/// The order `id` that `owner` placed, once decided.
pub async fn load(
    pool: &PgPool,
    owner: &Owner,
    id: &OrderId,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE placed_by = $1 AND order_id = $2"
    )))
    .bind(owner.as_str())
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
}

/// Every decided order with the id `id`, whoever placed it (at most `limit`), by who placed it.
pub async fn with_id(pool: &PgPool, id: &OrderId, limit: i64) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE order_id = $1 ORDER BY placed_by LIMIT $2"
    )))
    .bind(id.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The `limit` most recent orders of the product `sku`, newest first.
pub async fn recent(pool: &PgPool, sku: &str, limit: i64) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE sku = $1 ORDER BY created_at DESC LIMIT $2"
    )))
    .bind(sku)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many orders there are, by status.
pub async fn counts(pool: &PgPool) -> Result<Counts, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS total,
                count(*) FILTER (WHERE status = 'created') AS created,
                count(*) FILTER (WHERE status = 'rejected') AS rejected
         FROM orders",
    )
    .fetch_one(pool)
    .await
}
