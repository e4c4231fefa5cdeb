//! The `notifications` table: every downstream event the notifier took in, with or without
//! subscribers, its body kept byte for byte as it is signed and sent.

use std::collections::HashMap;

use shared::{
    contract::{DownstreamId, EventType},
    trace,
};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

/// Records the event `id` with its intake's W3C `trace` headers, unless it was recorded
/// before; true if it is new.
pub async fn insert(
    tx: &mut PgConnection,
    id: &DownstreamId,
    kind: EventType,
    body: &str,
    trace: &HashMap<String, String>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifications (event_id, event_type, body, traceparent, tracestate)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(kind)
    .bind(body)
    .bind(trace.get(trace::TRACEPARENT))
    .bind(trace.get(trace::TRACESTATE))
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
