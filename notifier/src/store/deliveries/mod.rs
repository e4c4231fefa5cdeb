//! The `deliveries` and `delivery_attempts` tables: one delivery per (event, subscription),
//! unique, so a redelivered event can never cause a second one; each attempt a row. [`lease`]
//! is the delivery worker's side: claiming due deliveries and recording what came of them.

pub mod lease;

use std::collections::HashMap;

use serde::Serialize;
use shared::contract::{DownstreamId, EventType};
pub use shared::notifier::deliveries::DeliveryStatus;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// One delivery of one event to one subscriber, as the API shows it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The event (the `webhook-id`).
    event_id: String,
    /// Its type.
    event_type: EventType,
    /// The subscription.
    subscription_id: Uuid,
    /// The endpoint.
    url: String,
    /// Where it stands.
    status: DeliveryStatus,
    /// Attempts made.
    attempts: i32,
    /// When it is tried next, while pending.
    #[serde(with = "time::serde::rfc3339::option")]
    next_attempt_at: Option<OffsetDateTime>,
    /// When it succeeded.
    #[serde(with = "time::serde::rfc3339::option")]
    sent_at: Option<OffsetDateTime>,
    /// When it was given up.
    #[serde(with = "time::serde::rfc3339::option")]
    failed_at: Option<OffsetDateTime>,
    /// The last attempt's error.
    last_error: Option<String>,
}

/// The columns of [`Delivery`], for `concat!` into static queries.
macro_rules! delivery_columns {
    () => {
        "d.id, d.event_id, n.event_type, d.subscription_id, s.url, d.status, d.attempts,
         CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
         d.sent_at, d.failed_at, d.last_error
         FROM deliveries d
         JOIN notifications n ON n.event_id = d.event_id
         JOIN subscriptions s ON s.id = d.subscription_id"
    };
}

/// One pending delivery of the event `id` per subscription that is not deleted and wants
/// `kind` (skipped, and visible as such, when the subscription is disabled); how many.
pub async fn create_for(
    tx: &mut PgConnection,
    id: &DownstreamId,
    kind: EventType,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO deliveries (event_id, subscription_id, status, last_error)
         SELECT $1, id,
                CASE WHEN disabled_at IS NULL THEN $3 ELSE $4 END,
                CASE WHEN disabled_at IS NULL THEN NULL ELSE 'endpoint disabled' END
         FROM subscriptions
         WHERE deleted_at IS NULL AND $2 = ANY (event_types)",
    )
    .bind(id.as_str())
    .bind(kind)
    .bind(DeliveryStatus::Pending)
    .bind(DeliveryStatus::Skipped)
    .execute(tx)
    .await
    .map(|done| done.rows_affected())
}

/// One pending delivery of the event `id` to the subscription `subscription` only (a test
/// event).
pub async fn create_one(
    tx: &mut PgConnection,
    id: &DownstreamId,
    subscription: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO deliveries (event_id, subscription_id, status) VALUES ($1, $2, $3)")
        .bind(id.as_str())
        .bind(subscription)
        .bind(DeliveryStatus::Pending)
        .execute(tx)
        .await
        .map(|_| ())
}

/// The deliveries to subscription `id` that failed at or after `since` become pending again,
/// due now, each with its retries anew; how many.
pub async fn recover(pool: &PgPool, id: Uuid, since: OffsetDateTime) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET status = $3, attempts = 0, next_attempt_at = now(),
                failed_at = NULL
         WHERE subscription_id = $1 AND status = $4 AND failed_at >= $2",
    )
    .bind(id)
    .bind(since)
    .bind(DeliveryStatus::Pending)
    .bind(DeliveryStatus::Failed)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}

/// The pending deliveries of subscription `id` not in flight become skipped (it was disabled),
/// to be retried on request like any skipped one.
pub async fn skip_pending(tx: &mut PgConnection, id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET status = $2, last_error = 'endpoint disabled'
         WHERE subscription_id = $1 AND status = $3
           AND (lease_until IS NULL OR lease_until < now())",
    )
    .bind(id)
    .bind(DeliveryStatus::Skipped)
    .bind(DeliveryStatus::Pending)
    .execute(tx)
    .await
    .map(|done| done.rows_affected())
}

/// The deliveries of the event `id`, in the order they were made.
pub async fn of_event(pool: &PgPool, id: &str) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " WHERE d.event_id = $1 ORDER BY d.id"
    ))
    .bind(id)
    .fetch_all(pool)
    .await
}

/// The `limit` newest deliveries older than `before` (an id) when given, of one status and
/// subscription when given.
pub async fn list(
    pool: &PgPool,
    status: Option<DeliveryStatus>,
    subscription: Option<Uuid>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " WHERE ($1::text IS NULL OR d.status = $1)
            AND ($2::uuid IS NULL OR d.subscription_id = $2)
            AND ($3::bigint IS NULL OR d.id < $3)
          ORDER BY d.id DESC LIMIT $4"
    ))
    .bind(status)
    .bind(subscription)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One attempt to deliver.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Attempt {
    #[serde(skip)]
    delivery_id: i64,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    attempted_at: OffsetDateTime,
    /// The endpoint's answer, if it answered.
    status_code: Option<i32>,
    /// How long it took.
    latency_seconds: f64,
    /// What went wrong, if anything did.
    error: Option<String>,
}

/// Every attempt of the deliveries `ids`, by delivery, in order.
pub async fn attempts(
    pool: &PgPool,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<Attempt>>, sqlx::Error> {
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT delivery_id, attempted_at, status_code, latency_seconds, error
         FROM delivery_attempts WHERE delivery_id = ANY ($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut log: HashMap<i64, Vec<Attempt>> = HashMap::new();
    for a in attempts {
        log.entry(a.delivery_id).or_default().push(a);
    }
    Ok(log)
}

/// What asking to send a delivery again came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    /// Pending again, with a fresh retry schedule.
    Pending,
    /// No such delivery.
    NotFound,
    /// It is in this status, which is not sent again.
    Refused(DeliveryStatus),
}

/// Makes a failed, skipped or cancelled delivery pending again, due now.
pub async fn retry(pool: &PgPool, id: i64) -> Result<Retry, sqlx::Error> {
    let status: Option<DeliveryStatus> =
        sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    match status {
        None => return Ok(Retry::NotFound),
        Some(status) if !status.is_retryable() => return Ok(Retry::Refused(status)),
        Some(_) => {}
    }
    sqlx::query(
        "UPDATE deliveries SET status = $2, attempts = 0, next_attempt_at = now(),
                failed_at = NULL
         WHERE id = $1 AND status = ANY ($3::text[])",
    )
    .bind(id)
    .bind(DeliveryStatus::Pending)
    .bind(
        DeliveryStatus::ALL
            .into_iter()
            .filter(|s| s.is_retryable())
            .map(DeliveryStatus::as_str)
            .collect::<Vec<_>>(),
    )
    .execute(pool)
    .await?;
    Ok(Retry::Pending)
}

/// Cancels what is pending for the subscription `id` (in the caller's transaction); how many.
pub async fn cancel_pending(tx: &mut PgConnection, id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET status = $2, last_error = 'subscription deleted'
         WHERE subscription_id = $1 AND status = $3",
    )
    .bind(id)
    .bind(DeliveryStatus::Cancelled)
    .bind(DeliveryStatus::Pending)
    .execute(tx)
    .await
    .map(|done| done.rows_affected())
}
