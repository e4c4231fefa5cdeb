//! Redis: one multiplexed, self-reconnecting `ConnectionManager` per service; over TLS for a
//! `rediss://` URL, trusting the system's roots and the private authority, when given.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one Redis command may take before the caller treats Redis as down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds a connection manager that connects on first use and reconnects by itself; every
/// command fails within [`COMMAND_TIMEOUT`] while Redis is unreachable. A `rediss://` server is
/// verified against the system's roots and `ca`.
pub fn connect(
    info: redis::ConnectionInfo,
    ca: Option<&super::tls::Ca>,
) -> redis::RedisResult<ConnectionManager> {
    super::tls::install_provider();
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    let client = match ca {
        Some(ca) if tls => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.pem().as_bytes().to_vec()),
            },
        )?,
        _ => redis::Client::open(info)?,
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// True when Redis answers `PING` within [`COMMAND_TIMEOUT`].
pub async fn is_up(connection: &ConnectionManager) -> bool {
    let mut connection = connection.clone();
    let ping = redis::cmd("PING");
    let pong = ping.query_async::<String>(&mut connection);
    matches!(tokio::time::timeout(COMMAND_TIMEOUT, pong).await, Ok(Ok(_)))
}
