//! The inbox, `processed_events`: one row per applied event (its kind, owner and id: an
//! [`EventKey`]), written in the transaction that applies it, so an event is applied at most
//! once whatever redelivers it. A row of the legacy space (owner `''`, from before ids were
//! scoped by key) stands for every owner: that id was applied, whoever sends it again.

use std::collections::HashSet;

use shared::contract::{EventKey, Ingest, IngestKind};
use sqlx::PgConnection;

/// Records `items` and returns those that were not in the inbox yet.
pub async fn record(
    tx: &mut PgConnection,
    items: &[Ingest],
) -> Result<HashSet<EventKey>, sqlx::Error> {
    let column = |f: fn(&Ingest) -> String| items.iter().map(f).collect::<Vec<_>>();
    let new: Vec<(IngestKind, String, String)> = sqlx::query_as(
        "INSERT INTO processed_events (event_id, kind, product_id, occurred_at, received_at,
                                       owner)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                              $5::timestamptz[], $6::text[]) AS e(event_id, kind, product_id,
                                                                occurred_at, received_at, owner)
         WHERE e.owner = '' OR NOT EXISTS (
             SELECT 1 FROM processed_events p
             WHERE p.event_id = e.event_id AND p.kind = e.kind AND p.owner = '')
         ON CONFLICT (event_id, kind, owner) DO NOTHING RETURNING kind, owner, event_id",
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
    .bind(column(|i| i.owner().to_string()))
    .fetch_all(tx)
    .await?;
    Ok(new
        .into_iter()
        .filter_map(|(kind, owner, id)| {
            Some(EventKey {
                kind,
                owner: owner.parse().ok()?,
                id: id.parse().ok()?,
            })
        })
        .collect())
}
