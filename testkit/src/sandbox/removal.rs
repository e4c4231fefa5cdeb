//! Removing a namespace: its queues one at a time (never two sandboxes' at once in this
//! process), then its exchanges, its Redis keys and its PostgreSQL schema. Every part is tried
//! even when an earlier one failed; the first failure is reported.

use std::time::Duration;

use anyhow::Context;
use lapin::{
    Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use shared::{config::Backends, topology::Topology};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use super::{IMAGE_RETRY_DELAYS, RETRY_DELAYS};

/// How long a whole removal may take before it is reported as failed (a broker or database in
/// trouble must not hang the test that drops its sandbox).
const DEADLINE: Duration = Duration::from_secs(120);

/// Held while a namespace's queues are deleted: tests run in parallel, and their clean-ups
/// must not delete queues at the same time either (see [`super::Sandbox::remove`]). A Tokio
/// mutex, not tied to a runtime: every removal runs on a runtime of its own.
static QUEUE_DELETIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Removes everything `backends`' namespace holds (its schema too unless `keep_schema`).
pub(super) async fn remove(backends: &Backends, keep_schema: bool) -> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, async {
        let broker = broker(backends).await;
        let redis = redis(backends).await;
        let schema = if keep_schema {
            Ok(())
        } else {
            schema(backends).await
        };
        broker.and(redis).and(schema)
    })
    .await
    .with_context(|| format!("not done within {DEADLINE:?}"))?
}

/// Deletes the namespace's queues, one after another, then its exchanges.
async fn broker(backends: &Backends) -> anyhow::Result<()> {
    let connection =
        Connection::connect_uri(backends.amqp[0].clone(), ConnectionProperties::default())
            .await
            .context("RabbitMQ is unreachable")?;
    let topology = Topology::new(backends.namespace.clone(), backends.ingest_shards);
    let channel = connection.create_channel().await?;
    {
        let _alone = QUEUE_DELETIONS.lock().await;
        for queue in queues(&topology, &connection).await? {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .with_context(|| format!("deleting queue {queue}"))?;
        }
    }
    for exchange in exchanges(&topology) {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .with_context(|| format!("deleting exchange {exchange}"))?;
    }
    connection.close(200, "namespace removed".into()).await?;
    Ok(())
}

/// Every queue a namespace may hold (deleting one that does not exist is harmless): the shard
/// queues up to the last one there (a test may declare more shards than its sandbox was told),
/// the others of the topology, and the rungs of the tests' retry ladders.
async fn queues(topology: &Topology, connection: &Connection) -> anyhow::Result<Vec<String>> {
    let mut queues: Vec<String> = (0..topology.shards())
        .map(|s| topology.shard_queue(s))
        .collect();
    let mut shard = topology.shards();
    while exists(connection, &topology.shard_queue(shard)).await? {
        queues.push(topology.shard_queue(shard));
        shard += 1;
    }
    queues.extend([
        topology.notifier_queue(),
        topology.images_queue(),
        topology.dead_letter_queue(),
        topology.shard_count_queue(),
    ]);
    queues.extend(rungs(topology));
    Ok(queues)
}

/// The namespace's exchanges (each retry rung's exchange is named as its queue).
fn exchanges(topology: &Topology) -> Vec<String> {
    let mut exchanges = vec![
        topology.ingest_exchange(),
        topology.dead_letter_exchange(),
        topology.events_exchange(),
    ];
    exchanges.extend(rungs(topology));
    exchanges
}

/// The retry rungs of services started in a sandbox: the processor's and the imager's.
fn rungs(topology: &Topology) -> impl Iterator<Item = String> {
    RETRY_DELAYS.iter().map(|d| topology.retry_queue(*d)).chain(
        IMAGE_RETRY_DELAYS
            .iter()
            .map(|d| topology.images_retry_exchange(*d)),
    )
}

/// Whether `queue` exists: a passive declare, on a channel of its own (a missing queue closes
/// the channel).
async fn exists(connection: &Connection, queue: &str) -> anyhow::Result<bool> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await;
    if declared.is_ok() {
        channel.close(200, "probed".into()).await?;
    }
    Ok(declared.is_ok())
}

/// Removes every Redis key of the namespace.
async fn redis(backends: &Backends) -> anyhow::Result<()> {
    let mut redis = crate::redis::patient(backends)
        .await
        .context("Redis is unreachable")?;
    crate::redis::unlink_matching(&mut redis, &format!("{}:*", backends.namespace.as_str()))
        .await
        .context("removing the Redis keys")
}

/// Drops the namespace's schema (there is none when the database was never made).
async fn schema(backends: &Backends) -> anyhow::Result<()> {
    let mut pg = match PgConnection::connect_with(&backends.database).await {
        Ok(pg) => pg,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_DATABASE) => {
            return Ok(());
        }
        Err(e) => return Err(e).context("PostgreSQL is unreachable"),
    };
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        backends.namespace.as_str()
    )))
    .execute(&mut pg)
    .await
    .context("dropping the schema")?;
    pg.close().await?;
    Ok(())
}

/// SQLSTATE `invalid_catalog_name`: the database does not exist.
const UNDEFINED_DATABASE: &str = "3D000";
