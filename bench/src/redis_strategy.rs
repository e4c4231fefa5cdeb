//! How the gateway should talk to Redis: one multiplexed connection shared by every request
//! (what it does), against a pool of independent connections, measured with the gateway's own
//! idempotency pattern (claim a key with a script, then record the answer) at the same
//! concurrency.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream::FuturesUnordered};
use redis::{Script, aio::MultiplexedConnection};

/// How long one command may take here.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

const CLAIM: &str = "if redis.call('HSETNX', KEYS[1], 'state', 'lease') == 1 then redis.call('PEXPIRE', KEYS[1], 30000) return 1 end return 0";
const DONE: &str = "redis.call('HSET', KEYS[1], 'state', 'done', 'body', ARGV[1]) redis.call('PEXPIRE', KEYS[1], 60000) return 1";

/// Claim-and-record pairs per second over `duration` with `concurrency` requests in flight,
/// spread over `connections` connections (1 = one shared multiplexed connection).
pub async fn pairs_per_second(
    client: &redis::Client,
    prefix: &str,
    connections: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    // The client's default 500 ms response timeout is the gateway's concern, not this
    // measurement's: on a loaded two-core machine a reply may take longer, and that is a figure.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(COMMAND_TIMEOUT));
    let mut pool: Vec<MultiplexedConnection> = Vec::new();
    for _ in 0..connections {
        pool.push(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        );
    }
    let (claim, done) = (Script::new(CLAIM), Script::new(DONE));
    let started = Instant::now();
    let mut issued = 0usize;
    let mut completed = 0u64;
    let mut in_flight = FuturesUnordered::new();
    while started.elapsed() < duration {
        while in_flight.len() < concurrency {
            let mut connection = pool[issued % pool.len()].clone();
            let key = format!("{prefix}:{issued}");
            let (claim, done) = (claim.clone(), done.clone());
            in_flight.push(async move {
                let _: i64 = claim.key(&key).invoke_async(&mut connection).await?;
                let _: i64 = done
                    .key(&key)
                    .arg("{\"status\":\"accepted\"}")
                    .invoke_async(&mut connection)
                    .await?;
                redis::RedisResult::Ok(())
            });
            issued += 1;
        }
        if let Some(result) = in_flight.next().await {
            result?;
            completed += 1;
        }
    }
    while let Some(result) = in_flight.next().await {
        result?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut connection = pool[0].clone();
    testkit::redis::unlink_matching(&mut connection, &format!("{prefix}:*")).await?;
    Ok(completed as f64 / elapsed)
}
