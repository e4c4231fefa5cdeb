//! The delivery worker's side of the deliveries: claiming due ones under a lease, and
//! recording each attempt with what [`decide`] makes of it (sent; retry after a wait; failed,
//! counted against the subscription or, on `410 Gone`, disabling it), all in one transaction.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::DeliveryStatus;
use crate::{
    delivery::{
        attempt::Attempt,
        decide::{Schedule, Verdict, decide},
    },
    store::subscriptions::{self, DisableReason},
};

/// A claimed delivery with what sending it takes.
#[derive(sqlx::FromRow)]
pub struct Due {
    /// The delivery.
    pub id: i64,
    /// The downstream event's id: the `webhook-id`.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The subscription.
    pub subscription_id: Uuid,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The body, byte for byte as received.
    pub body: String,
    /// The endpoint.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The secret a rotation replaced, while it still signs.
    pub previous_secret: Option<String>,
    /// The intake's trace context.
    pub traceparent: Option<String>,
    /// The intake's trace state.
    pub tracestate: Option<String>,
}

/// Claims up to `limit` due deliveries for `lease`, with the lease's token, earliest due
/// first, never leaving more than `per_endpoint` of one subscription in flight (leased), so a
/// slow endpoint holds up only its own deliveries.
pub async fn claim(
    pool: &PgPool,
    limit: usize,
    per_endpoint: usize,
    lease: Duration,
) -> Result<Vec<(Uuid, Due)>, sqlx::Error> {
    let token = Uuid::now_v7();
    let due: Vec<Due> = sqlx::query_as(
        "WITH open AS (
             SELECT d.id, d.next_attempt_at FROM subscriptions s
             CROSS JOIN LATERAL (
                 SELECT id, next_attempt_at FROM deliveries
                 WHERE subscription_id = s.id AND status = $4 AND next_attempt_at <= now()
                   AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at
                 LIMIT greatest($5 - (SELECT count(*) FROM deliveries
                                      WHERE subscription_id = s.id AND status = $4
                                        AND lease_until >= now()), 0)
             ) d
             WHERE s.deleted_at IS NULL
         ), due AS (
             SELECT id FROM deliveries
             WHERE id IN (SELECT id FROM open)
               AND status = $4 AND (lease_until IS NULL OR lease_until < now())
             ORDER BY next_attempt_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE deliveries d
             SET lease_token = $1, lease_until = now() + make_interval(secs => $3)
             FROM due WHERE d.id = due.id
             RETURNING d.id, d.event_id, d.subscription_id, d.attempts
         )
         SELECT c.id, c.event_id, n.event_type, c.subscription_id, c.attempts, n.body,
                s.url, s.secret,
                CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END
                    AS previous_secret,
                n.traceparent, n.tracestate
         FROM claimed c
         JOIN notifications n ON n.event_id = c.event_id
         JOIN subscriptions s ON s.id = c.subscription_id",
    )
    .bind(token)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(lease.as_secs_f64())
    .bind(DeliveryStatus::Pending)
    .bind(i64::try_from(per_endpoint).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(due.into_iter().map(|d| (token, d)).collect())
}

/// Records `attempt` on the delivery claimed with `token`, decides what follows (the jitter
/// drawn as `spread`) and applies it, in one transaction. The subscription's row stays locked
/// from reading its failures in a row to the commit, so concurrent outcomes for it count once
/// each. A delivery whose lease was lost meanwhile keeps its state (the attempt is still
/// logged, and a `2xx` or `410 Gone` still tells on the subscription).
pub async fn finish(
    pool: &PgPool,
    schedule: &Schedule<'_>,
    token: Uuid,
    due: &Due,
    attempt: &Attempt,
    spread: f64,
) -> Result<Verdict, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let failures = subscriptions::failures_in_a_row(&mut tx, due.subscription_id).await?;
    let verdict = decide(attempt, due.attempts, failures, schedule, spread);
    let error = attempt.error().map(ToString::to_string);
    sqlx::query(
        "INSERT INTO delivery_attempts
             (delivery_id, attempted_at, status_code, latency_seconds, error)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(due.id)
    .bind(attempt.at)
    .bind(attempt.status().map(|s| i32::from(s.as_u16())))
    .bind(attempt.latency.as_secs_f64())
    .bind(error.as_deref())
    .execute(&mut *tx)
    .await?;
    apply(&mut tx, token, due, error.as_deref(), verdict).await?;
    tx.commit().await?;
    Ok(verdict)
}

/// Writes `verdict` for the delivery claimed with `token`, whose attempt failed with `error`
/// (`None` for a 2xx).
async fn apply(
    tx: &mut PgConnection,
    token: Uuid,
    due: &Due,
    error: Option<&str>,
    verdict: Verdict,
) -> Result<(), sqlx::Error> {
    let attempts = due.attempts + 1;
    match verdict {
        Verdict::Sent => {
            sent(tx, token, due.id).await?;
            subscriptions::succeeded(tx, due.subscription_id).await?;
        }
        Verdict::Gone => {
            failed(tx, token, due.id, attempts, error).await?;
            subscriptions::disable(tx, due.subscription_id, DisableReason::Gone).await?;
            super::skip_pending(tx, due.subscription_id).await?;
        }
        Verdict::Retry(wait) => retry_later(tx, token, due.id, attempts, error, wait).await?,
        Verdict::Failed { disable } => {
            if failed(tx, token, due.id, attempts, error).await? {
                subscriptions::failed(tx, due.subscription_id, disable).await?;
            }
        }
    }
    Ok(())
}

async fn sent(tx: &mut PgConnection, token: Uuid, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET status = $3, attempts = attempts + 1, sent_at = now(),
                last_error = NULL, lease_token = NULL, lease_until = NULL
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(id)
    .bind(token)
    .bind(DeliveryStatus::Sent)
    .execute(tx)
    .await?;
    Ok(())
}

async fn retry_later(
    tx: &mut PgConnection,
    token: Uuid,
    id: i64,
    attempts: i32,
    error: Option<&str>,
    delay: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET attempts = $3, last_error = $4,
                next_attempt_at = now() + make_interval(secs => $5),
                lease_token = NULL, lease_until = NULL
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(id)
    .bind(token)
    .bind(attempts)
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(tx)
    .await?;
    Ok(())
}

/// Marks the delivery failed; false if the lease was lost meanwhile (nothing changed).
async fn failed(
    tx: &mut PgConnection,
    token: Uuid,
    id: i64,
    attempts: i32,
    error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE deliveries SET status = $5, attempts = $3, last_error = $4,
                failed_at = now(), lease_token = NULL, lease_until = NULL
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(id)
    .bind(token)
    .bind(attempts)
    .bind(error)
    .bind(DeliveryStatus::Failed)
    .execute(tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}
