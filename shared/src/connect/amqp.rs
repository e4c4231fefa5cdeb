//! RabbitMQ: a supervised connection. When a connection is lost (or the first one cannot be
//! made), the supervisor builds a new one, trying each configured node in turn with backoff, and
//! runs the service's set-up on it again. lapin's own recovery is not used: a connection it
//! recovers in the background brings back the consumers it had, beside the ones the new
//! connection's set-up made, and nothing reads them (a cluster run showed such orphans holding a
//! shard's prefetch until the process ended).

use std::{future::Future, sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    DefaultConnectionBuilder, ErrorKind, Event, PublisherConfirm, options::BasicPublishOptions,
    tcp::OwnedTLSConfig, uri::AMQPUri,
};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The heartbeat asked of the broker when the URL names none (`?heartbeat=`), in seconds: a
/// connection that hears nothing for two of them is taken as lost, on either side. RabbitMQ's
/// own default (60 s) would let a process cut from the broker by the network (packets dropped,
/// no reset) believe for two minutes that it is connected, holding what it consumes. Three
/// seconds let the broker and a cut processor both notice within 6 to 9 s, so the shards of a
/// processor cut from the broker are consumed by another within a 10 s lease; the broker's own
/// advice is not to go lower (a busy broker may then miss its own heartbeats).
pub const HEARTBEAT_SECS: u16 = 3;

/// A live connection and what the service built on it (channels, consumers).
pub struct Session<T> {
    /// The connection.
    pub connection: Arc<Connection>,
    /// The service's own state on this connection.
    pub value: T,
}

/// A handle on the current session, if any.
pub struct Broker<T> {
    current: watch::Receiver<Option<Arc<Session<T>>>>,
    unheard: watch::Receiver<Instant>,
}

impl<T> Clone for Broker<T> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
            unheard: self.unheard.clone(),
        }
    }
}

impl<T> Broker<T> {
    /// The current session, if the broker is connected and the set-up ran.
    pub fn session(&self) -> Option<Arc<Session<T>>> {
        self.current
            .borrow()
            .clone()
            .filter(|s| s.connection.status().connected())
    }

    /// True when a session is up.
    pub fn is_up(&self) -> bool {
        self.session().is_some()
    }

    /// Since when the broker has not been heard, or `None` while a session is up: the start for
    /// a broker not reached yet, the loss for a connection closed or reset, and two heartbeats
    /// before the loss for one that fell silent (how a link cut by the network shows, once
    /// nothing has been heard for that long).
    pub fn unheard_since(&self) -> Option<Instant> {
        if self.is_up() {
            return None;
        }
        if self.current.borrow().is_some() {
            // Lost a moment ago, before the supervisor marked it.
            return Some(Instant::now());
        }
        Some(*self.unheard.borrow())
    }

