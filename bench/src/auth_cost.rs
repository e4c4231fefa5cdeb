//! What authentication costs a request: checking a key held in memory (parse the header,
//! SHA-256 the key, look it up, check the scope), timed over many checks on one thread.

use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use shared::{
    auth::{Auth, Scope},
    config::Backends,
    connect::postgres::{Database, Tables},
    service::Tasks,
};

/// Checks made to time one.
const CHECKS: u32 = 200_000;

/// The time one check of `key` takes, once the key is in memory.
pub async fn per_check(backends: &Backends, key: &str) -> anyhow::Result<Duration> {
    let tasks = Tasks::new();
    let database = Database::start(
        backends.database.clone(),
        &backends.namespace,
        &[Tables::Keys],
        1,
        &tasks,
    );
    let auth = Auth::start(database, &tasks, 1, std::time::Duration::from_secs(300));
    let header = HeaderValue::from_str(&format!("Bearer {key}"))?;
    let check = || auth.authorize(Some(&header), Scope::EventsWrite, None);
    check()
        .await
        .map_err(|d| anyhow::anyhow!("the key was refused: {d:?}"))?;
    let started = Instant::now();
    for _ in 0..CHECKS {
        check()
            .await
            .map_err(|d| anyhow::anyhow!("the key was refused: {d:?}"))?;
    }
    let per_check = started.elapsed() / CHECKS;
    tasks.stop("auth check", Duration::from_secs(5)).await;
    Ok(per_check)
}
