//! Test support shared by the services' integration tests (never linked into a service).
//!
//! - [`backends`]: the real RabbitMQ, Redis and PostgreSQL from the environment (local
//!   defaults), under a fresh random namespace so runs never touch each other.
//! - [`Broker`]: a plain AMQP client to look into queues and publish straight to the broker.
//! - [`cleanup`]: removes everything a namespace created (with the test retry ladder).
//! - [`services`]: the real service binaries as child processes.
//! - [`fault_proxy`]: a TCP proxy that cuts, stalls or slows a connection on demand.
//! - [`webhooks`]: a local webhook receiver that records what it gets.
//! - [`S3Server`]: a local S3 API server for the object-store tests.
//! - [`eventually`]: polls with a deadline instead of sleeping.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod fault_proxy;
pub mod sabotage;
pub mod services;
pub mod spans;
pub mod tls;
pub mod webhooks;

use std::{future::Future, time::Duration};

use futures_util::StreamExt;

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use shared::{
    config::Backends,
    topology::{Namespace, Topology},
};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// Shards used by tests: few, to keep the broker light, but more than one.
pub const TEST_SHARDS: u16 = 2;

/// A short retry ladder for tests, so exhausting it takes well under a second.
pub const TEST_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(300),
];

/// The imager's retry rungs in tests (a 50 ms backoff, three attempts): exhausting them takes a
/// fraction of a second.
pub const TEST_IMAGE_RETRY_DELAYS: [Duration; 2] =
    [Duration::from_millis(50), Duration::from_millis(100)];

/// A fresh namespace, unique to this call.
pub fn namespace() -> Namespace {
    format!("t{}", uuid::Uuid::now_v7().simple())
        .parse()
        .expect("t + 32 hex digits is a valid namespace")
}

/// The backends from the environment (defaults: the local services) under a fresh namespace.
pub fn backends() -> Backends {
    let mut backends = Backends::from_env().expect("test environment variables are valid");
    backends.namespace = namespace();
    backends.ingest_shards = TEST_SHARDS;
    backends
}

/// The backends from the environment under an existing namespace (a second service in a run).
pub fn backends_in(namespace: &Namespace) -> Backends {
    let mut backends = backends();
    backends.namespace = namespace.clone();
    backends
}

/// The name of [`tester_key`]: the owner of what a test's main client sends.
pub const TEST_KEY_NAME: &str = "tester";

/// The key with every scope named [`TEST_KEY_NAME`] in `namespace`: derived from the namespace
/// (so every helper of one test gets the same key, and knows its owner) and stored once, as
/// `gateway keys import` stores a key made elsewhere.
pub async fn tester_key(namespace: &Namespace) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let seed = shared::auth::keys::hash(&format!("tester of {}", namespace.as_str()));
    let key = format!(
        "{}{}",
        shared::auth::keys::PREFIX,
        URL_SAFE_NO_PAD.encode(seed)
    );
    let backends = backends_in(namespace);
    let pool = shared::connect::postgres::migrated(
        &backends.database,
        namespace,
        &shared::connect::postgres::Tables::ALL,
        1,
    )
    .await
    .expect("PostgreSQL is reachable");
    let name = TEST_KEY_NAME.parse().expect("a valid key name");
    shared::auth::keys::import(&pool, &name, &key, shared::auth::Scopes::all(), None, false)
        .await
        .expect("the key is stored");
    pool.close().await;
    key
}

/// A new API key with `scopes` in `namespace` (on the environment's PostgreSQL, migrating the
/// schema first), as `gateway keys create` makes one.
pub async fn api_key(namespace: &Namespace, scopes: shared::auth::Scopes) -> String {
    let name = format!("test-{}", uuid::Uuid::now_v7().simple());
    named_api_key(namespace, &name, scopes, None).await
}

/// A new API key named `name` with `scopes` and an optional rate (requests per second).
pub async fn named_api_key(
    namespace: &Namespace,
    name: &str,
    scopes: shared::auth::Scopes,
    rate: Option<u32>,
) -> String {
    api_key_at(&backends_in(namespace), name, scopes, rate).await
}

