//! PostgreSQL for tests: a pool on a namespace's schema, to assert on the source of truth, and
//! each service's login user, as a deployment makes them.

use shared::config::Backends;

/// A pool on the namespace's schema, for asserting on the source of truth.
pub async fn pool(backends: &Backends) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            backends
                .database
                .clone()
                .options([("search_path", backends.namespace.as_str())]),
        )
        .await
        .expect("PostgreSQL is reachable")
}

/// Runs `statement` on the namespace's schema, failing with it and PostgreSQL's answer.
pub async fn execute(backends: &Backends, statement: &'static str) {
    let pool = pool(backends).await;
    sqlx::query(statement)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    pool.close().await;
}

/// Events recorded in the processor's inbox (`processed_events`; 0 when it cannot be read):
/// the events applied.
pub async fn inbox_count(backends: &Backends) -> i64 {
    let pool = pool(backends).await;
    let count = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    pool.close().await;
    count
}

/// Prepares `backends`' schema as `gateway migrate` does (as `backends`' user: the roles made
/// and granted) and makes each service's login user, `{prefix}_{service}`, a member of its role,
/// with the password `{prefix}-{service}` when `passwords` (the tests' servers trust 127.0.0.1;
/// one of their own may check). Services logged in so fail wherever a privilege their code
/// needs is not granted.
pub async fn role_logins(backends: &Backends, prefix: &str, passwords: bool) -> anyhow::Result<()> {
    use shared::connect::postgres::{self, roles};
    let (pool, granted) = postgres::migrate(&backends.database, &backends.namespace).await?;
    anyhow::ensure!(
        granted
            .iter()
            .all(|g| !matches!(g, roles::Granted::Missing(_))),
        "roles missing: {granted:?}"
    );
    for role in roles::Role::ALL {
        let password = passwords.then(|| format!("{prefix}-{}", role.service()));
        let user = format!("{prefix}_{}", role.service());
        roles::login(&pool, role, &user, password.as_deref()).await?;
    }
    pool.close().await;
    Ok(())
}
