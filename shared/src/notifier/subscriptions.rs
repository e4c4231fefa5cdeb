//! What others read of the notifier's `subscriptions` table (`notifier::store::subscriptions`
//! owns it).

use sqlx::PgPool;

/// How many subscriptions are disabled (and not deleted).
pub async fn disabled(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions WHERE disabled_at IS NOT NULL AND deleted_at IS NULL",
    )
    .fetch_one(pool)
    .await
}
