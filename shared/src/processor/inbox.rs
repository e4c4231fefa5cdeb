//! What others read of the processor's inbox, `processed_events` (one row per applied event,
//! with the downstream events it caused, written by `processor::store::inbox` in the
//! transaction that applies it).

use serde_json::Value;
use sqlx::PgPool;

/// The inbox rows of the event `id`, of every kind and owner (at most 20), as a JSON array;
/// `announcements` is the bodies of the downstream events each caused (`null` for none).
pub async fn applied(pool: &PgPool, id: &str) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(json_agg(t), '[]') FROM (
             SELECT kind, owner, product_id, occurred_at, received_at, processed_at,
                    announcements
             FROM processed_events WHERE event_id = $1 ORDER BY kind, owner LIMIT 20) t",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// The `limit` events last applied to the product `id`, newest first, as a JSON array.
pub async fn recent(pool: &PgPool, id: &str, limit: i64) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(json_agg(t), '[]') FROM (
             SELECT event_id, owner, occurred_at, processed_at FROM processed_events
             WHERE product_id = $1 ORDER BY processed_at DESC LIMIT $2) t",
    )
    .bind(id)
    .bind(limit)
    .fetch_one(pool)
    .await
}
