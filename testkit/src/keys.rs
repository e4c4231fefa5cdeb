//! API keys for tests, stored in a namespace as `gateway keys import` and `gateway keys create`
//! store them, and HTTP clients that send them.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use shared::{auth::Scopes, config::Backends, topology::Namespace};

use crate::sandbox::backends_in;

/// The name of [`tester_key`]: the owner of what a test's main client sends.
pub const TEST_KEY_NAME: &str = "tester";

/// The key with every scope named [`TEST_KEY_NAME`] in `namespace`: derived from the namespace
/// (so every helper of one test gets the same key, and knows its owner) and stored once, as
/// `gateway keys import` stores a key made elsewhere.
pub async fn tester_key(namespace: &Namespace) -> String {
    let seed = shared::auth::keys::hash(&format!("tester of {}", namespace.as_str()));
    let key = format!(
        "{}{}",
        shared::auth::keys::PREFIX,
        URL_SAFE_NO_PAD.encode(seed)
    );
    let pool = migrated(&backends_in(namespace)).await;
    let name = TEST_KEY_NAME.parse().expect("a valid key name");
    shared::auth::keys::import(&pool, &name, &key, Scopes::all(), None, false)
        .await
        .expect("the key is stored");
    pool.close().await;
    key
}

/// A new API key with `scopes` in `namespace` (on the environment's PostgreSQL, migrating the
/// schema first), as `gateway keys create` makes one.
pub async fn api_key(namespace: &Namespace, scopes: Scopes) -> String {
    let name = format!("test-{}", uuid::Uuid::now_v7().simple());
    named_api_key(namespace, &name, scopes, None).await
}

/// A new API key named `name` with `scopes` and an optional rate (requests per second).
pub async fn named_api_key(
    namespace: &Namespace,
    name: &str,
    scopes: Scopes,
    rate: Option<u32>,
) -> String {
    api_key_at(&backends_in(namespace), name, scopes, rate).await
}

/// A new API key named `name` in the PostgreSQL and namespace of `backends` (migrating the
/// schema first).
pub async fn api_key_at(
    backends: &Backends,
    name: &str,
    scopes: Scopes,
    rate: Option<u32>,
) -> String {
    let pool = migrated(backends).await;
    let name = name.parse().expect("a valid key name");
    let key = shared::auth::keys::create(&pool, &name, scopes, rate)
        .await
        .expect("the key is created");
    pool.close().await;
    key
}

/// The `Authorization: Bearer` header of `key`, for a client's default headers.
pub fn header(key: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}")
            .parse()
            .expect("a valid header value"),
    );
    headers
}

/// An HTTP client that sends `key` as `Authorization: Bearer` with every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(header(key))
        .build()
        .expect("a client")
}

/// A client sending [`tester_key`] of `namespace`.
pub async fn authorized_client(namespace: &Namespace) -> reqwest::Client {
    client_with_key(&tester_key(namespace).await)
}

/// A one-connection pool on `backends`' schema, every table migrated.
async fn migrated(backends: &Backends) -> sqlx::PgPool {
    shared::connect::postgres::migrated(
        &backends.database,
        &backends.namespace,
        &shared::connect::postgres::Tables::ALL,
        1,
    )
    .await
    .expect("PostgreSQL is reachable")
}
