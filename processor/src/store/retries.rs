//! The `retries` table: the last retry scheduled for each event on the retry ladder, for
//! operators' lookups (the retry itself is the message in its retry queue).

use std::time::Duration;

use sqlx::PgPool;

/// Records that `event` waits on the retry ladder after `attempts`, failing with `error`.
pub async fn note(
    pool: &PgPool,
    event: &str,
    attempts: u32,
    error: &str,
    delay: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO retries (event_id, attempts, last_error, retry_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))
         ON CONFLICT (event_id) DO UPDATE
         SET attempts = excluded.attempts, last_error = excluded.last_error,
             retry_at = excluded.retry_at",
    )
    .bind(event)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}
