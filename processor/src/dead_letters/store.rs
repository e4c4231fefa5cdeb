//! The `dead_letters` table: every dead letter taken off the dead-letter queue, until it is
//! replayed or purged.

use sqlx::PgPool;
use time::OffsetDateTime;

/// One dead letter with everything an operator needs to act on it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeadLetter {
    /// Unique id of this dead letter.
    pub id: String,
    /// The event's id, when known (AMQP `message_id`, else the body's `event_id`).
    pub event_id: Option<String>,
    /// The product, when the body could be read.
    pub product_id: Option<String>,
    /// `unparseable`, `invalid`, `attempts_exhausted` or `delivery_limit`.
    pub reason: String,
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
    pub first_failed_at: OffsetDateTime,
    /// When it reached the dead-letter table.
    pub dead_lettered_at: OffsetDateTime,
    /// The body, untouched.
    pub payload: Vec<u8>,
    /// The trace it was part of (from its `traceparent` header), when traced.
    pub trace_id: Option<String>,
}

/// Which dead letters an operation applies to. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Only this reason.
    pub reason: Option<String>,
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
             routing_key, message_type, first_failed_at, dead_lettered_at, payload, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&dead.id)
    .bind(&dead.event_id)
    .bind(&dead.product_id)
    .bind(&dead.reason)
    .bind(&dead.error)
    .bind(dead.attempts)
    .bind(&dead.service)
    .bind(&dead.routing_key)
    .bind(&dead.message_type)
    .bind(dead.first_failed_at)
    .bind(dead.dead_lettered_at)
    .bind(&dead.payload)
    .bind(&dead.trace_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The selected dead letters, oldest first, at most `limit`.
pub async fn list(
    pool: &PgPool,
    selection: &Selection,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT * FROM dead_letters WHERE {MATCHES} ORDER BY first_failed_at, id LIMIT $6"
    ));
    sqlx::query_as(sql)
        .bind(&selection.ids)
        .bind(&selection.reason)
        .bind(&selection.product_id)
        .bind(selection.since)
        .bind(selection.until)
        .bind(limit)
        .fetch_all(pool)
        .await
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

/// Removes the selected dead letters; returns how many.
pub async fn purge(pool: &PgPool, selection: &Selection) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("DELETE FROM dead_letters WHERE {MATCHES}"));
    let done = sqlx::query(sql)
        .bind(&selection.ids)
        .bind(&selection.reason)
        .bind(&selection.product_id)
        .bind(selection.since)
        .bind(selection.until)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Which of `event_ids` the inbox already holds (their replay would change nothing).
pub async fn already_applied(
    pool: &PgPool,
    event_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT event_id FROM processed_events WHERE event_id = ANY($1)")
        .bind(event_ids)
        .fetch_all(pool)
        .await
}