/// A new API key named `name` in the PostgreSQL and namespace of `backends` (migrating the
/// schema first).
pub async fn api_key_at(
    backends: &Backends,
    name: &str,
    scopes: shared::auth::Scopes,
    rate: Option<u32>,
) -> String {
    let pool = shared::connect::postgres::migrated(
        &backends.database,
        &backends.namespace,
        &shared::connect::postgres::Tables::ALL,
        1,
    )
    .await
    .expect("PostgreSQL is reachable");
    let name = name.parse().expect("a valid key name");
    let key = shared::auth::keys::create(&pool, &name, scopes, rate)
        .await
        .expect("the key is created");
    pool.close().await;
    key
}

/// The `Authorization: Bearer` header of `key`, for a client's default headers.
pub fn key_header(key: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}")
            .parse()
            .expect("a valid header value"),
    );
    headers
}

/// An HTTP client that sends `key` as `Authorization: Bearer` with every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(key_header(key))
        .build()
        .expect("a client")
}

/// A client with a new key holding every scope in `namespace`.
pub async fn authorized_client(namespace: &Namespace) -> reqwest::Client {
    client_with_key(&tester_key(namespace).await)
}

/// A `scheme://127.0.0.1:PORT` URL where nothing listens.
pub fn closed_port_url(scheme: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = listener.local_addr().expect("bound").port();
    drop(listener);
    format!("{scheme}://127.0.0.1:{port}")
}

/// Polls `probe` until it yields `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(timeout, probe)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// `GET url`: the status and the JSON body (`null` when it is not JSON).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Asserts that an answer (`status`, JSON body) is a 400 naming `field`, saying `context` if
/// not.
pub fn assert_names_field(status: u16, body: &serde_json::Value, field: &str, context: &str) {
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some(field)),
        "{context}: {body}"
    );
}

/// Polls `url` until it answers `status`, or panics naming `what` after `timeout`; the answer.
pub async fn until_status(
    client: &reqwest::Client,
    url: &str,
    status: u16,
    what: &str,
    timeout: Duration,
) -> reqwest::Response {
    eventually(what, timeout, || async {
        let response = client.get(url).send().await.ok()?;
        (response.status() == status).then_some(response)
    })
    .await
}

/// Polls the service at `base` (`http://host:port`) until its `/ready` is 200.
pub async fn until_ready(client: &reqwest::Client, base: &str, timeout: Duration) {
    let url = format!("{base}/ready");
    until_status(client, &url, 200, &format!("{base} to be ready"), timeout).await;
}

/// Polls `probe` every 50 ms until it yields `Some`, or gives `None` after `timeout`.
pub async fn eventually_or<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain AMQP client for looking into the broker from a test.
pub struct Broker {
    connection: Connection,
    channel: Channel,
}

impl Broker {
    /// Connects to the first configured node.
    pub async fn connect(backends: &Backends) -> Self {
        let connection =
            Connection::connect_uri(backends.amqp[0].clone(), ConnectionProperties::default())
                .await
                .expect("RabbitMQ is reachable");
        let channel = connection.create_channel().await.expect("open a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Self {
            connection,
            channel,
        }
    }

    /// A new channel on the connection.
    pub async fn channel(&self) -> Channel {
        self.connection
            .create_channel()
            .await
            .expect("open a channel")
    }

    /// A consumer of a private queue bound to `exchange` with `routing_key` (`#`: everything).
    pub async fn listen(&self, exchange: &str, routing_key: &str) -> Consumer {
        let channel = self.channel().await;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare");
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume")
    }

    /// Messages ready in `queue` (0 if it does not exist).
    pub async fn depth(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match self
            .channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
        {
            Ok(q) => q.message_count(),
            Err(_) => 0,
        }
    }

    /// Takes one message from `queue` (acknowledged), waiting up to two seconds for one.
    /// (`basic.get` is refused on single-active-consumer quorum queues, so this consumes.)
    pub async fn take(&self, queue: &str) -> Option<Delivery> {
        let channel = self.channel().await;
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let delivery = tokio::time::timeout(Duration::from_secs(2), consumer.next())
            .await
            .ok()
            .flatten()
            .map(|d| d.expect("delivery"));
        if let Some(delivery) = &delivery {
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
        }
        channel.close(200, "taken".into()).await.expect("close");
        delivery
    }

