//! The inbox, `processed_events`: one row per applied event (its kind, owner and id: an
//! [`EventKey`]), written in the transaction that applies it, so an event is applied at most
//! once whatever redelivers it. A row of the legacy space (owner `''`, from before ids were
//! scoped by key) stands for every owner: that id was applied, whoever sends it again.
//!
//! A row also keeps the downstream events its event caused, as the bytes they are published
//! with (`announcements`): there is no outbox to insert into and empty again. When the event
//! comes back (redelivered after a crash between commit and publish, or sent again), it is a
//! duplicate, and [`crate::downstream::pending`] reads them to publish again.

use std::collections::HashSet;

use shared::contract::{EventKey, Ingest, IngestKind};
use sqlx::PgConnection;

/// Of `items`, those the inbox already holds (a legacy row counts for every owner).
pub async fn seen(
    tx: &mut PgConnection,
    items: &[Ingest],
) -> Result<HashSet<EventKey>, sqlx::Error> {
    let column = |f: fn(&Ingest) -> String| items.iter().map(f).collect::<Vec<_>>();
    let seen: Vec<(IngestKind, String, String)> = sqlx::query_as(
        "SELECT e.kind, e.owner, e.event_id
         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS e(event_id, kind, owner)
         WHERE EXISTS (
             SELECT 1 FROM processed_events p
             WHERE p.event_id = e.event_id AND p.kind = e.kind AND p.owner IN (e.owner, ''))",
    )
    .bind(column(|i| i.event_id().to_string()))
    .bind(items.iter().map(Ingest::kind).collect::<Vec<_>>())
    .bind(column(|i| i.owner().to_string()))
    .fetch_all(tx)
    .await?;
    Ok(seen
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

/// An event to record as applied, with the bodies of the downstream events it caused.
pub struct Applied<'a> {
    /// The event.
    pub item: &'a Ingest,
    /// Its downstream events' bodies, in the order they are published.
    pub announcements: Vec<&'a str>,
}

/// Records `applied` (none of them in the inbox yet: [`seen`], under the shard's lease) and
/// returns how many rows it wrote; fewer than given means another transaction recorded one of
/// them meanwhile.
pub async fn record(tx: &mut PgConnection, applied: &[Applied<'_>]) -> Result<u64, sqlx::Error> {
    if applied.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&Ingest) -> String| applied.iter().map(|a| f(a.item)).collect::<Vec<_>>();
    // Every row's announcements in one array, each row's a slice of it (from, to; to < from
    // when it has none): PostgreSQL's arrays are rectangular, so not an array of arrays.
    let bodies: Vec<&str> = applied
        .iter()
        .flat_map(|a| a.announcements.iter().copied())
        .collect();
    let (mut from, mut to) = (Vec::new(), Vec::new());
    for a in applied {
        let first = to.last().map_or(1, |last| last + 1);
        from.push(first);
        to.push(first + i32::try_from(a.announcements.len()).unwrap_or(i32::MAX) - 1);
    }
    let written = sqlx::query(
        "INSERT INTO processed_events (event_id, kind, product_id, occurred_at, received_at,
                                       owner, announcements)
         SELECT e.event_id, e.kind, e.product_id, e.occurred_at, e.received_at, e.owner,
                CASE WHEN e.upto >= e.first THEN ($7::text[])[e.first:e.upto] END
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $8::int[], $9::int[])
              AS e(event_id, kind, product_id, occurred_at, received_at, owner, first, upto)
         ON CONFLICT (event_id, kind, owner) DO NOTHING",
    )
    .bind(column(|i| i.event_id().to_string()))
    .bind(applied.iter().map(|a| a.item.kind()).collect::<Vec<_>>())
    .bind(column(|i| i.product().to_string()))
    .bind(
        applied
            .iter()
            .map(|a| match a.item {
                Ingest::Product(u) | Ingest::Created(u) => u.occurred_at,
                Ingest::Order(o) => o.received_at,
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        applied
            .iter()
            .map(|a| a.item.received_at())
            .collect::<Vec<_>>(),
    )
    .bind(column(|i| i.owner().to_string()))
    .bind(bodies)
    .bind(from)
    .bind(to)
    .execute(tx)
    .await?;
    Ok(written.rows_affected())
}
