//! The `dead_letters` table: every dead letter taken off the dead-letter queue, until it is
//! replayed or purged.

use serde::Serialize;
use shared::dead_letter::Reason;
use sqlx::{Arguments, PgPool, error::BoxDynError, postgres::PgArguments};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// One dead letter with everything an operator needs to act on it, as stored and (but for its
/// body and its replay's hold) as listed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeadLetter {
    /// Unique id of this dead letter.
    pub id: String,
    /// The event's id, when known (AMQP `message_id`, else the body's `event_id`).
    pub event_id: Option<String>,
    /// The API key whose space the event id is in (the body's `owner`), when known.
    pub owner: Option<String>,
    /// The product, when the body could be read.
    pub product_id: Option<String>,
    /// Why it was set aside.
    pub reason: Reason,
    /// The last error.
    pub error: String,
    /// Delivery attempts made.
    pub attempts: i32,
    /// The service that set it aside (`processor`, or `rabbitmq` for the delivery limit).
    pub service: String,
    /// The routing key it had on the ingest exchange (its shard).
    pub routing_key: String,
    /// The AMQP `type`.
    pub message_type: Option<String>,
    /// When it first failed.
    #[serde(with = "time::serde::rfc3339")]
    pub first_failed_at: OffsetDateTime,
    /// When it reached the dead-letter table.
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: OffsetDateTime,
    /// The body, untouched.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// The trace it was part of (from its `traceparent` header), when traced.
    pub trace_id: Option<String>,
    /// The replay holding it, while one does.
    #[serde(skip)]
    pub replay_job: Option<Uuid>,
    /// Until when that replay holds it.
    #[serde(skip)]
    pub replay_claimed_until: Option<OffsetDateTime>,
    /// The queue it was consumed from, where a replay sends it back (unknown for the oldest).
    pub source_queue: Option<String>,
}

/// Which dead letters an operation applies to. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Only this reason.
    pub reason: Option<Reason>,
    /// Only this product.
    pub product_id: Option<String>,
    /// Only those that first failed at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only those that first failed before this time.
    pub until: Option<OffsetDateTime>,
}

const MATCHES: &str = "($1::text[] IS NULL OR id = ANY($1))
    AND ($2::text IS NULL OR reason = $2)
    AND ($3::text IS NULL OR product_id = $3)
    AND ($4::timestamptz IS NULL OR first_failed_at >= $4)
    AND ($5::timestamptz IS NULL OR first_failed_at < $5)";

/// Stores a dead letter; storing the same id twice keeps the first (redelivery is harmless).
pub async fn insert(pool: &PgPool, dead: &DeadLetter) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (id, event_id, product_id, reason, error, attempts, service,
             routing_key, message_type, first_failed_at, dead_lettered_at, payload, trace_id,
             source_queue, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&dead.id)
    .bind(&dead.event_id)
    .bind(&dead.product_id)
    .bind(dead.reason)
    .bind(&dead.error)
    .bind(dead.attempts)
    .bind(&dead.service)
    .bind(&dead.routing_key)
    .bind(&dead.message_type)
    .bind(dead.first_failed_at)
    .bind(dead.dead_lettered_at)
    .bind(&dead.payload)
    .bind(&dead.trace_id)
    .bind(&dead.source_queue)
    .bind(&dead.owner)
    .execute(pool)
    .await?;
    Ok(())
}

impl Selection {
    /// The selection as the arguments `$1` to `$5` of [`MATCHES`], then what `more` adds.
    fn arguments(
        &self,
        more: impl FnOnce(&mut PgArguments) -> Result<(), BoxDynError>,
    ) -> Result<PgArguments, sqlx::Error> {
        let mut arguments = PgArguments::default();
        let add = || -> Result<(), BoxDynError> {
            arguments.add(&self.ids)?;
            arguments.add(self.reason)?;
            arguments.add(&self.product_id)?;
            arguments.add(self.since)?;
            arguments.add(self.until)?;
            more(&mut arguments)
        };
        add().map_err(sqlx::Error::Encode)?;
        Ok(arguments)
    }
}

/// Dead letters not held by a running replay.
const UNCLAIMED: &str = "(replay_job IS NULL OR replay_claimed_until < now())";

