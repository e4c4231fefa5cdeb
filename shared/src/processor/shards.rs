//! What others read of the processor's `shard_leases` table (which replica owns which shard;
//! `processor::shards::leases` claims, renews and fences them).

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

/// Who owns a shard, as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Ownership {
    /// The shard.
    pub shard: i32,
    /// The replica holding it (its broker connection's name and a suffix for this run), if any.
    pub owner: Option<String>,
    /// How many times the shard has been claimed.
    pub epoch: i64,
    /// When the lease ends unless renewed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Every shard's owner, in shard order.
pub async fn list(pool: &PgPool) -> Result<Vec<Ownership>, sqlx::Error> {
    sqlx::query_as("SELECT shard, owner, epoch, expires_at FROM shard_leases ORDER BY shard")
        .fetch_all(pool)
        .await
}
