//! Typed configuration read once from environment variables.
//!
//! Every variable has a default that works against the local services; an invalid value stops
//! start-up with one line naming the variable.

pub mod environment;
pub mod settings;

use std::{fmt::Display, str::FromStr, time::Duration};

use lapin::uri::AMQPUri;
use sqlx::postgres::PgConnectOptions;

use crate::{
    connect::tls::Ca,
    topology::{Namespace, Topology},
};

/// A variable whose value could not be used; its message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// Why its value was refused.
    pub message: String,
}

fn raw(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The value of `name`, if set and not empty.
fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads `name` (or `default` when unset or empty) and parses it; the error quotes the value.
pub fn var<T>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    let value = raw(name, default);
    value.parse().map_err(|e| ConfigError {
        variable: name,
        message: format!("{e} (got {value:?})"),
    })
}

/// Reads a count from `name` that must be at least 1.
pub fn at_least_one<T>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + From<u8>,
    T::Err: Display,
{
    let value: T = var(name, default)?;
    if value < T::from(1) {
        return Err(ConfigError {
            variable: name,
            message: "must be at least 1".into(),
        });
    }
    Ok(value)
}

/// Reads a number of seconds from `name` as a [`Duration`].
pub fn seconds(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    var::<u64>(name, &default.to_string()).map(Duration::from_secs)
}

/// Reads a number of milliseconds from `name` as a [`Duration`].
pub fn millis(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    var::<u64>(name, &default.to_string()).map(Duration::from_millis)
}

/// Reads a comma-separated list of millisecond delays, each at least 1 (a schedule).
pub fn millis_list(name: &'static str, default: &str) -> Result<Vec<Duration>, ConfigError> {
    raw(name, default)
        .split(',')
        .map(|d| match d.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(ConfigError {
                variable: name,
                message: format!("{d:?} is not a whole number of milliseconds above 0"),
            }),
        })
        .collect()
}

/// Reads `PREFETCH` (256): unacknowledged deliveries the broker may push to each of the
/// processor's shard consumers, or to the notifier's.
pub fn prefetch() -> Result<u16, ConfigError> {
    at_least_one("PREFETCH", "256")
}

/// Reads `RETENTION_INTERVAL_SECS` (3600): how often the processor and the notifier prune
/// expired rows.
pub fn retention_interval() -> Result<Duration, ConfigError> {
    at_least_one("RETENTION_INTERVAL_SECS", "3600").map(Duration::from_secs)
}

/// Reads a value that may hold credentials: the error never repeats the value.
fn secret<T>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw(name, default).parse::<T>().map_err(|e| ConfigError {
        variable: name,
        message: e.to_string(),
    })
}

/// Where the shared backends are and how the pipeline's names are prefixed.
#[derive(Clone, Debug)]
pub struct Backends {
    /// RabbitMQ nodes, tried in turn (`AMQP_URL`, comma-separated).
    pub amqp: Vec<AMQPUri>,
    /// Redis (`REDIS_URL`).
    pub redis: redis::ConnectionInfo,
    /// PostgreSQL (`DATABASE_URL`, with `DATABASE_USER` and `DATABASE_PASSWORD` when set); the
    /// database is created if missing.
    pub database: PgConnectOptions,
    /// A private certificate authority trusted for TLS to the backends (`SSL_CERT_FILE`).
    pub tls_ca: Option<Ca>,
    /// Prefix of every exchange, queue and Redis key, and the PostgreSQL schema
    /// (`PIPELINE_NAMESPACE`).
    pub namespace: Namespace,
    /// Number of ingest shard queues (`INGEST_SHARDS`).
    pub ingest_shards: u16,
    /// How long a product's cached view lives in Redis (`PRODUCT_CACHE_TTL_SECS`, 1800); every
    /// change rewrites it before then.
    pub cache_ttl_seconds: u64,
}

/// Default `AMQP_URL`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default `REDIS_URL`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/pipeline";

impl Backends {
    /// The broker topology of the configured namespace and ingest shard count.
    pub fn topology(&self) -> Topology {
        Topology::new(self.namespace.clone(), self.ingest_shards)
    }

    /// Reads `AMQP_URL` (with `AMQP_USERNAME` and `AMQP_PASSWORD`, when set, for every node),
    /// `REDIS_URL` (with `REDIS_PASSWORD`), `DATABASE_URL` (with `DATABASE_USER` and
    /// `DATABASE_PASSWORD`),
    /// `SSL_CERT_FILE`, `PIPELINE_NAMESPACE`, `INGEST_SHARDS` and `PRODUCT_CACHE_TTL_SECS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let amqp = raw("AMQP_URL", DEFAULT_AMQP_URL)
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<AMQPUri>().map_err(|e| ConfigError {
                    variable: "AMQP_URL",
                    message: e,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if amqp.is_empty() {
            return Err(ConfigError {
                variable: "AMQP_URL",
                message: "names no broker".into(),
            });
        }
        // Credentials may come apart from the URLs (from a secret, say), so they need no
        // URL-encoding and no URL needs to hold them.
        let amqp = match (optional("AMQP_USERNAME"), optional("AMQP_PASSWORD")) {
            (None, None) => amqp,
            (username, password) => amqp
                .into_iter()
                .map(|mut uri| {
                    if let Some(username) = &username {
                        uri.authority.userinfo.username.clone_from(username);
                    }
                    if let Some(password) = &password {
                        uri.authority.userinfo.password.clone_from(password);
                    }
                    uri
                })
                .collect(),
        };
        let redis = raw("REDIS_URL", DEFAULT_REDIS_URL);
        let mut redis =
            redis::IntoConnectionInfo::into_connection_info(redis.as_str()).map_err(|e| {
                ConfigError {
                    variable: "REDIS_URL",
                    message: e.to_string(),
                }
            })?;
        if let Some(password) = optional("REDIS_PASSWORD") {
            let settings = redis.redis_settings().clone().set_password(password);
            redis = redis.set_redis_settings(settings);
        }
        let ingest_shards = at_least_one("INGEST_SHARDS", "4")?;
        let tls_ca = Ca::from_env()?;
        let database_url = raw("DATABASE_URL", DEFAULT_DATABASE_URL);
        let mut database: PgConnectOptions = secret("DATABASE_URL", DEFAULT_DATABASE_URL)?;
        if let Some(user) = optional("DATABASE_USER") {
            database = database.username(&user);
        }
        if let Some(password) = optional("DATABASE_PASSWORD") {
            database = database.password(&password);
        }
        // The private authority serves PostgreSQL too, unless the URL (or PGSSLROOTCERT) names
        // its own.
        if let Some(ca) = &tls_ca
            && !database_url.contains("sslrootcert=")
            && optional("PGSSLROOTCERT").is_none()
        {
            database = database.ssl_root_cert(ca.path());
        }
        Ok(Self {
            amqp,
            redis,
            database,
            tls_ca,
            namespace: var("PIPELINE_NAMESPACE", "pipeline")?,
            ingest_shards,
            cache_ttl_seconds: seconds("PRODUCT_CACHE_TTL_SECS", 30 * 60)?.as_secs().max(1),
        })
    }
}
