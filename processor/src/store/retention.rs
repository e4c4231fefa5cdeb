//! What the processor keeps only for a while: the inbox rows of product updates (an update seen
//! again after its window changes nothing anyway: each field keeps its newest version, and an
//! update's own version is not newer than itself) and dead letters nobody replayed or purged.
//! Orders' and creations' inbox rows are kept: repeating one would be decided again.

use std::time::Duration;

use shared::{contract::IngestKind, retention::BATCH};
use sqlx::PgPool;

/// How long each kind of row is kept.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    /// Inbox rows of product updates: the dedupe window.
    pub processed_events: Duration,
    /// Dead letters not being replayed.
    pub dead_letters: Duration,
}

/// Deletes one batch of each table's expired rows; how many went from each.
pub async fn prune(
    pool: PgPool,
    windows: Windows,
) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    let events = sqlx::query(
        "DELETE FROM processed_events WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM processed_events
             WHERE kind = $1 AND processed_at < now() - make_interval(secs => $2)
             LIMIT $3))",
    )
    .bind(IngestKind::ProductUpdate)
    .bind(windows.processed_events.as_secs_f64())
    .bind(BATCH)
    .execute(&pool)
    .await?
    .rows_affected();
    let dead = sqlx::query(
        "DELETE FROM dead_letters WHERE id IN (
             SELECT id FROM dead_letters
             WHERE dead_lettered_at < now() - make_interval(secs => $1)
               AND (replay_job IS NULL OR replay_claimed_until < now())
             ORDER BY dead_lettered_at LIMIT $2)",
    )
    .bind(windows.dead_letters.as_secs_f64())
    .bind(BATCH)
    .execute(&pool)
    .await?
    .rows_affected();
    Ok(vec![("processed_events", events), ("dead_letters", dead)])
}
