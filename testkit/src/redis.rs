//! Redis for tests: a connection to assert on idempotency records and the cache, the keys a
//! namespace holds, and removing keys by pattern.

use std::time::Duration;

use shared::config::Backends;

/// A Redis connection for asserting on idempotency records and the cache.
pub async fn connect(backends: &Backends) -> redis::aio::MultiplexedConnection {
    patient(backends).await.expect("Redis is reachable")
}

/// Every Redis key the backends' namespace holds (to assert nothing was left behind).
pub async fn namespace_keys(backends: &Backends) -> Vec<String> {
    let mut redis = connect(backends).await;
    redis::cmd("KEYS")
        .arg(format!("{}:*", backends.namespace.as_str()))
        .query_async(&mut redis)
        .await
        .expect("KEYS")
}

/// Removes every Redis key matching `pattern`, batch by batch (a namespace a benchmark filled
/// holds hundreds of thousands of keys: one `KEYS` and one `DEL` would take too long).
pub async fn unlink_matching(
    redis: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<()> {
    let mut cursor = 0u64;
    loop {
        let (next, keys) = scan(redis, cursor, pattern).await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<()>(redis)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// How many keys the namespace `namespace` holds, counted batch by batch.
pub async fn namespace_keys_count(
    redis: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> u64 {
    let pattern = format!("{namespace}:*");
    let (mut cursor, mut count) = (0u64, 0u64);
    loop {
        let Ok((next, keys)) = scan(redis, cursor, &pattern).await else {
            return count;
        };
        count += keys.len() as u64;
        if next == 0 {
            return count;
        }
        cursor = next;
    }
}

/// One `SCAN` step: the next cursor and a batch of keys matching `pattern`.
async fn scan(
    redis: &mut redis::aio::MultiplexedConnection,
    cursor: u64,
    pattern: &str,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .query_async(redis)
        .await
}

/// A Redis connection whose commands may take their time (removing a big namespace).
pub(crate) async fn patient(
    backends: &Backends,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    redis::Client::open(backends.redis.clone())?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}