    /// Deletes `queue` (its consumers are cancelled by the broker).
    pub async fn delete_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .expect("queue deleted");
    }

    /// Declares the pipeline's topology of `backends`' namespace, as a service does at start.
    pub async fn declare(&self, backends: &Backends) {
        self.try_declare(&Topology::new(
            backends.namespace.clone(),
            backends.ingest_shards,
        ))
        .await
        .expect("topology declared");
    }

    /// Whether `queue` exists (a passive declare on a channel of its own: a missing queue
    /// closes the channel).
    pub async fn exists(&self, queue: &str) -> bool {
        let channel = self.channel().await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .is_ok()
    }

    /// Declares `topology` as a service does at start, or says why it was refused.
    pub async fn try_declare(&self, topology: &Topology) -> anyhow::Result<()> {
        topology.declare(&self.connection).await
    }

    /// Publishes `body` as a persistent message and waits for the confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        self.try_publish(exchange, routing_key, body, properties)
            .await
            .expect("the broker confirmed the message");
    }

    /// Publishes `body` as a persistent message and waits for the confirm; `Err` if the broker
    /// refused it or no queue is bound for it.
    pub async fn try_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        shared::connect::amqp::send(
            &self.channel,
            exchange,
            routing_key,
            body,
            properties,
            shared::connect::amqp::Routing::Required,
        )
        .await?
        .confirmed()
        .await
    }
}

/// A service's real configuration (`$config::load()`, the environment over the defaults) for a
/// test: on a free port of 127.0.0.1, with a 5 s drain, on `$backends`.
#[macro_export]
macro_rules! test_config {
    ($config:path, $backends:expr) => {{
        let mut config = <$config>::load().expect("the default configuration is valid");
        config.serving = $crate::in_process(config.serving);
        config.backends = $backends;
        config
    }};
}

/// Services built in the test's own process, each run until it is stopped.
#[derive(Default)]
pub struct InProcess(
    Vec<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
);

impl InProcess {
    /// Runs a built service until it is stopped; its address.
    pub fn launch(&mut self, built: anyhow::Result<shared::service::App>) -> std::net::SocketAddr {
        let app = built.expect("the service builds");
        let addr = app.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        self.0.push((stop, task));
        addr
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Stops the most recently launched service, waiting for its drain.
    pub async fn stop_last(&mut self) {
        let (stop, task) = self.0.pop().expect("something is running");
        let _ = stop.send(());
        task.await.expect("task").expect("stops cleanly");
    }
}

/// A service's serving settings for a test: a free port on 127.0.0.1, and a 5 s drain.
pub fn in_process(serving: shared::service::Serving) -> shared::service::Serving {
    shared::service::Serving {
        addr: "127.0.0.1:0".parse().expect("valid address"),
        shutdown_deadline: Duration::from_secs(5),
        ..serving
    }
}

/// Deletes every queue, exchange, Redis key and the schema of the backends' namespace.
pub async fn cleanup(backends: &Backends) -> anyhow::Result<()> {
    let topology = Topology::new(backends.namespace.clone(), backends.ingest_shards);
    if let Ok(connection) =
        Connection::connect_uri(backends.amqp[0].clone(), ConnectionProperties::default()).await
    {
        let channel = connection.create_channel().await?;
        let mut queues: Vec<String> = (0..topology.shards())
            .map(|s| topology.shard_queue(s))
            .collect();
        queues.push(topology.dead_letter_queue());
        queues.push(topology.notifier_queue());
        queues.push(topology.images_queue());
        queues.push(topology.shard_count_queue());
        let retry: Vec<String> = TEST_RETRY_DELAYS
            .iter()
            .map(|d| topology.retry_queue(*d))
            .chain(
                TEST_IMAGE_RETRY_DELAYS
                    .iter()
                    .map(|d| topology.images_retry_exchange(*d)),
            )
            .collect();
        queues.extend(retry.iter().cloned());
        for queue in queues {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        let mut exchanges = vec![
            topology.ingest_exchange(),
            topology.dead_letter_exchange(),
            topology.events_exchange(),
        ];
        exchanges.extend(retry);
        for exchange in exchanges {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        connection.close(200, "test done".into()).await?;
    }
    if let Ok(mut redis) = redis_connection(backends).await {
        unlink_matching(&mut redis, &format!("{}:*", backends.namespace.as_str())).await?;
    }
    if let Ok(mut pg) = PgConnection::connect_with(&backends.database).await {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            backends.namespace.as_str()
        )))
        .execute(&mut pg)
        .await?;
        pg.close().await?;
    }
    Ok(())
}

