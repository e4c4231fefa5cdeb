//! What others read of the processor's `outbox` (the downstream events it commits with each
//! apply and publishes after; `processor::downstream` writes and empties it).

use sqlx::PgPool;

/// The ids of the downstream events of the source event `id` not yet published, as a JSON
/// array.
pub async fn unpublished(pool: &PgPool, id: &str) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(json_agg(event_id ORDER BY seq), '[]') FROM outbox
         WHERE source_event_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}
