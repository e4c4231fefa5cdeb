//! Filling a namespace as the services do, and taking stock of what is left of it.

use lapin::{options::ExchangeDeclareOptions, types::FieldTable};
use shared::{
    config::Backends,
    connect::postgres::{Tables, migrated},
    topology::Topology,
};
use sqlx::{Connection, PgConnection};
use testkit::{
    broker::Broker,
    sandbox::{IMAGE_RETRY_DELAYS, RETRY_DELAYS, Sandbox},
};

/// More shards than a sandbox is told of: the removal finds them.
pub const SHARDS: u16 = testkit::sandbox::SHARDS + 2;

/// What is left of a namespace.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    /// The queues still there.
    pub queues: Vec<String>,
    /// The exchanges still there.
    pub exchanges: Vec<String>,
    /// The Redis keys still there, in order.
    pub keys: Vec<String>,
    /// Whether the schema is still there.
    pub schema: bool,
}

impl Left {
    /// Nothing at all.
    pub const NOTHING: Self = Self {
        queues: Vec::new(),
        exchanges: Vec::new(),
        keys: Vec::new(),
        schema: false,
    };
}

fn topology(backends: &Backends) -> Topology {
    Topology::new(backends.namespace.clone(), SHARDS)
}

/// Every queue [`fill`] makes, each retry rung's exchange being named as its queue.
fn queues(backends: &Backends) -> Vec<String> {
    let topology = topology(backends);
    let mut queues: Vec<String> = (0..SHARDS).map(|s| topology.shard_queue(s)).collect();
    queues.extend([
        topology.notifier_queue(),
        topology.images_queue(),
        topology.dead_letter_queue(),
        topology.shard_count_queue(),
    ]);
    queues.extend(rungs(&topology));
    queues
}

fn exchanges(backends: &Backends) -> Vec<String> {
    let topology = topology(backends);
    let mut exchanges = vec![
        topology.ingest_exchange(),
        topology.dead_letter_exchange(),
        topology.events_exchange(),
    ];
    exchanges.extend(rungs(&topology));
    exchanges
}

fn rungs(topology: &Topology) -> Vec<String> {
    RETRY_DELAYS
        .iter()
        .map(|d| topology.retry_queue(*d))
        .chain(
            IMAGE_RETRY_DELAYS
                .iter()
                .map(|d| topology.images_retry_exchange(*d)),
        )
        .collect()
}

/// A new sandbox whose namespace holds what the services make ([`fill`]), and its backends.
pub async fn filled() -> (Sandbox, Backends) {
    let sandbox = Sandbox::new();
    let backends = sandbox.backends();
    fill(&backends).await;
    (sandbox, backends)
}

/// Makes in `backends`' namespace what the services make: the topology with [`SHARDS`] shards
/// and both retry ladders (quorum queues dead-lettering at least once), Redis keys, and the
/// schema with every table; returns the stock of it, all there.
async fn fill(backends: &Backends) -> Left {
    let broker = Broker::connect(backends).await;
    let topology = topology(backends);
    broker.try_declare(&topology).await.expect("declared");
    let channel = broker.channel().await;
    topology
        .declare_retry_ladder(&channel, &RETRY_DELAYS)
        .await
        .expect("the retry ladder declared");
    topology
        .declare_images_retry(&channel, &IMAGE_RETRY_DELAYS)
        .await
        .expect("the image retry rungs declared");
    let mut redis = testkit::redis::connect(backends).await;
    let keys: Vec<String> = ["idempotency:b", "product:a"]
        .iter()
        .map(|k| format!("{}:{k}", backends.namespace.as_str()))
        .collect();
    for key in &keys {
        redis::cmd("SET")
            .arg(key)
            .arg("1")
            .query_async::<()>(&mut redis)
            .await
            .expect("SET");
    }
    migrated(&backends.database, &backends.namespace, &Tables::ALL, 1)
        .await
        .expect("the schema migrated")
        .close()
        .await;
    let all = Left {
        queues: queues(backends),
        exchanges: exchanges(backends),
        keys,
        schema: true,
    };
    assert_eq!(left(backends).await, all, "everything was made");
    all
}

/// What is left of what [`fill`] makes (looked at without making anything), keys in order.
pub async fn left(backends: &Backends) -> Left {
    let broker = Broker::connect(backends).await;
    let mut queues_left = Vec::new();
    for queue in queues(backends) {
        if broker.exists(&queue).await {
            queues_left.push(queue);
        }
    }
    let mut exchanges_left = Vec::new();
    for exchange in exchanges(backends) {
        // A missing exchange closes the channel: one each.
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = broker
            .channel()
            .await
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Fanout,
                passive,
                FieldTable::default(),
            )
            .await;
        if declared.is_ok() {
            exchanges_left.push(exchange);
        }
    }
    let mut keys = testkit::redis::namespace_keys(backends).await;
    keys.sort();
    let mut pg = PgConnection::connect_with(&backends.database)
        .await
        .expect("PostgreSQL is reachable");
    let schema: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(backends.namespace.as_str())
            .fetch_one(&mut pg)
            .await
            .expect("the catalog is readable");
    pg.close().await.expect("closed");
    Left {
        queues: queues_left,
        exchanges: exchanges_left,
        keys,
        schema,
    }
}
