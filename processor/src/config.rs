//! The processor's configuration, read once from the environment.

use std::time::Duration;

use shared::{
    config::{self, Backends, ConfigError, at_least_one, millis_list, seconds, var},
    service::Serving,
};

use crate::store::retention::Windows;

/// Everything the processor reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the service listens (`PROCESSOR_ADDR`, `0.0.0.0:8082`), its HTTP limits, and how long a
    /// drain may take on SIGTERM (`SHUTDOWN_DEADLINE_SECS`, 30).
    pub serving: Serving,
    /// RabbitMQ, Redis, PostgreSQL, namespace and shard count.
    pub backends: Backends,
    /// Unacknowledged deliveries the broker may push per shard (`PREFETCH`, 256).
    pub prefetch: u16,
    /// The retry ladder: how long a failed event waits before each new attempt
    /// (`RETRY_DELAYS_MS`, `1000,10000,60000`); past the last, it is dead-lettered.
    pub retry_delays: Vec<Duration>,
    /// Stock below this emits a `stock.low` event when crossed (`STOCK_LOW_THRESHOLD`, 10).
    pub stock_low_threshold: i32,
    /// How long a replica's hold on a shard lasts unless renewed (`SHARD_LEASE_SECS`, 10): the
    /// longest a dead replica's shards wait for another; replicas renew every quarter of it.
    pub shard_lease: Duration,
    /// How long product updates' inbox rows (`PROCESSED_EVENTS_RETENTION_SECS`, 604800: 7 days,
    /// the dedupe window) and dead letters (`DEAD_LETTER_RETENTION_SECS`, 2592000: 30 days)
    /// are kept.
    pub retention: Windows,
    /// How often expired rows are pruned (`RETENTION_INTERVAL_SECS`, 3600).
    pub prune_every: Duration,
}

impl Config {
    /// Reads the configuration; an invalid value is an error naming its variable.
    pub fn load() -> Result<Self, ConfigError> {
        Ok(Self {
            serving: Serving::from_env("PROCESSOR_ADDR", "0.0.0.0:8082")?,
            backends: Backends::from_env()?,
            prefetch: config::prefetch()?,
            retry_delays: millis_list("RETRY_DELAYS_MS", "1000,10000,60000")?,
            stock_low_threshold: var("STOCK_LOW_THRESHOLD", "10")?,
            shard_lease: at_least_one("SHARD_LEASE_SECS", "10").map(Duration::from_secs)?,
            retention: Windows {
                processed_events: seconds("PROCESSED_EVENTS_RETENTION_SECS", 604_800)?,
                dead_letters: seconds("DEAD_LETTER_RETENTION_SECS", 2_592_000)?,
            },
            prune_every: config::retention_interval()?,
        })
    }
}

impl shared::service::ServiceConfig for Config {
    fn serving(&self) -> &Serving {
        &self.serving
    }
}
