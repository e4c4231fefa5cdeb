//! The notifier's configuration, read once from the environment.

use std::time::Duration;

use shared::{
    config::{self, Backends, ConfigError, at_least_one, millis, millis_list, seconds, var},
    service::Serving,
};

use crate::delivery::Policy;

/// Everything the notifier reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the service listens (`NOTIFIER_ADDR`, `0.0.0.0:8083`), its HTTP limits, and how long a
    /// drain may take on SIGTERM (`SHUTDOWN_DEADLINE_SECS`, 30).
    pub serving: Serving,
    /// RabbitMQ, PostgreSQL and the namespace (Redis is not used).
    pub backends: Backends,
    /// Unacknowledged downstream events the broker may push (`PREFETCH`, 256).
    pub prefetch: u16,
    /// How long a subscriber has to answer one delivery (`WEBHOOK_TIMEOUT_MS`, 15000, as
    /// Standard Webhooks asks: 15 to 30 s).
    pub webhook_timeout: Duration,
    /// When a failed delivery is tried again, after each failed attempt
    /// (`WEBHOOK_RETRY_SCHEDULE_MS`, Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); after
    /// the last it is marked failed and dead-lettered.
    pub retry_schedule: Vec<Duration>,
    /// Deliveries in flight at once, across all subscribers (`WEBHOOK_CONCURRENCY`, 16).
    pub concurrency: usize,
    /// Deliveries in flight at once to one subscription (`WEBHOOK_CONCURRENCY_PER_ENDPOINT`, 8),
    /// so a slow endpoint holds up only its own.
    pub per_endpoint: usize,
    /// A subscription whose deliveries fail this many times in a row (each after its whole
    /// retry schedule) is disabled (`WEBHOOK_DISABLE_AFTER`, 5).
    pub disable_after: i32,
    /// How often the delivery worker looks for due retries when nothing wakes it
    /// (`WEBHOOK_POLL_MS`, 500).
    pub poll_interval: Duration,
    /// Lets webhooks reach loopback, private, link-local and other non-public addresses
    /// (`WEBHOOK_ALLOW_PRIVATE_NETWORKS`, false): for local development only.
    pub allow_private_networks: bool,
    /// Most subscriptions a namespace may hold (`WEBHOOK_MAX_SUBSCRIPTIONS`, 100).
    pub max_subscriptions: i64,
    /// How long a downstream event taken in is kept with its deliveries and attempts, once none
    /// is pending (`NOTIFICATION_RETENTION_SECS`, 2592000: 30 days; the notifier's dedupe window).
    pub retention: Duration,
    /// How often expired rows are pruned (`RETENTION_INTERVAL_SECS`, 3600).
    pub prune_every: Duration,
}

impl Config {
    /// How the delivery worker delivers.
    pub fn policy(&self) -> Policy {
        Policy {
            timeout: self.webhook_timeout,
            retry_schedule: self.retry_schedule.clone(),
            concurrency: self.concurrency,
            per_endpoint: self.per_endpoint,
            disable_after: self.disable_after,
            poll_interval: self.poll_interval,
        }
    }

    /// Reads the configuration; an invalid value is an error naming its variable.
    pub fn load() -> Result<Self, ConfigError> {
        let concurrency = at_least_one::<u16>("WEBHOOK_CONCURRENCY", "16")?;
        let per_endpoint = at_least_one::<u16>("WEBHOOK_CONCURRENCY_PER_ENDPOINT", "8")?;
        let disable_after = at_least_one::<u16>("WEBHOOK_DISABLE_AFTER", "5")?;
        let max_subscriptions = at_least_one::<u32>("WEBHOOK_MAX_SUBSCRIPTIONS", "100")?;
        Ok(Self {
            serving: Serving::from_env("NOTIFIER_ADDR", "0.0.0.0:8083")?,
            backends: Backends::from_env()?,
            prefetch: config::prefetch()?,
            webhook_timeout: millis("WEBHOOK_TIMEOUT_MS", 15_000)?,
            retry_schedule: millis_list(
                "WEBHOOK_RETRY_SCHEDULE_MS",
                "5000,300000,1800000,7200000,18000000,36000000,36000000",
            )?,
            concurrency: usize::from(concurrency),
            per_endpoint: usize::from(per_endpoint),
            disable_after: i32::from(disable_after),
            poll_interval: millis("WEBHOOK_POLL_MS", 500)?,
            allow_private_networks: var("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false")?,
            max_subscriptions: i64::from(max_subscriptions),
            retention: seconds("NOTIFICATION_RETENTION_SECS", 2_592_000)?,
            prune_every: config::retention_interval()?,
        })
    }
}

impl shared::service::ServiceConfig for Config {
    fn serving(&self) -> &Serving {
        &self.serving
    }
}
