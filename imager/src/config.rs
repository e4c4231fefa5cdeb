//! The imager's configuration, read once from the environment.

use std::time::Duration;

use shared::{
    config::{Backends, ConfigError, at_least_one, millis, var},
    objects::Objects,
    service::Serving,
};

use crate::variants::Limits;

/// Everything the imager reads at start.
#[derive(Clone)]
pub struct Config {
    /// Where the service listens (`IMAGER_ADDR`, `0.0.0.0:8084`: health, readiness, metrics),
    /// its HTTP limits, and how long a drain may take on SIGTERM (`SHUTDOWN_DEADLINE_SECS`, 30).
    pub serving: Serving,
    /// RabbitMQ, Redis, PostgreSQL and the namespace.
    pub backends: Backends,
    /// Where image bytes are stored (`OBJECT_STORE_URL`, ...).
    pub objects: Objects,
    /// Image jobs handled at once, each in a task of its own (`IMAGE_PREFETCH`, 2): the broker
    /// pushes at most this many unacknowledged jobs.
    pub prefetch: u16,
    /// Decoding limits: pixels a side (`IMAGE_MAX_SIDE`, 10000), in all (`IMAGE_MAX_PIXELS`,
    /// 40000000), and bytes decoded (`IMAGE_MAX_DECODED_MIB`, 160: 40 million pixels of 8-bit
    /// RGBA).
    pub limits: Limits,
    /// Attempts at a job that keeps failing before it is dead-lettered (`IMAGE_MAX_ATTEMPTS`, 3).
    pub max_attempts: i32,
    /// The wait after a first failed attempt, doubled after each (`IMAGE_RETRY_BACKOFF_MS`,
    /// 1000).
    pub backoff: Duration,
    /// How long a source URL has to answer (`IMAGE_FETCH_TIMEOUT_MS`, 15000).
    pub fetch_timeout: Duration,
    /// How long one attempt at a job may take in all, fetching, decoding and storing
    /// (`IMAGE_JOB_TIMEOUT_SECS`, 120); beyond, it counts as a failed attempt.
    pub job_timeout: Duration,
    /// Lets source URLs reach loopback, private and other non-public addresses
    /// (`IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS`, false): for local development only.
    pub allow_private_networks: bool,
}

impl Config {
    /// Reads the configuration; an invalid value is an error naming its variable.
    pub fn load() -> Result<Self, ConfigError> {
        Ok(Self {
            serving: Serving::from_env("IMAGER_ADDR", "0.0.0.0:8084")?,
            backends: Backends::from_env()?,
            objects: Objects::from_env()?,
            prefetch: at_least_one("IMAGE_PREFETCH", "2")?,
            limits: Limits {
                max_side: at_least_one("IMAGE_MAX_SIDE", "10000")?,
                max_pixels: at_least_one("IMAGE_MAX_PIXELS", "40000000")?,
                max_decoded_bytes: at_least_one::<u64>("IMAGE_MAX_DECODED_MIB", "160")?
                    .saturating_mul(1024 * 1024),
            },
            max_attempts: i32::from(at_least_one::<u16>("IMAGE_MAX_ATTEMPTS", "3")?),
            backoff: millis("IMAGE_RETRY_BACKOFF_MS", 1000)?,
            fetch_timeout: millis("IMAGE_FETCH_TIMEOUT_MS", 15_000)?,
            job_timeout: shared::config::seconds("IMAGE_JOB_TIMEOUT_SECS", 120)?,
            allow_private_networks: var("IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS", "false")?,
        })
    }
}

impl shared::service::ServiceConfig for Config {
    fn serving(&self) -> &Serving {
        &self.serving
    }
}