/// How many selected dead letters a replay would take now, and how many of those hold an
/// event the inbox already has; counted in PostgreSQL.
pub async fn count(pool: &PgPool, selection: &Selection) -> Result<(i64, i64), sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM processed_events p
                    WHERE p.event_id = d.event_id
                      AND p.kind = coalesce(d.message_type, 'product.update')
                      AND p.owner IN (coalesce(d.owner, ''), '')))
         FROM dead_letters d WHERE {MATCHES} AND {UNCLAIMED}"
    ));
    let arguments = selection.arguments(|_| Ok(()))?;
    sqlx::query_as_with(sql, arguments).fetch_one(pool).await
}

/// Claims up to `limit` selected dead letters for the replay `job` for `hold`; their ids.
/// Those another replay holds are left alone.
pub async fn claim(
    pool: &PgPool,
    selection: &Selection,
    job: Uuid,
    limit: i64,
    hold: std::time::Duration,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "WITH picked AS (
             SELECT id FROM dead_letters WHERE {MATCHES} AND {UNCLAIMED}
             ORDER BY first_failed_at, id LIMIT $6 FOR UPDATE SKIP LOCKED)
         UPDATE dead_letters d
         SET replay_job = $7, replay_claimed_until = now() + make_interval(secs => $8)
         FROM picked WHERE d.id = picked.id RETURNING d.id"
    ));
    let arguments = selection.arguments(|more| {
        more.add(limit)?;
        more.add(job)?;
        more.add(hold.as_secs_f64())
    })?;
    sqlx::query_scalar_with(sql, arguments)
        .fetch_all(pool)
        .await
}

/// Up to `limit` of the dead letters `job` holds, oldest first.
pub async fn held_by(pool: &PgPool, job: Uuid, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM dead_letters WHERE replay_job = $1
         ORDER BY first_failed_at, id LIMIT $2",
    )
    .bind(job)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Gives up `job`'s hold on dead letter `id` (or on all it holds when `id` is `None`).
pub async fn release(pool: &PgPool, job: Uuid, id: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letters SET replay_job = NULL, replay_claimed_until = NULL
         WHERE replay_job = $1 AND ($2::text IS NULL OR id = $2)",
    )
    .bind(job)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Where a list of dead letters goes on: after this one in their order (first failed, then id).
pub type ListKey = (OffsetDateTime, String);

/// The dead letter's place in lists.
pub fn list_key(dead: &DeadLetter) -> ListKey {
    (dead.first_failed_at, dead.id.clone())
}

/// The selected dead letters, oldest first, after `after` when given, at most `limit`.
pub async fn list(
    pool: &PgPool,
    selection: &Selection,
    after: Option<&ListKey>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT * FROM dead_letters WHERE {MATCHES}
           AND ($6::timestamptz IS NULL OR (first_failed_at, id) > ($6, $7::text))
         ORDER BY first_failed_at, id LIMIT $8"
    ));
    let arguments = selection.arguments(|more| {
        more.add(after.map(|(at, _)| *at))?;
        more.add(after.map(|(_, id)| id))?;
        more.add(limit)
    })?;
    sqlx::query_as_with(sql, arguments).fetch_all(pool).await
}

/// One dead letter by id.
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM dead_letters WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Removes one dead letter (after replay).
pub async fn remove(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM dead_letters WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes the selected dead letters (not those a running replay holds); returns how many.
pub async fn purge(pool: &PgPool, selection: &Selection) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "DELETE FROM dead_letters WHERE {MATCHES} AND {UNCLAIMED}"
    ));
    let arguments = selection.arguments(|_| Ok(()))?;
    let done = sqlx::query_with(sql, arguments).execute(pool).await?;
    Ok(done.rows_affected())
}

/// Which of the dead letters `ids` hold an event the inbox already has (their replay would
/// change nothing): an event is its message type and event id.
pub async fn already_applied(pool: &PgPool, ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT d.id FROM dead_letters d
         WHERE d.id = ANY($1) AND EXISTS (
             SELECT 1 FROM processed_events p
             WHERE p.event_id = d.event_id
               AND p.kind = coalesce(d.message_type, 'product.update')
               AND p.owner IN (coalesce(d.owner, ''), ''))",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}
