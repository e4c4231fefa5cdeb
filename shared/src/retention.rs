//! Pruning what is kept only for a while: every `every`, each service deletes its own rows older
//! than their window, a batch at a time (so no statement holds locks for long), and counts them
//! in `pipeline_pruned_rows_total{table}`.

use std::{future::Future, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::connect::postgres::Database;

/// Rows deleted per statement.
pub const BATCH: i64 = 5_000;

/// Runs `prune` (which deletes one batch of each of its tables and says how many rows of each
/// went) until every table has fewer than [`BATCH`] left to go, every `every`, until `stop`.
/// A failure (PostgreSQL down) is logged and tried again at the next round.
pub async fn run<F, Fut>(database: Database, every: Duration, prune: F, stop: CancellationToken)
where
    F: Fn(PgPool) -> Fut + Send,
    Fut: Future<Output = Result<Vec<(&'static str, u64)>, sqlx::Error>> + Send,
{
    loop {
        if let Ok(pool) = database.ready() {
            loop {
                match prune(pool.clone()).await {
                    Ok(pruned) => {
                        for (table, rows) in &pruned {
                            metrics::counter!(crate::metric::PRUNED_ROWS_TOTAL, "table" => *table)
                                .increment(*rows);
                        }
                        let full = pruned
                            .iter()
                            .any(|(_, rows)| *rows >= u64::try_from(BATCH).unwrap_or(u64::MAX));
                        if !full || stop.is_cancelled() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot prune expired rows; trying again at the next round.");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
