//! The gateway's configuration, read once from the environment.

use std::time::Duration;

use shared::{
    config::{Backends, ConfigError, at_least_one, millis, seconds},
    objects::Objects,
    service::Serving,
};

/// Everything the gateway reads at start.
#[derive(Clone)]
pub struct Config {
    /// Where the service listens (`GATEWAY_ADDR`, `0.0.0.0:8080`), its HTTP limits, and how long a
    /// drain may take on SIGTERM (`SHUTDOWN_DEADLINE_SECS`, 30).
    pub serving: Serving,
    /// RabbitMQ, Redis, PostgreSQL, namespace and shard count.
    pub backends: Backends,
    /// How long a completed idempotency record is kept (`IDEMPOTENCY_RETENTION_SECS`, 24 h).
    pub idempotency_retention: Duration,
    /// How long a key stays locked while its first request publishes
    /// (`IDEMPOTENCY_LEASE_SECS`, 30 s); a crashed gateway's lease expires after it.
    pub idempotency_lease: Duration,
    /// How long to wait for the broker's confirm before answering 503
    /// (`PUBLISH_CONFIRM_TIMEOUT_MS`, 5000).
    pub confirm_timeout: Duration,
    /// Publishing channels, each with many confirms in flight (`PUBLISH_CHANNELS`, 4).
    pub publish_channels: u16,
    /// Where uploaded images go and how their URLs read (`OBJECT_STORE_URL`, ...).
    pub objects: Objects,
    /// Bytes of image uploads held in memory at once (`UPLOAD_MEMORY_MIB`, 64): an upload is
    /// given room for its `Content-Length` (10 MiB without one) before its body is read, and is
    /// answered `503` with `Retry-After` when there is none.
    pub upload_memory: usize,
    /// Images one product may have, failed ones not counted (`IMAGES_PER_PRODUCT`, 50); more
    /// are `409`.
    pub images_per_product: u32,
}

impl Config {
    /// Reads the configuration; an invalid value is an error naming its variable.
    pub fn load() -> Result<Self, ConfigError> {
        let config = Self {
            serving: Serving::from_env("GATEWAY_ADDR", "0.0.0.0:8080")?,
            backends: Backends::from_env()?,
            idempotency_retention: seconds("IDEMPOTENCY_RETENTION_SECS", 24 * 60 * 60)?,
            idempotency_lease: seconds("IDEMPOTENCY_LEASE_SECS", 30)?,
            confirm_timeout: millis("PUBLISH_CONFIRM_TIMEOUT_MS", 5000)?,
            publish_channels: at_least_one("PUBLISH_CHANNELS", "4")?,
            objects: Objects::from_env()?,
            upload_memory: at_least_one::<usize>("UPLOAD_MEMORY_MIB", "64")?
                .saturating_mul(1024 * 1024),
            images_per_product: at_least_one("IMAGES_PER_PRODUCT", "50")?,
        };
        if config.idempotency_lease <= config.confirm_timeout {
            return Err(ConfigError {
                variable: "IDEMPOTENCY_LEASE_SECS",
                message: "must be longer than PUBLISH_CONFIRM_TIMEOUT_MS".into(),
            });
        }
        Ok(config)
    }
}

impl shared::service::ServiceConfig for Config {
    fn serving(&self) -> &Serving {
        &self.serving
    }
}
