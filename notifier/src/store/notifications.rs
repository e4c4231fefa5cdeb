//! The `notifications` table: every downstream event the notifier took in, with or without
//! subscribers, its body kept byte for byte as it is signed and sent.

use shared::contract::EventType;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

/// Records the event `id` unless it was recorded before; true if it is new.
pub async fn insert(
    tx: &mut PgConnection,
    id: &str,
    kind: EventType,
    body: &str,
    traceparent: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifications (event_id, event_type, body, traceparent)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(body)
    .bind(traceparent)
    .execute(tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The type and arrival of the event `id`, if it was taken in.
pub async fn get(
    pool: &PgPool,
    id: &str,
) -> Result<Option<(EventType, OffsetDateTime)>, sqlx::Error> {
    sqlx::query_as("SELECT event_type, received_at FROM notifications WHERE event_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}
