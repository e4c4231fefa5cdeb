//! Which downstream events reach the notifier's queue: the broker routes to it only the types
//! some subscription wants (enabled or disabled, not deleted), so an event nobody subscribed to
//! costs the notifier nothing; the broker drops it.
//!
//! [`Bindings::reconcile`] makes the queue's bindings match the subscriptions: on every broker
//! connection, after a subscription is created or deleted (before the answer, so events after
//! it reach the queue), and every [`EVERY`] (another replica's changes, or a reconciliation
//! the broker was not there for). Reconciliations are serialised across replicas by a
//! PostgreSQL advisory lock held while the bindings change, so the last one always acts on
//! every committed change.

use std::{collections::HashSet, sync::Arc, time::Duration};

use anyhow::Context;
use lapin::{Connection, options::QueueBindOptions, types::FieldTable};
use shared::{
    connect::{amqp::Broker, postgres::Database},
    contract::EventType,
    topology::Topology,
};
use tokio_util::sync::CancellationToken;

use crate::store::subscriptions;

/// How often the bindings are reconciled without a change here.
pub const EVERY: Duration = Duration::from_secs(5);

/// The notifier queue's bindings, kept in step with the subscriptions.
#[derive(Clone)]
pub struct Bindings {
    /// Where the subscriptions are.
    pub database: Database,
    /// The broker's current connection.
    pub broker: Broker<()>,
    /// The queue and the exchange.
    pub topology: Arc<Topology>,
}

impl Bindings {
    /// Binds the notifier queue to each type some subscription wants and unbinds the others
    /// (and the catch-all `#` of earlier versions).
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        let session = self.broker.session().context("RabbitMQ is not connected")?;
        reconcile(&self.database, &session.connection, &self.topology).await
    }

    /// Reconciles once the schema is migrated, then every [`EVERY`] until `stopping` fires.
    pub async fn keep(self, stopping: CancellationToken) {
        tokio::select! {
            () = stopping.cancelled() => return,
            () = self.database.migrated() => {}
        }
        if let Err(e) = self.reconcile().await {
            tracing::debug!(error = %e, "The notifier queue's bindings were not reconciled; trying again later.");
        }
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            if let Err(e) = self.reconcile().await {
                tracing::debug!(error = %e, "The notifier queue's bindings were not reconciled; trying again later.");
            }
        }
    }
}

/// [`Bindings::reconcile`] on `connection`.
pub async fn reconcile(
    database: &Database,
    connection: &Connection,
    topology: &Topology,
) -> anyhow::Result<()> {
    let mut tx = database.ready()?.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(topology.notifier_queue())
        .execute(&mut *tx)
        .await?;
    let wanted: HashSet<EventType> = subscriptions::wanted(&mut tx).await?;
    let channel = connection.create_channel().await?;
    let (queue, exchange) = (topology.notifier_queue(), topology.events_exchange());
    for kind in EventType::ALL {
        let key = kind.as_str();
        if wanted.contains(&kind) {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        } else {
            unbind(&channel, &queue, &exchange, key).await?;
        }
    }
    unbind(&channel, &queue, &exchange, "#").await?;
    channel.close(200, "bindings reconciled".into()).await?;
    tx.commit().await?;
    Ok(())
}

async fn unbind(
    channel: &lapin::Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> lapin::Result<()> {
    channel
        .queue_unbind(
            queue.into(),
            exchange.into(),
            key.into(),
            FieldTable::default(),
        )
        .await
}
