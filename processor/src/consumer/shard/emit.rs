//! The shard handler's second stage and its side of the trace: the `process` span of each
//! delivery; publishing the downstream events of an applied batch, each in the trace of its
//! source, and acknowledging the batch once they are confirmed.

use std::{collections::HashMap, time::Instant};

use lapin::Channel;
use opentelemetry::Context;
use shared::{
    announce::send_announcement,
    consume::{Received, Run},
    contract::EventKey,
    dead_letter::{self, Poison, Reason},
    trace::{self, Messaging, Operation, Traced},
};

use super::ShardHandler;
use crate::{
    downstream::{self, Pending},
    stage::{self, Stage},
};

/// An applied event: its identity and `process` span (the parent of what it causes).
pub(super) type Source = (EventKey, Traced);

/// The second stage of an applied batch: publish its downstream events, then acknowledge it.
pub(super) struct Settling {
    /// The handler (its topology and database).
    pub shard: ShardHandler,
    /// The consumer's channel (in confirm mode).
    pub channel: Channel,
    /// The batch's deliveries, settled together.
    pub run: Run,
    /// The batch's events.
    pub sources: Vec<Source>,
    /// The events that were applied before: what their inbox rows keep is published again (a
    /// crash between commit and publish may have kept it from the broker).
    pub duplicates: Vec<EventKey>,
    /// The downstream events the batch caused.
    pub emitted: Vec<Pending>,
}

impl Settling {
    /// Publishes the downstream events (all sent, then their confirms awaited), then
    /// acknowledges the batch (one `multiple` ack when nothing else before it on the
    /// channel is unsettled: [`Run`]). If the events are not confirmed the batch goes back to
    /// its queue and, a duplicate by then, publishes them when it returns.
    pub async fn run(self) {
        let publishing = Instant::now();
        let published = self.publish().await;
        stage::record(Stage::Publish, publishing.elapsed());
        let settling = Instant::now();
        match published {
            Ok(()) => self.run.settle().await,
            Err(e) => {
                for (_, span) in &self.sources {
                    span.fail(&e);
                }
                tracing::warn!(error = %e, "Downstream events not published yet; the batch comes back to publish them.");
                self.run.requeue().await;
            }
        }
        stage::record(Stage::Settle, settling.elapsed());
    }

    /// Sends the batch's downstream events and those its duplicates caused when first applied,
    /// each in the trace of its source, and waits for every confirm. A kept announcement this
    /// version cannot read is dead-lettered (`unparseable`) rather than skipped.
    async fn publish(&self) -> anyhow::Result<()> {
        let pool = self.shard.deps.database.pool();
        let (left, unreadable) = if self.duplicates.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            downstream::pending(pool, &self.duplicates).await?
        };
        if self.emitted.is_empty() && left.is_empty() && unreadable.is_empty() {
            return Ok(());
        }
        let topology = &self.shard.topology;
        let parents: HashMap<&EventKey, &Traced> =
            self.sources.iter().map(|(key, span)| (key, span)).collect();
        let mut sent = Vec::with_capacity(self.emitted.len() + left.len());
        for event in self.emitted.iter().chain(&left) {
            let parent = parents
                .get(&event.source)
                .map_or_else(Context::new, |span| span.context().clone());
            let announced = (&event.announcement, event.body.as_bytes());
            let sending =
                send_announcement(&self.channel, topology, "processor", announced, &parent);
            sent.push(sending.await?);
        }
        for sent in sent {
            let kind = sent.confirmed().await?;
            metrics::counter!(shared::metric::DOWNSTREAM_EVENTS_TOTAL, "type" => kind).increment(1);
        }
        for row in &unreadable {
            self.shard.set_aside_unreadable(&self.channel, row).await?;
        }
        Ok(())
    }
}

impl ShardHandler {
    /// The `process` span of a delivery, under the trace its headers carry.
    pub(super) fn span(&self, delivery: &Received) -> Traced {
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map_or("", |m| m.as_str());
        let queue = format!(
            "{}.{}",
            self.topology.ingest_exchange(),
            delivery.routing_key.as_str()
        );
        trace::messaging(
            "processor",
            &Messaging {
                operation: Operation::Process,
                exchange: delivery.exchange.as_str(),
                routing_key: delivery.routing_key.as_str(),
                queue: Some(&queue),
                message_id: id,
                event_id: id,
            },
            &trace::extract(&delivery.properties),
        )
    }

    /// Dead-letters a kept announcement this version cannot read.
    pub(super) async fn set_aside_unreadable(
        &self,
        channel: &Channel,
        row: &downstream::Unreadable,
    ) -> anyhow::Result<()> {
        tracing::error!(event_id = %row.id, error = %row.error, "A kept downstream event cannot be read; dead-lettering it.");
        let properties = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(row.id.as_str().into());
        let poison = Poison {
            data: &row.body,
            properties: &properties,
            routing_key: &row.routing_key,
            // The name a dead letter of a downstream event has always had, so a replay sends it
            // to the events exchange (`dead_letters::replay`).
            queue: "outbox",
            attempts: 0,
        };
        let sender = dead_letter::Sender {
            channel,
            topology: &self.topology,
            service: "processor",
        };
        sender
            .set_aside(poison, Reason::Unparseable, &row.error)
            .await
    }
}
