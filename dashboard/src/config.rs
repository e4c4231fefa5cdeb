//! The dashboard's configuration, read once from the environment.

use std::time::Duration;

use shared::{
    config::{Backends, ConfigError, millis, var},
    service::Serving,
};

/// Everything the dashboard reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the service listens (`DASHBOARD_ADDR`, `0.0.0.0:8081`), its HTTP limits, and how long a
    /// drain may take on SIGTERM (`SHUTDOWN_DEADLINE_SECS`, 30).
    pub serving: Serving,
    /// RabbitMQ (queue depths), PostgreSQL (lookups, counts) and the namespace.
    pub backends: Backends,
    /// The services, by base URL: `GATEWAY_URL` (`http://127.0.0.1:8080`), `PROCESSOR_URL`
    /// (`http://127.0.0.1:8082`), `NOTIFIER_URL` (`http://127.0.0.1:8083`), `IMAGER_URL`
    /// (`http://127.0.0.1:8084`).
    pub services: Vec<(&'static str, String)>,
    /// How often the numbers are refreshed and pushed to open pages (`DASHBOARD_REFRESH_MS`,
    /// 1000).
    pub refresh: Duration,
    /// Marks the session cookie `Secure`, so browsers send it over HTTPS only (and over plain
    /// HTTP to `localhost`) (`DASHBOARD_SECURE_COOKIES`, true).
    pub secure_cookies: bool,
    /// Live streams open at once, across all pages (`DASHBOARD_MAX_STREAMS`, 32).
    pub max_streams: usize,
}

impl Config {
    /// Reads the configuration; an invalid value is an error naming its variable.
    pub fn load() -> Result<Self, ConfigError> {
        let url = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            let value: String = var(name, default)?;
            if value.starts_with("http://") || value.starts_with("https://") {
                Ok(value.trim_end_matches('/').to_owned())
            } else {
                Err(ConfigError {
                    variable: name,
                    message: format!("must be an http(s) URL (got {value:?})"),
                })
            }
        };
        Ok(Self {
            serving: Serving::from_env("DASHBOARD_ADDR", "0.0.0.0:8081")?,
            backends: Backends::from_env()?,
            services: vec![
                ("gateway", url("GATEWAY_URL", "http://127.0.0.1:8080")?),
                ("processor", url("PROCESSOR_URL", "http://127.0.0.1:8082")?),
                ("notifier", url("NOTIFIER_URL", "http://127.0.0.1:8083")?),
                ("imager", url("IMAGER_URL", "http://127.0.0.1:8084")?),
            ],
            refresh: millis("DASHBOARD_REFRESH_MS", 1000)?,
            secure_cookies: var("DASHBOARD_SECURE_COOKIES", "true")?,
            max_streams: var("DASHBOARD_MAX_STREAMS", "32")?,
        })
    }
}

impl shared::service::ServiceConfig for Config {
    fn serving(&self) -> &Serving {
        &self.serving
    }
}
