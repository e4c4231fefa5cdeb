//! The delivery worker's side of the deliveries: claiming due ones under a lease, and
//! recording each attempt with its consequence (sent; retry at the next delay; failed, counted
//! against the subscription), all in one transaction.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::DeliveryStatus;
use crate::store::subscriptions;

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

/// What one attempt came to.
pub struct Attempt {
    /// When it was made.
    pub at: OffsetDateTime,
    /// The endpoint's status code, if it answered.
    pub status: Option<u16>,
    /// How long it took.
    pub latency: Duration,
    /// Why it failed; `None` for a 2xx.
    pub error: Option<String>,
    /// How long the endpoint asked us to wait (`Retry-After` on a 429, 502, 503 or 504).
    pub retry_after: Option<Duration>,
}

/// The longest `Retry-After` honoured: an endpoint cannot park a delivery for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The wait before the next attempt: the schedule's `delay` spread by ±20% (`spread` in 0..1:
/// 0 is -20%, 1 is +20%), so deliveries that failed together do not all come back at once; and
/// never sooner than the endpoint's `Retry-After` (at most [`MAX_RETRY_AFTER`]).
pub fn next_delay(delay: Duration, retry_after: Option<Duration>, spread: f64) -> Duration {
    let jittered = delay.mul_f64(0.8 + 0.4 * spread.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
}

/// What follows from an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; final.
    Sent,
    /// Failed; due again after the next delay of the schedule.
    Retry,
    /// Failed after the last retry: the notifier's dead letter.
    Failed,
}

impl Outcome {
    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retry => "retry",
            Self::Failed => "failed",
        }
    }
}

/// How failures are retried and when a subscription is disabled.
pub struct Schedule<'a> {
    /// The delays before each retry.
    pub retries: &'a [Duration],
    /// Failed deliveries in a row that disable a subscription.
    pub disable_after: i32,
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

/// Records the attempt on the delivery claimed with `token` and its consequence, in one
/// transaction.
pub async fn finish(
    pool: &PgPool,
    schedule: &Schedule<'_>,
    token: Uuid,
    due: &Due,
    attempt: &Attempt,
) -> Result<Outcome, sqlx::Error> {
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
    let attempts = due.attempts + 1;
    let next = usize::try_from(due.attempts)
        .ok()
        .and_then(|i| schedule.retries.get(i));
    let outcome = match (&attempt.error, next) {
        (None, _) => {
            sent(&mut tx, token, due.id).await?;
            subscriptions::succeeded(&mut tx, due.subscription_id).await?;
            Outcome::Sent
        }
        // 410 Gone: the endpoint says it will never take deliveries again.
        (Some(error), _) if attempt.status == Some(410) => {
            failed(&mut tx, token, due.id, attempts, error).await?;
            subscriptions::gone(&mut tx, due.subscription_id).await?;
            super::skip_pending(&mut tx, due.subscription_id).await?;
            Outcome::Failed
        }
        (Some(error), Some(delay)) => {
            let wait = next_delay(*delay, attempt.retry_after, fastrand::f64());
            retry_later(&mut tx, token, due.id, attempts, error, wait).await?;
            Outcome::Retry
        }
        (Some(error), None) => {
            if failed(&mut tx, token, due.id, attempts, error).await? {
                subscriptions::failed(&mut tx, due.subscription_id, schedule.disable_after).await?;
            }
            Outcome::Failed
        }
    };
    tx.commit().await?;
    Ok(outcome)
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
    error: &str,
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
    error: &str,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_RETRY_AFTER, next_delay};

    #[test]
    fn retries_are_spread_by_a_fifth_either_way() {
        let delay = Duration::from_secs(100);
        assert_eq!(next_delay(delay, None, 0.0), Duration::from_secs(80));
        assert_eq!(next_delay(delay, None, 0.5), Duration::from_secs(100));
        assert_eq!(next_delay(delay, None, 1.0), Duration::from_secs(120));
        // Out-of-range draws stay within the spread.
        assert_eq!(next_delay(delay, None, 7.0), Duration::from_secs(120));
    }

    #[test]
    fn retry_after_is_a_floor_up_to_a_day() {
        let delay = Duration::from_secs(5);
        let asked = Some(Duration::from_secs(60));
        assert_eq!(next_delay(delay, asked, 1.0), Duration::from_secs(60));
        // A shorter ask does not make the schedule sooner.
        let short = Some(Duration::from_secs(1));
        assert_eq!(next_delay(delay, short, 0.5), delay);
        // An endpoint cannot park a delivery for longer than a day.
        let forever = Some(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(next_delay(delay, forever, 0.5), MAX_RETRY_AFTER);
    }
}