    /// Completes once `session` is no longer the current one: its connection was lost for good
    /// or replaced (or the supervisor is gone).
    pub async fn replaced(&self, session: &Arc<Session<T>>) {
        let mut current = self.current.clone();
        loop {
            let same = current
                .borrow_and_update()
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, session));
            if !same || current.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits for a connected session (the set-up done on it); `None` once `shutdown` fires or
    /// the supervisor is gone.
    pub async fn connected(&self, shutdown: &CancellationToken) -> Option<Arc<Session<T>>> {
        let mut current = self.current.clone();
        loop {
            if let Some(session) = self.session() {
                return Some(session);
            }
            // A recovering connection comes back without a new session: look again shortly.
            tokio::select! {
                changed = current.changed() => changed.ok()?,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }
}

/// The supervisor: `setup` runs on every new connection; its result is published as the current
/// session until the connection is lost for good. Returns the handle and the supervisor, to run
/// as a task, which ends (closing the connection) when `shutdown` fires. The connection is
/// named `{name}@{host}/{pid}` for the broker's management tools. An `amqps://` node is verified
/// against the system's roots and `ca`.
pub fn supervise<T, F, Fut>(
    name: &'static str,
    nodes: Vec<AMQPUri>,
    ca: Option<super::tls::Ca>,
    setup: F,
    shutdown: CancellationToken,
) -> (Broker<T>, impl Future<Output = ()> + Send + 'static)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<Connection>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send,
{
    let (tx, rx) = watch::channel(None);
    let (unheard_tx, unheard) = watch::channel(Instant::now());
    let connection_name = connection_name(name);
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: ca.map(|ca| ca.pem().to_owned()),
    };
    let task = async move {
        let mut node = 0;
        let mut backoff = delays();
        loop {
            let mut uri = nodes[node % nodes.len()].clone();
            uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
            node += 1;
            let session = tokio::select! {
                session = connect(&uri, &connection_name, &tls, &setup) => session,
                () = shutdown.cancelled() => return,
            };
            match session {
                Ok(session) => {
                    tracing::info!(host = %uri.authority.host, "Connected to RabbitMQ.");
                    backoff = delays();
                    let session = Arc::new(session);
                    tx.send_replace(Some(Arc::clone(&session)));
                    let Some(lost) = wait_until_lost(&session.connection, &shutdown).await else {
                        tx.send_replace(None);
                        if let Err(e) = session.connection.close(200, "shutting down".into()).await
                        {
                            tracing::debug!(error = %e, "RabbitMQ connection already closed.");
                        }
                        return;
                    };
                    unheard_tx.send_replace(lost.unheard_since(&session.connection));
                    tracing::warn!(host = %uri.authority.host, silent = matches!(lost, Lost::Silent), "RabbitMQ connection lost and not recovered; reconnecting.");
                    tx.send_replace(None);
                }
                Err(error) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(host = %uri.authority.host, error = %error, retry_in = ?delay, "RabbitMQ unavailable.");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    };
    (
        Broker {
            current: rx,
            unheard,
        },
        task,
    )
}

/// One connection to `uri`, named `name`, and `setup` run on it.
async fn connect<T, F, Fut>(
    uri: &AMQPUri,
    name: &str,
    tls: &OwnedTLSConfig,
    setup: &F,
) -> anyhow::Result<Session<T>>
where
    F: Fn(Arc<Connection>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connect = DefaultConnectionBuilder::new()?
        .with_uri(uri.clone())
        .with_properties(properties)
        .with_tls_config(tls.clone());
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect.connect())
        .await
        .map_err(|_| anyhow::anyhow!("connection attempt timed out"))??;
    let connection = Arc::new(connection);
    let value = setup(Arc::clone(&connection)).await?;
    Ok(Session { connection, value })
}

/// `{service}@{host}/{pid}`: who holds a connection, as the broker's management tools show it
/// (and how a processor replica names itself to the others).
pub fn connection_name(service: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{service}@{host}/{}", std::process::id())
}

/// Jittered exponential delays from 200 ms to 5 s, for reconnecting and restarting.
pub(crate) fn delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}

/// How a connection was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    /// Nothing heard for two heartbeats: the broker or the link to it is gone without a word.
    Silent,
    /// Closed or reset.
    Closed,
}

impl Lost {
    /// Since when the broker was unheard, for a connection lost this way now: a silent one since
    /// two of its heartbeats ago (that silence is how the loss was noticed), any other now.
    fn unheard_since(self, connection: &Connection) -> Instant {
        let now = Instant::now();
        match self {
            Self::Silent => {
                let heartbeat = Duration::from_secs(connection.configuration().heartbeat().into());
                now.checked_sub(heartbeat * 2).unwrap_or(now)
            }
            Self::Closed => now,
        }
    }
}

/// Waits until the connection is gone (how), or shutdown fires (`None`).
async fn wait_until_lost(connection: &Connection, shutdown: &CancellationToken) -> Option<Lost> {
    let mut events = std::pin::pin!(connection.events_listener());
    let mut silent = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !connection.status().connected() {
                    // The error is told before the state changes; read what is already told.
                    while let Some(Some(event)) = events.next().now_or_never() {
                        silent |= missed_heartbeats(&event);
                    }
                    return Some(if silent { Lost::Silent } else { Lost::Closed });
                }
            }
            Some(event) = events.next() => silent |= missed_heartbeats(&event),
            () = shutdown.cancelled() => return None,
        }
    }
}

fn missed_heartbeats(event: &Event) -> bool {
    matches!(event, Event::Error(e) if matches!(e.kind(), ErrorKind::MissingHeartbeatError))
}

/// Whether a message must reach a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Published as `mandatory`: a message no queue is bound for comes back, and is an error.
    Required,
    /// It may reach no queue: an event nobody subscribed to yet.
    Optional,
}

/// A message sent on a channel in confirm mode whose confirm has not been read yet.
pub struct Unconfirmed {
    confirm: PublisherConfirm,
    exchange: String,
    routing_key: String,
}

/// Publishes a persistent message (`channel` must be in confirm mode) without waiting for its
/// confirm: several can be in flight and their confirms awaited together
/// ([`Unconfirmed::confirmed`]); `send(..).await?.confirmed().await` publishes one. With
/// [`Routing::Required`], the confirm is `Ok` only for an ack without a return: the message is in
/// a queue.
pub async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
    routing: Routing,
) -> anyhow::Result<Unconfirmed> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: routing == Routing::Required,
                ..BasicPublishOptions::default()
            },
            payload,
            properties.with_delivery_mode(2),
        )
        .await?;
    Ok(Unconfirmed {
        confirm,
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
    })
}

impl Unconfirmed {
    /// Waits for the broker's confirm: `Ok` for an ack without a return (a `mandatory` message
    /// reached a queue).
    pub async fn confirmed(self) -> anyhow::Result<()> {
        match self.confirm.await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => anyhow::bail!(
                "no queue is bound for {}/{}",
                self.exchange,
                self.routing_key
            ),
            other => anyhow::bail!("the broker refused the message: {other:?}"),
        }
    }
}
