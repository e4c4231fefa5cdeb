//! The `subscriptions` table: each endpoint, the event types it wants, its signing secrets and
//! its health (failures in a row, disabled or not). Deleting keeps the row (and so its
//! delivery history) with `deleted_at` set.

use std::collections::HashSet;

use serde::Serialize;
use shared::contract::EventType;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// Whether a subscription gets deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Its events are delivered.
    Enabled,
    /// It failed too often in a row; its events are recorded as skipped until it is enabled.
    Disabled,
}

/// A subscription as the API shows it (never its secrets).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Subscription {
    /// Its id.
    pub id: Uuid,
    /// The endpoint.
    pub url: String,
    /// The event types it wants.
    pub event_types: Vec<String>,
    /// Whether it gets deliveries.
    status: SubscriptionStatus,
    /// When it was disabled.
    #[serde(with = "time::serde::rfc3339::option")]
    disabled_at: Option<OffsetDateTime>,
    /// Why.
    disabled_reason: Option<String>,
    /// Failed deliveries in a row.
    consecutive_failures: i32,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Subscription {
    /// Whether it gets deliveries (it was not disabled for failing).
    pub fn is_enabled(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// The columns of [`Subscription`], for `concat!` into static queries.
macro_rules! columns {
    () => {
        "id, url, event_types, created_at, consecutive_failures, disabled_at, disabled_reason,
         CASE WHEN disabled_at IS NULL THEN 'enabled' ELSE 'disabled' END AS status"
    };
}

/// Creates a subscription unless the namespace already holds `max` of them (then `Err` with
/// how many it holds). Creations are serialised, so the cap holds under concurrent requests.
pub async fn create(
    pool: &PgPool,
    url: &str,
    event_types: &[String],
    secret: &str,
    max: i64,
) -> Result<Result<Subscription, i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('notifier.subscriptions'))")
        .execute(&mut *tx)
        .await?;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE deleted_at IS NULL")
            .fetch_one(&mut *tx)
            .await?;
    if count >= max {
        return Ok(Err(count));
    }
    let created: Subscription = sqlx::query_as(concat!(
        "INSERT INTO subscriptions (id, url, event_types, secret) VALUES ($1, $2, $3, $4)
         RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(url)
    .bind(event_types)
    .bind(secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(created))
}

/// Where a list of subscriptions goes on: after this one in their order (made, then id).
pub type ListKey = (OffsetDateTime, Uuid);

impl Subscription {
    /// Its place in lists.
    pub fn list_key(&self) -> ListKey {
        (self.created_at, self.id)
    }
}

/// Up to `limit` subscriptions not deleted, oldest first, after `after` when given.
pub async fn list(
    pool: &PgPool,
    after: Option<ListKey>,
    limit: i64,
) -> Result<Vec<Subscription>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM subscriptions WHERE deleted_at IS NULL
            AND ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid))
          ORDER BY created_at, id LIMIT $3"
    ))
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The subscription `id`, unless deleted.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM subscriptions WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The event types some subscription that is not deleted wants.
pub async fn wanted(tx: &mut PgConnection) -> Result<HashSet<EventType>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT unnest(event_types) FROM subscriptions WHERE deleted_at IS NULL",
    )
    .fetch_all(tx)
    .await?;
    Ok(names.iter().filter_map(|n| EventType::parse(n)).collect())
}

/// Marks the subscription `id` deleted (in the caller's transaction); false if there is none.
pub async fn delete(tx: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(
        "UPDATE subscriptions SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(tx)
    .await?
    .rows_affected();
    Ok(deleted == 1)
}

/// Replaces the signing secret; the old one keeps signing for `overlap_hours`. When it
/// expires, if there is such a subscription.
pub async fn rotate(
    pool: &PgPool,
    id: Uuid,
    secret: &str,
    overlap_hours: i32,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE subscriptions
         SET previous_secret = secret, secret = $2,
             previous_secret_expires_at = now() + make_interval(hours => $3)
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING previous_secret_expires_at",
    )
    .bind(id)
    .bind(secret)
    .bind(overlap_hours)
    .fetch_optional(pool)
    .await
}

/// Enables the subscription `id` and starts its failure count over.
pub async fn enable(pool: &PgPool, id: Uuid) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE subscriptions
         SET disabled_at = NULL, disabled_reason = NULL, consecutive_failures = 0
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A delivery to `id` succeeded: its failure count starts over.
pub async fn succeeded(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE subscriptions SET consecutive_failures = 0 WHERE id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Why a subscription was disabled: the text its `disabled_reason` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisableReason {
    /// Its endpoint answered `410 Gone`.
    Gone,
    /// This many deliveries in a row failed after every retry.
    FailedInARow(i32),
}

impl std::fmt::Display for DisableReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gone => f.write_str("the endpoint answered 410 Gone"),
            Self::FailedInARow(n) => write!(f, "{n} deliveries in a row failed after every retry"),
        }
    }
}

/// The deliveries to `id` that failed in a row, locking the subscription's row until the
/// caller's transaction ends, so that concurrent outcomes for it are decided one after another
/// (each failure counted, the threshold crossed once); 0 if there is no such subscription.
pub async fn failures_in_a_row(tx: &mut PgConnection, id: Uuid) -> Result<i32, sqlx::Error> {
    let failures: Option<i32> = sqlx::query_scalar(
        "SELECT consecutive_failures FROM subscriptions WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(tx)
    .await?;
    Ok(failures.unwrap_or(0))
}

/// A delivery to `id` failed after every retry: counted, and the subscription disabled for
/// `disable` when given (an earlier disabling and its reason stay).
pub async fn failed(
    tx: &mut PgConnection,
    id: Uuid,
    disable: Option<DisableReason>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE subscriptions
         SET consecutive_failures = consecutive_failures + 1,
             disabled_at = CASE WHEN $2::text IS NULL THEN disabled_at
                                ELSE coalesce(disabled_at, now()) END,
             disabled_reason = coalesce(disabled_reason, $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(disable.map(|reason| reason.to_string()))
    .execute(tx)
    .await?;
    Ok(())
}

/// Disables the subscription `id` for `reason`, at once (until an operator enables it); an
/// earlier disabling and its reason stay.
pub async fn disable(
    tx: &mut PgConnection,
    id: Uuid,
    reason: DisableReason,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE subscriptions
         SET disabled_at = coalesce(disabled_at, now()),
             disabled_reason = coalesce(disabled_reason, $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason.to_string())
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DisableReason;

    #[test]
    fn each_disable_reason_reads_as_its_disabled_reason() {
        assert_eq!(
            DisableReason::Gone.to_string(),
            "the endpoint answered 410 Gone"
        );
        assert_eq!(
            DisableReason::FailedInARow(5).to_string(),
            "5 deliveries in a row failed after every retry"
        );
    }
}
