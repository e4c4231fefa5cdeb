//! PostgreSQL: a lazy pool whose connections live in the namespace's schema, and the embedded
//! migrations, applied in the background until they succeed (creating the database if missing).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use sqlx::{
    AssertSqlSafe, Connection, PgPool,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

use crate::topology::Namespace;

/// How long a caller waits for a pooled connection before treating PostgreSQL as down.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The pool and whether the schema is in place.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    migrated: Arc<AtomicBool>,
}

impl Database {
    /// Starts a lazy pool of at most `max_connections` with `search_path` set to the namespace,
    /// and a background task that creates the database and schema if missing and applies the
    /// migrations, retrying with backoff until it succeeds or `shutdown` fires.
    pub fn start(
        options: PgConnectOptions,
        namespace: &Namespace,
        max_connections: u32,
        shutdown: CancellationToken,
    ) -> Self {
        let schema = namespace.as_str().to_owned();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone().options([("search_path", schema.as_str())]));
        let migrated = Arc::new(AtomicBool::new(false));
        let database = Self {
            pool: pool.clone(),
            migrated: Arc::clone(&migrated),
        };
        tokio::spawn(async move {
            let prepare = || prepare(&options, &schema, &pool);
            let retried = prepare
                .retry(
                    ExponentialBuilder::default()
                        .with_jitter()
                        .with_max_delay(Duration::from_secs(5))
                        .without_max_times(),
                )
                .notify(|error, delay| {
                    tracing::warn!(error = %error, retry_in = ?delay, "PostgreSQL schema not ready; retrying.");
                });
            tokio::select! {
                result = retried => {
                    if result.is_ok() {
                        migrated.store(true, Ordering::Release);
                        tracing::info!(schema = %schema, "PostgreSQL schema ready.");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
        database
    }

    /// The pool (connections use the namespace's schema).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool once the schema is migrated; before that, the error an outage gives, so callers
    /// holding work until PostgreSQL is back treat both alike.
    pub fn ready(&self) -> Result<&PgPool, sqlx::Error> {
        if self.is_migrated() {
            Ok(&self.pool)
        } else {
            Err(sqlx::Error::PoolTimedOut)
        }
    }

    /// True once the migrations have been applied.
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    /// True when the schema is in place and PostgreSQL answers a query in time.
    pub async fn is_up(&self) -> bool {
        if !self.is_migrated() {
            return false;
        }
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(tokio::time::timeout(ACQUIRE_TIMEOUT, ping).await, Ok(Ok(_)))
    }
}

async fn prepare(options: &PgConnectOptions, schema: &str, pool: &PgPool) -> anyhow::Result<()> {
    create_database_if_missing(options).await?;
    let mut tx = pool.begin().await?;
    // CREATE SCHEMA IF NOT EXISTS races with itself; serialise it across services.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pipeline.create_schema'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    MIGRATOR.run(pool).await?;
    Ok(())
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    match PgConnection::connect_with(options).await {
        Ok(connection) => return Ok(connection.close().await?),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => return Err(e.into()),
    }
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let created = sqlx::query(AssertSqlSafe(format!(
        "CREATE DATABASE \"{}\"",
        name.replace('"', "\"\"")
    )))
    .execute(&mut admin)
    .await;
    admin.close().await?;
    match created {
        // Another service created it first (42P04), or is creating it right now (23505).
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(_) => {
            tracing::info!(database = %name, "Created the PostgreSQL database.");
            Ok(())
        }
    }
}
