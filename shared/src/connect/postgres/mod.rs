//! PostgreSQL: a lazy pool whose connections live in the namespace's schema, and the embedded
//! migrations, grouped by the owner of their tables ([`Tables`]): a service applies the groups
//! it owns or reads, in the background until they succeed (creating the database if missing).
//! A service finding every migration it needs already applied changes nothing, so it can run as
//! a role of its own ([`roles`]) that may not change the schema, once `gateway migrate`
//! ([`migrate`]) has prepared it.

mod fault;
pub mod roles;

pub use fault::Fault;

use std::{sync::LazyLock, time::Duration};

use crate::{service::Tasks, topology::Namespace};
use backon::{ExponentialBuilder, Retryable};
use sqlx::{
    AssertSqlSafe, Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

/// How long a caller waits for a pooled connection before treating PostgreSQL as down.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long PostgreSQL lets a session of ours sit idle inside a transaction before it ends the
/// session (`idle_in_transaction_session_timeout`). A service cut off from the database in the
/// middle of a transaction would otherwise hold that transaction's locks (a shard lease's, say)
/// until the server's TCP keepalive notices, two hours by default; no transaction of ours waits
/// this long between statements.
pub const IDLE_IN_TRANSACTION: &str = "10s";

/// `options` with the namespace's `search_path` and [`IDLE_IN_TRANSACTION`].
fn session_options(options: &PgConnectOptions, schema: &str) -> PgConnectOptions {
    options.clone().options([
        ("search_path", schema),
        ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION),
    ])
}

/// A group of tables with one owner, and its migrations (`shared/migrations/<group>`). The
/// groups share one history table, so their versions never overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tables {
    /// `api_keys`, owned by [`crate::auth::keys`]; every service reads it.
    Keys,
    /// The processor's: `products` and `orders` (read by the gateway and the dashboard through
    /// [`crate::processor::products`] and [`crate::processor::orders`]), the inbox, the retry ladder's
    /// records, dead letters and replay jobs.
    Processor,
    /// The notifier's: subscriptions, notifications, deliveries and their attempts.
    Notifier,
    /// The catalog: entries (`product_details`, [`crate::gateway::catalog`]), written by the gateway,
    /// and images (`product_images`, [`crate::gateway::images`]), written by the gateway and the imager.
    Catalog,
}

impl Tables {
    /// Every group: for tests and tools that need the whole schema.
    pub const ALL: [Self; 4] = [Self::Keys, Self::Processor, Self::Notifier, Self::Catalog];

    fn migrator(self) -> &'static Migrator {
        static KEYS: LazyLock<Migrator> =
            LazyLock::new(|| grouped(sqlx::migrate!("./migrations/keys")));
        static PROCESSOR: LazyLock<Migrator> = LazyLock::new(|| {
            let mut migrator = grouped(sqlx::migrate!("./migrations/processor"));
            for migration in migrator.migrations.to_mut() {
                if migration.version == 6 {
                    migration.checksum = first_version_6_checksum().into();
                }
            }
            migrator
        });
        static NOTIFIER: LazyLock<Migrator> =
            LazyLock::new(|| grouped(sqlx::migrate!("./migrations/notifier")));
        static CATALOG: LazyLock<Migrator> =
            LazyLock::new(|| grouped(sqlx::migrate!("./migrations/catalog")));
        match self {
            Self::Keys => &KEYS,
            Self::Processor => &PROCESSOR,
            Self::Notifier => &NOTIFIER,
            Self::Catalog => &CATALOG,
        }
    }
}

