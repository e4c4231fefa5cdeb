//! The inbox, `processed_events`: one row per applied event (kind and id), written in the
//! transaction that applies it, so an event is applied at most once whatever redelivers it.

use std::collections::HashSet;

use serde_json::Value;
use shared::contract::{Ingest, IngestKind};
use sqlx::{PgConnection, PgPool};

/// Records `items` and returns those that were not in the inbox yet (as kind and id).
pub async fn record(
    tx: &mut PgConnection,
    items: &[Ingest],
) -> Result<HashSet<(IngestKind, String)>, sqlx::Error> {
    let column = |f: fn(&Ingest) -> String| items.iter().map(f).collect::<Vec<_>>();
    let new: Vec<(IngestKind, String)> = sqlx::query_as(
        "INSERT INTO processed_events (event_id, kind, product_id, occurred_at, received_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                              $5::timestamptz[])
         ON CONFLICT (event_id, kind) DO NOTHING RETURNING kind, event_id",
    )
    .bind(column(|i| i.event_id().to_string()))
    .bind(items.iter().map(Ingest::kind).collect::<Vec<_>>())
    .bind(column(|i| i.product().to_string()))
    .bind(
        items
            .iter()
            .map(|i| match i {
                Ingest::Product(u) | Ingest::Created(u) => u.occurred_at,
                Ingest::Order(o) => o.received_at,
            })
            .collect::<Vec<_>>(),
    )
    .bind(items.iter().map(Ingest::received_at).collect::<Vec<_>>())
    .fetch_all(tx)
    .await?;
    Ok(new.into_iter().collect())
}

/// The inbox row of the event `id` (the first kind, if both kinds carry the id), as JSON.
pub async fn applied(pool: &PgPool, id: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT row_to_json(t) FROM (
             SELECT kind, product_id, occurred_at, received_at, processed_at
             FROM processed_events WHERE event_id = $1 ORDER BY kind LIMIT 1) t",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The `limit` events last applied to the product `id`, newest first, as a JSON array.
pub async fn recent(pool: &PgPool, id: &str, limit: i64) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(json_agg(t), '[]') FROM (
             SELECT event_id, occurred_at, processed_at FROM processed_events
             WHERE product_id = $1 ORDER BY processed_at DESC LIMIT $2) t",
    )
    .bind(id)
    .bind(limit)
    .fetch_one(pool)
    .await
}
