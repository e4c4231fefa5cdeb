//! `processor_members` and `shard_leases`: which processor replicas are alive and which one
//! owns each shard, until when, in which epoch. Written by the [`super::Coordinator`] of each
//! replica, checked by every apply transaction ([`fence`]), read by the dashboard
//! ([`shared::processor::shards::list`]).
//! Times are PostgreSQL's `now()`, so the replicas' clocks do not matter.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, postgres::types::PgInterval};

/// A shard this replica holds, and the epoch it was claimed in: what a batch is fenced by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lease {
    /// The shard.
    pub shard: u16,
    /// Grows with every claim of the shard, by any replica.
    pub epoch: i64,
}

/// What one beat learned: who is alive and what this replica still holds.
#[derive(Debug)]
pub struct Beat {
    /// The replicas seen within the lease time (this one included), in id order.
    pub members: Vec<String>,
    /// The leases this replica holds, renewed.
    pub held: Vec<Lease>,
}

/// How long a statement waits for a row another transaction holds (an apply in flight holds
/// its shard's row until it commits) before the beat gives up and tries again at the next.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

fn leases(rows: Vec<(i32, i64)>) -> Vec<Lease> {
    rows.into_iter()
        .filter_map(|(shard, epoch)| {
            Some(Lease {
                shard: u16::try_from(shard).ok()?,
                epoch,
            })
        })
        .collect()
}

/// Makes sure every shard below `shards` has a row.
pub async fn prepare(pool: &PgPool, shards: u16) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO shard_leases (shard) SELECT generate_series(0, $1 - 1)
         ON CONFLICT (shard) DO NOTHING",
    )
    .bind(i32::from(shards))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records `member` as alive, renews for `ttl` every lease it holds, forgets replicas gone for
/// long, and says who is alive.
pub async fn beat(pool: &PgPool, member: &str, ttl: Duration) -> Result<Beat, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO processor_members (member) VALUES ($1)
         ON CONFLICT (member) DO UPDATE SET seen_at = now()",
    )
    .bind(member)
    .execute(&mut *tx)
    .await?;
    let held: Vec<(i32, i64)> = sqlx::query_as(
        "UPDATE shard_leases SET expires_at = now() + $2 WHERE owner = $1
         RETURNING shard, epoch",
    )
    .bind(member)
    .bind(interval(ttl))
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM processor_members WHERE seen_at < now() - 100 * $1::interval")
        .bind(interval(ttl))
        .execute(&mut *tx)
        .await?;
    let members: Vec<String> = sqlx::query_scalar(
        "SELECT member FROM processor_members WHERE seen_at > now() - $1 ORDER BY member",
    )
    .bind(interval(ttl))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Beat {
        members,
        held: leases(held),
    })
}

/// Claims for `member`, for `ttl`, up to `wanted` shards below `shards` that nobody holds (free
/// or expired), skipping any a transaction is using; each claim starts a new epoch.
pub async fn claim(
    pool: &PgPool,
    member: &str,
    wanted: usize,
    shards: u16,
    ttl: Duration,
) -> Result<Vec<Lease>, sqlx::Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "UPDATE shard_leases SET owner = $1, epoch = epoch + 1, expires_at = now() + $2
         WHERE shard IN (
             SELECT shard FROM shard_leases
             WHERE shard < $4 AND (owner IS NULL OR expires_at < now())
             ORDER BY shard LIMIT $3 FOR UPDATE SKIP LOCKED)
         RETURNING shard, epoch",
    )
    .bind(member)
    .bind(interval(ttl))
    .bind(i64::try_from(wanted).unwrap_or(i64::MAX))
    .bind(i32::from(shards))
    .fetch_all(pool)
    .await?;
    Ok(leases(rows))
}

/// Gives up `lease` (if `member` still holds it), so another replica may claim it at once.
pub async fn release(pool: &PgPool, member: &str, lease: Lease) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
    sqlx::query(
        "UPDATE shard_leases SET owner = NULL, expires_at = NULL
         WHERE shard = $1 AND epoch = $2 AND owner = $3",
    )
    .bind(i32::from(lease.shard))
    .bind(lease.epoch)
    .bind(member)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Forgets `member` (it is stopping), so the others count without it at once.
pub async fn leave(pool: &PgPool, member: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM processor_members WHERE member = $1")
        .bind(member)
        .execute(pool)
        .await?;
    Ok(())
}

/// Inside an apply transaction: true while `member` holds `lease` (same shard, same epoch),
/// and then the lease's row stays share-locked until the transaction ends, so no claim or
/// release of the shard can commit between this check and the batch's commit.
pub async fn fence(tx: &mut PgConnection, member: &str, lease: Lease) -> Result<bool, sqlx::Error> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT shard FROM shard_leases WHERE shard = $1 AND epoch = $2 AND owner = $3 FOR SHARE",
    )
    .bind(i32::from(lease.shard))
    .bind(lease.epoch)
    .bind(member)
    .fetch_optional(tx)
    .await?;
    Ok(held.is_some())
}
