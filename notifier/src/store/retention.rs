//! What the notifier keeps only for a while: the downstream events it took in, with their
//! deliveries and every attempt, once none of their deliveries is pending. The notification row
//! is also how a redelivered event is recognised, so the window is the notifier's dedupe window
//! (receivers deduplicate by `webhook-id` in any case); failed deliveries, the notifier's dead
//! letters, go with their event.

use std::time::Duration;

use shared::retention::BATCH;
use sqlx::PgPool;

use super::deliveries::DeliveryStatus;

/// Deletes one batch of expired notifications with their deliveries and attempts; how many rows
/// went from each table.
pub async fn prune(
    pool: PgPool,
    window: Duration,
) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    // One statement: the foreign keys are checked at its end, when all three are gone.
    let (notifications, deliveries, attempts): (i64, i64, i64) = sqlx::query_as(
        "WITH old AS (
             SELECT event_id FROM notifications n
             WHERE received_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.event_id = n.event_id AND d.status = $3)
             ORDER BY received_at LIMIT $2
         ), gone_attempts AS (
             DELETE FROM delivery_attempts a USING deliveries d
             WHERE a.delivery_id = d.id AND d.event_id IN (SELECT event_id FROM old)
             RETURNING 1
         ), gone_deliveries AS (
             DELETE FROM deliveries WHERE event_id IN (SELECT event_id FROM old) RETURNING 1
         ), gone_notifications AS (
             DELETE FROM notifications WHERE event_id IN (SELECT event_id FROM old) RETURNING 1
         )
         SELECT (SELECT count(*) FROM gone_notifications), (SELECT count(*) FROM gone_deliveries),
                (SELECT count(*) FROM gone_attempts)",
    )
    .bind(window.as_secs_f64())
    .bind(BATCH)
    .bind(DeliveryStatus::Pending)
    .fetch_one(&pool)
    .await?;
    let rows = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(vec![
        ("notifications", rows(notifications)),
        ("deliveries", rows(deliveries)),
        ("delivery_attempts", rows(attempts)),
    ])
}
