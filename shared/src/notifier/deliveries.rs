//! What others read of the notifier's `deliveries` table (one delivery per event and
//! subscriber; `notifier::store::deliveries` makes, claims and settles them): where a delivery
//! stands, and how many stand where.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::contract::DownstreamId;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Due at its next attempt time.
    Pending,
    /// Answered 2xx; never sent again.
    Sent,
    /// Failed after the last retry: the notifier's dead letter.
    Failed,
    /// The endpoint was disabled when the event came.
    Skipped,
    /// The subscription was deleted before it was sent.
    Cancelled,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Sent,
        Self::Failed,
        Self::Skipped,
        Self::Cancelled,
    ];

    /// The status as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True for a delivery an operator may send again (it is final and was not sent).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Failed | Self::Skipped | Self::Cancelled)
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many deliveries are pending and how many failed: counted through their partial indexes,
/// never over the sent ones (the live view's numbers, read every refresh).
pub async fn open_counts(pool: &PgPool) -> Result<HashMap<DeliveryStatus, i64>, sqlx::Error> {
    let rows: Vec<(DeliveryStatus, i64)> = sqlx::query_as(
        "SELECT $1::text, (SELECT count(*) FROM deliveries WHERE status = $1)
         UNION ALL
         SELECT $2::text, (SELECT count(*) FROM deliveries WHERE status = $2)",
    )
    .bind(DeliveryStatus::Pending)
    .bind(DeliveryStatus::Failed)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// How many deliveries there are in each status that has any.
pub async fn counts(pool: &PgPool) -> Result<HashMap<DeliveryStatus, i64>, sqlx::Error> {
    let rows: Vec<(DeliveryStatus, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM deliveries GROUP BY status")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Each subscriber's delivery of the downstream events `ids` (an event taken in without
/// subscribers appears once, without a delivery), as a JSON array.
pub async fn of_events(pool: &PgPool, ids: &[DownstreamId]) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(json_agg(t ORDER BY t.event_id, t.delivery_id), '[]') FROM (
             SELECT n.event_id, n.event_type, n.received_at, d.id AS delivery_id,
                    d.subscription_id, s.url, d.status, d.attempts, d.sent_at, d.failed_at,
                    d.last_error
             FROM notifications n
             LEFT JOIN deliveries d ON d.event_id = n.event_id
             LEFT JOIN subscriptions s ON s.id = d.subscription_id
             WHERE n.event_id = ANY ($1)) t",
    )
    .bind(ids.iter().map(DownstreamId::as_str).collect::<Vec<_>>())
    .fetch_one(pool)
    .await
}
