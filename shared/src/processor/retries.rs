//! What others read of the processor's `retries` table (the last retry scheduled for each
//! event on the retry ladder; `processor::store::retries` records them).

use serde_json::Value;
use sqlx::PgPool;

/// The last retry scheduled for the event `id`, as JSON.
pub async fn of(pool: &PgPool, id: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT row_to_json(t) FROM (
             SELECT attempts, last_error, retry_at FROM retries WHERE event_id = $1) t",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}
