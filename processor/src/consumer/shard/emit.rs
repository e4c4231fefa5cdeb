//! The shard handler's side of the trace and of downstream events: the `process` span of each
//! delivery, and publishing what the outbox holds for the events just applied, each in the
//! trace of its source.

use lapin::{Channel, message::Delivery};
use opentelemetry::Context;
use shared::{
    connect::amqp::{Routing, publish},
    contract::{Announcement, IngestKind},
    dead_letter::{self, Poison, Reason},
    trace::{self, Messaging, Operation, Traced},
};

/// An applied event whose downstream events are to be published: its kind, id and trace.
pub(super) type Source = (IngestKind, String, Context);

use super::ShardHandler;
use crate::downstream;

impl ShardHandler {
    /// The `process` span of a delivery, under the trace its headers carry.
    pub(super) fn span(&self, delivery: &Delivery) -> Traced {
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
                destination: &queue,
                routing_key: delivery.routing_key.as_str(),
                message_id: id,
                event_id: id,
            },
            &trace::extract(&delivery.properties),
        )
    }

    /// Publishes the downstream events the outbox still holds for `sources` (to the events
    /// exchange, each confirmed, each in the trace of its source), then forgets them. A row this
    /// version cannot read is dead-lettered (`unparseable`) rather than left there forever.
    pub(super) async fn emit(&self, channel: &Channel, sources: &[Source]) -> anyhow::Result<()> {
        let pool = self.deps.database.pool();
        let ids: Vec<(IngestKind, String)> = sources
            .iter()
            .map(|(kind, id, _)| (*kind, id.clone()))
            .collect();
        let (pending, unreadable) = downstream::pending(pool, &ids).await?;
        if pending.is_empty() && unreadable.is_empty() {
            return Ok(());
        }
        let exchange = self.topology.events_exchange();
        for event in &pending {
            let parent = sources
                .iter()
                .find(|(kind, id, _)| {
                    *kind == event.source_kind
                        && id.as_str() == event.announcement.event.source_event_id().as_str()
                })
                .map_or_else(Context::new, |(_, _, context)| context.clone());
            self.announce(channel, &exchange, &event.announcement, &parent)
                .await?;
        }
        for row in &unreadable {
            self.set_aside_unreadable(channel, row).await?;
        }
        let done: Vec<String> = pending
            .into_iter()
            .map(|e| e.announcement.id)
            .chain(unreadable.into_iter().map(|r| r.id))
            .collect();
        downstream::published(pool, &done).await?;
        Ok(())
    }

    /// Publishes one downstream event (confirmed), in a span under `parent`.
    async fn announce(
        &self,
        channel: &Channel,
        exchange: &str,
        announcement: &Announcement,
        parent: &Context,
    ) -> anyhow::Result<()> {
        let kind = announcement.event.event_type().as_str();
        let span = trace::messaging(
            "processor",
            &Messaging {
                operation: Operation::Send,
                destination: exchange,
                routing_key: kind,
                message_id: &announcement.id,
                event_id: announcement.event.source_event_id().as_str(),
            },
            parent,
        );
        let properties = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(announcement.id.as_str().into())
            .with_type(kind.into())
            .with_app_id("processor".into());
        let properties = trace::inject(span.context(), properties);
        if let Err(e) = publish(
            channel,
            exchange,
            kind,
            &announcement.body(),
            properties,
            Routing::Optional,
        )
        .await
        {
            span.fail(&e);
            return Err(e);
        }
        metrics::counter!(shared::metric::DOWNSTREAM_EVENTS_TOTAL, "type" => kind).increment(1);
        Ok(())
    }

    /// Dead-letters an outbox row this version cannot read.
    async fn set_aside_unreadable(
        &self,
        channel: &Channel,
        row: &downstream::Unreadable,
    ) -> anyhow::Result<()> {
        tracing::error!(event_id = %row.id, error = %row.error, "An outbox row cannot be read; dead-lettering it.");
        let properties = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(row.id.as_str().into());
        let poison = Poison {
            data: &row.body,
            properties: &properties,
            routing_key: &row.routing_key,
            queue: "outbox",
            attempts: 0,
        };
        dead_letter::set_aside(
            channel,
            &self.topology,
            "processor",
            poison,
            Reason::Unparseable,
            &row.error,
        )
        .await
    }
}
