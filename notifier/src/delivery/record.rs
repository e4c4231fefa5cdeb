//! The deliveries' rows: claiming due ones under a lease, and recording each attempt with its
//! consequence (sent; retry at the next delay; failed, counted against the subscription).

use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Policy;

/// A claimed delivery with what sending it takes.
#[derive(sqlx::FromRow)]
pub(super) struct Due {
    pub(super) id: i64,
    pub(super) event_id: String,
    pub(super) event_type: String,
    pub(super) subscription_id: Uuid,
    pub(super) attempts: i32,
    pub(super) body: String,
    pub(super) url: String,
    pub(super) secret: String,
    pub(super) previous_secret: Option<String>,
    pub(super) traceparent: Option<String>,
}

/// What one attempt came to.
pub(super) struct Attempt {
    pub(super) at: OffsetDateTime,
    pub(super) status: Option<u16>,
    pub(super) latency: Duration,
    pub(super) error: Option<String>,
}

impl Attempt {
    pub(super) fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// Records the attempt and its consequence in one transaction; the outcome label.
pub(super) async fn finish(
    pool: &PgPool,
    policy: &Policy,
    token: Uuid,
    due: &Due,
    attempt: &Attempt,
) -> Result<&'static str, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO delivery_attempts
             (delivery_id, attempted_at, status_code, latency_seconds, error)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(due.id)
    .bind(attempt.at)
    .bind(attempt.status.map(i32::from))
    .bind(attempt.latency.as_secs_f64())
    .bind(attempt.error.as_deref())
    .execute(&mut *tx)
    .await?;
    let outcome = if attempt.succeeded() {
        sqlx::query(
            "UPDATE deliveries SET status = 'sent', attempts = attempts + 1, sent_at = now(),
                    last_error = NULL, lease_token = NULL, lease_until = NULL
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(due.id)
        .bind(token)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE subscriptions SET consecutive_failures = 0 WHERE id = $1")
            .bind(due.subscription_id)
            .execute(&mut *tx)
            .await?;
        "sent"
    } else {
        let attempts = due.attempts + 1;
        let next = usize::try_from(attempts - 1)
            .ok()
            .and_then(|i| policy.retry_schedule.get(i));
        match next {
            Some(delay) => {
                sqlx::query(
                    "UPDATE deliveries SET attempts = $3, last_error = $4,
                            next_attempt_at = now() + make_interval(secs => $5),
                            lease_token = NULL, lease_until = NULL
                     WHERE id = $1 AND lease_token = $2",
                )
                .bind(due.id)
                .bind(token)
                .bind(attempts)
                .bind(attempt.error.as_deref())
                .bind(delay.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                "retry"
            }
            None => {
                let updated = sqlx::query(
                    "UPDATE deliveries SET status = 'failed', attempts = $3, last_error = $4,
                            failed_at = now(), lease_token = NULL, lease_until = NULL
                     WHERE id = $1 AND lease_token = $2",
                )
                .bind(due.id)
                .bind(token)
                .bind(attempts)
                .bind(attempt.error.as_deref())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 1 {
                    sqlx::query(
                        "UPDATE subscriptions
                         SET consecutive_failures = consecutive_failures + 1,
                             disabled_at = CASE WHEN consecutive_failures + 1 >= $2
                                                THEN coalesce(disabled_at, now())
                                                ELSE disabled_at END,
                             disabled_reason = CASE WHEN consecutive_failures + 1 >= $2
                                 THEN coalesce(disabled_reason, $3)
                                 ELSE disabled_reason END
                         WHERE id = $1",
                    )
                    .bind(due.subscription_id)
                    .bind(policy.disable_after)
                    .bind(format!(
                        "{} deliveries in a row failed after every retry",
                        policy.disable_after
                    ))
                    .execute(&mut *tx)
                    .await?;
                }
                "failed"
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Claims up to `limit` due deliveries for `lease`.
pub(super) async fn claim(
    pool: &PgPool,
    limit: usize,
    lease: Duration,
) -> Result<Vec<(Uuid, Due)>, sqlx::Error> {
    let token = Uuid::now_v7();
    let due: Vec<Due> = sqlx::query_as(
        "WITH due AS (
             SELECT id FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= now()
               AND (lease_until IS NULL OR lease_until < now())
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
                n.traceparent
         FROM claimed c
         JOIN notifications n ON n.event_id = c.event_id
         JOIN subscriptions s ON s.id = c.subscription_id",
    )
    .bind(token)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(due.into_iter().map(|d| (token, d)).collect())
}
