//! What others read of the `dead_letters` table: every service sets messages aside into it
//! ([`crate::dead_letter`]); the processor's operator API lists, replays and discards them
//! (`processor::dead_letters`).

use sqlx::PgPool;

use crate::dead_letter::Reason;

/// The dead letters of the event `id`, oldest first, as a JSON array.
pub async fn of_event(pool: &PgPool, id: &str) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(json_agg(t ORDER BY t.dead_lettered_at), '[]') FROM (
             SELECT id, reason, error, attempts, service, dead_lettered_at
             FROM dead_letters WHERE event_id = $1) t",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// How many dead letters there are, by reason.
pub async fn by_reason(pool: &PgPool) -> Result<Vec<(Reason, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason")
        .fetch_all(pool)
        .await
}
