//! The processor's configuration, read once from the environment.

use std::{net::SocketAddr, time::Duration};

use shared::{
    config::{Backends, ConfigError, millis_list, seconds, var},
    http::Limits,
};

/// Everything the processor reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where health, readiness and metrics are served (`PROCESSOR_ADDR`, `0.0.0.0:8082`).
    pub addr: SocketAddr,
    /// RabbitMQ, Redis, PostgreSQL, namespace and shard count.
    pub backends: Backends,
    /// How the HTTP server protects itself from slow and greedy clients.
    pub http: Limits,
    /// Unacknowledged deliveries the broker may push per shard (`PREFETCH`, 32).
    pub prefetch: u16,
    /// How long a drain may take on SIGTERM (`SHUTDOWN_DEADLINE_SECS`, 30).
    pub shutdown_deadline: Duration,
    /// The retry ladder: how long a failed event waits before each new attempt
    /// (`RETRY_DELAYS_MS`, `1000,10000,60000`); past the last, it is dead-lettered.
    pub retry_delays: Vec<Duration>,
    /// Stock below this emits a `stock.low` event when crossed (`STOCK_LOW_THRESHOLD`, 10).
    pub stock_low_threshold: i32,
}

impl Config {
    /// Reads the configuration; an invalid value is an error naming its variable.
    pub fn load() -> Result<Self, ConfigError> {
        let prefetch = var::<u16>("PREFETCH", "32")?;
        if prefetch == 0 {
            return Err(ConfigError {
                variable: "PREFETCH",
                message: "must be at least 1".into(),
            });
        }
        Ok(Self {
            addr: var("PROCESSOR_ADDR", "0.0.0.0:8082")?,
            backends: Backends::from_env()?,
            http: Limits::from_env()?,
            prefetch,
            shutdown_deadline: seconds("SHUTDOWN_DEADLINE_SECS", 30)?,
            retry_delays: millis_list("RETRY_DELAYS_MS", "1000,10000,60000")?,
            stock_low_threshold: var("STOCK_LOW_THRESHOLD", "10")?,
        })
    }
}