/// The SHA-384 that databases migrated before the grouping recorded for version 6: as first
/// written it also changed a notifier table (now the notifier's version 11), so its checksum is
/// not that of the processor's file today.
pub fn first_version_6_checksum() -> Vec<u8> {
    const HEX: &str = "5065b5cd1f980a5129d5d536412275aae932df6d99aa0abe68aa6659e0109bf5a69cf79dc734a401fd04b12c2427c737";
    (0..HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&HEX[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// A group's migrator: the other groups' versions in the shared history are not its concern.
fn grouped(mut migrator: Migrator) -> Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// The pool and whether the schema is in place.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    migrated: tokio::sync::watch::Receiver<bool>,
}

impl Database {
    /// Starts a lazy pool of at most `max_connections` with `search_path` set to the namespace,
    /// and a task of `tasks` that creates the database and schema if missing and applies the
    /// migrations of `tables`, retrying with backoff until it succeeds or the tasks stop.
    pub fn start(
        options: PgConnectOptions,
        namespace: &Namespace,
        tables: &'static [Tables],
        max_connections: u32,
        tasks: &Tasks,
    ) -> Self {
        let shutdown = tasks.stopping();
        let schema = namespace.as_str().to_owned();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(session_options(&options, &schema));
        let (migrated, watched) = tokio::sync::watch::channel(false);
        let database = Self {
            pool: pool.clone(),
            migrated: watched,
        };
        tasks.spawn(async move {
            let prepare = || prepare(&options, &schema, tables, &pool);
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
                        migrated.send_replace(true);
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
    /// holding work until PostgreSQL is back treat both alike (work that starts with the
    /// service waits for [`Self::migrated`] instead, so a first start logs no outage).
    pub fn ready(&self) -> Result<&PgPool, sqlx::Error> {
        if self.is_migrated() {
            Ok(&self.pool)
        } else {
            Err(sqlx::Error::PoolTimedOut)
        }
    }

    /// True once the migrations have been applied.
    pub fn is_migrated(&self) -> bool {
        *self.migrated.borrow()
    }

    /// Completes once the migrations have been applied (never, if they never are: race it with
    /// the shutdown signal).
    pub async fn migrated(&self) {
        let mut migrated = self.migrated.clone();
        if migrated.wait_for(|done| *done).await.is_err() {
            // The migrating task is gone without succeeding: the service is stopping.
            std::future::pending::<()>().await;
        }
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

/// A pool of at most `max_connections` on the namespace's schema, once the database and the
/// schema exist and the migrations are applied: for commands and tests, which need the schema
/// before they can do anything (services start without it and say so instead).
pub async fn migrated(
    options: &PgConnectOptions,
    namespace: &Namespace,
    tables: &[Tables],
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let schema = namespace.as_str();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(session_options(options, schema));
    prepare(options, schema, tables, &pool).await?;
    Ok(pool)
}

/// Applies the migrations of every group to the namespace's schema (creating the database and
/// the schema if missing), then gives each service's role its privileges ([`roles::grant`]):
/// what `gateway migrate` does, as a role that may change the schema.
pub async fn migrate(
    options: &PgConnectOptions,
    namespace: &Namespace,
) -> anyhow::Result<(PgPool, Vec<roles::Granted>)> {
    let pool = migrated(options, namespace, &Tables::ALL, 2).await?;
    let granted = roles::grant(&pool, namespace.as_str()).await?;
    Ok((pool, granted))
}

/// Whether every migration of `tables` is applied already, as written today (an error, such as
/// a schema or a database not made yet, counts as no; so does a changed migration, which the
/// migrator then refuses by name).
async fn applied(pool: &PgPool, tables: &[Tables]) -> bool {
    let Ok(applied) = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success",
    )
    .fetch_all(pool)
    .await
    else {
        return false;
    };
    tables.iter().all(|group| {
        group.migrator().iter().all(|migration| {
            applied.iter().any(|(version, checksum)| {
                *version == migration.version && *checksum == *migration.checksum
            })
        })
    })
}

async fn prepare(
    options: &PgConnectOptions,
    schema: &str,
    tables: &[Tables],
    pool: &PgPool,
) -> anyhow::Result<()> {
    // Nothing to change: start without asking for rights a service's own role lacks.
    if applied(pool, tables).await {
        return Ok(());
    }
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
    for group in tables {
        group.migrator().run(pool).await?;
    }
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