/// Removes every Redis key matching `pattern`, batch by batch (a namespace a benchmark filled
/// holds hundreds of thousands of keys: one `KEYS` and one `DEL` would take too long).
pub async fn unlink_matching(
    redis: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<()> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<()>(redis)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The Prometheus text a service at `base` (`http://host:port`) serves at `/metrics`.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("the metrics answer")
        .text()
        .await
        .expect("the metrics are text")
}

/// A counter's value in Prometheus text: the sum over the series of `name` whose line contains
/// `matching` (a label, say).
pub fn counter(metrics: &str, name: &str, matching: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(matching))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Prepares `backends`' schema as `gateway migrate` does (as `backends`' user: the roles made
/// and granted) and makes each service's login user, `{prefix}_{service}`, a member of its role,
/// with the password `{prefix}-{service}` when `passwords` (the tests' servers trust 127.0.0.1;
/// one of their own may check). Services logged in so fail wherever a privilege their code
/// needs is not granted.
pub async fn role_logins(backends: &Backends, prefix: &str, passwords: bool) -> anyhow::Result<()> {
    use shared::connect::postgres::{self, roles};
    let (pool, granted) = postgres::migrate(&backends.database, &backends.namespace).await?;
    anyhow::ensure!(
        granted
            .iter()
            .all(|g| !matches!(g, roles::Granted::Missing(_))),
        "roles missing: {granted:?}"
    );
    for role in roles::Role::ALL {
        let password = passwords.then(|| format!("{prefix}-{}", role.service()));
        let user = format!("{prefix}_{}", role.service());
        roles::login(&pool, role, &user, password.as_deref()).await?;
    }
    pool.close().await;
    Ok(())
}

/// A pool on the namespace's schema, for asserting on the source of truth.
pub async fn database(backends: &Backends) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            backends
                .database
                .clone()
                .options([("search_path", backends.namespace.as_str())]),
        )
        .await
        .expect("PostgreSQL is reachable")
}

/// Every Redis key the backends' namespace holds (to assert nothing was left behind).
pub async fn namespace_keys(backends: &Backends) -> Vec<String> {
    let mut redis = redis(backends).await;
    redis::cmd("KEYS")
        .arg(format!("{}:*", backends.namespace.as_str()))
        .query_async(&mut redis)
        .await
        .expect("KEYS")
}

/// A Redis connection for asserting on idempotency records and the cache.
pub async fn redis(backends: &Backends) -> redis::aio::MultiplexedConnection {
    redis_connection(backends)
        .await
        .expect("Redis is reachable")
}

/// A Redis connection whose commands may take their time (clean-up of a big namespace).
async fn redis_connection(
    backends: &Backends,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    redis::Client::open(backends.redis.clone())?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A local S3 API server (`moto` in server mode, from PyPI) on a free port, with one bucket;
/// stopped when dropped.
pub struct S3Server {
    child: tokio::process::Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its bucket.
    pub bucket: String,
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub async fn start(bucket: &str) -> Self {
        let importable = std::process::Command::new("python3")
            .args(["-c", "import moto.server"])
            .stderr(std::process::Stdio::null())
            .status();
        assert!(
            importable.is_ok_and(|s| s.success()),
            "the S3 tests need moto: python3 -m pip install 'moto[server]'"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 -m moto.server starts (pip install 'moto[server]')");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/{bucket}");
        eventually(
            "the S3 server up with its bucket",
            Duration::from_secs(60),
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let created = client.put(&url).send().await.ok()?;
                    created.status().is_success().then_some(())
                }
            },
        )
        .await;
        Self {
            child,
            addr,
            bucket: bucket.to_owned(),
        }
    }

    /// The `object_store` options that reach it through `addr` (itself, or a proxy in front).
    pub fn options(addr: std::net::SocketAddr) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", format!("http://{addr}")),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
