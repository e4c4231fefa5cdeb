//! Redis: one multiplexed, self-reconnecting `ConnectionManager` per service; over TLS for a
//! `rediss://` URL, trusting the system's roots and the private authority, when given.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one Redis command may take before the caller treats Redis as down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long what was sent on a connection may stay unacknowledged before the kernel gives the
/// connection up (`TCP_USER_TIMEOUT`), so that the manager opens a new one. A timed-out command
/// alone does not make it reconnect; after a network cut, the old connection would otherwise
/// come back only at TCP's next retransmission, which backs off to tens of seconds (a gateway
/// refused keyed events for 24 s after a 30 s cut healed, in the partitions run).
pub const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a connection manager that connects on first use and reconnects by itself; every
/// command fails within [`COMMAND_TIMEOUT`] while Redis is unreachable. A `rediss://` server is
/// verified against the system's roots and `ca`.
pub fn connect(
    info: redis::ConnectionInfo,
    ca: Option<&super::tls::Ca>,
) -> redis::RedisResult<ConnectionManager> {
    super::tls::install_provider();
    let tcp = info
        .tcp_settings()
        .clone()
        .set_user_timeout(UNACKNOWLEDGED_TIMEOUT);
    let info = info.set_tcp_settings(tcp);
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
    timed(ping.query_async::<String>(&mut connection))
        .await
        .is_ok()
}

/// A Redis command that failed, or did not answer within [`COMMAND_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Failed(#[from] redis::RedisError),
    /// No answer in time.
    #[error("redis: no answer within {COMMAND_TIMEOUT:?}")]
    TimedOut,
}

/// Runs one Redis call (a command, a pipeline or a script) under [`COMMAND_TIMEOUT`]: the one
/// deadline every caller keeps, whatever the connection does meanwhile.
pub async fn timed<T>(
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, CommandError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(CommandError::TimedOut),
    }
}
