//! The shard handler's side of the trace and of downstream events: the `process` span of each
//! delivery, and publishing what the outbox holds for the events just applied, each in the
//! trace of its source.

use lapin::{Channel, message::Delivery};
use opentelemetry::Context;
use shared::{
    connect::amqp::publish_announcement,
    trace::{self, Messaging, Operation, Traced},
};

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
    /// exchange, each confirmed, each in the trace of its source), then forgets them.
    pub(super) async fn emit(
        &self,
        channel: &Channel,
        sources: &[(String, Context)],
    ) -> anyhow::Result<()> {
        let pool = self.deps.database.pool();
        let ids: Vec<String> = sources.iter().map(|(id, _)| id.clone()).collect();
        let pending = downstream::pending(pool, &ids).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let exchange = self.topology.events_exchange();
        for event in &pending {
            let parent = sources
                .iter()
                .find(|(id, _)| *id == event.source_event_id)
                .map_or_else(Context::new, |(_, context)| context.clone());
            let span = trace::messaging(
                "processor",
                &Messaging {
                    operation: Operation::Send,
                    destination: &exchange,
                    routing_key: event.kind,
                    message_id: &event.id,
                    event_id: &event.source_event_id,
                },
                &parent,
            );
            let properties = lapin::BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(event.id.as_str().into())
                .with_type(event.kind.into())
                .with_app_id("processor".into());
            let properties = trace::inject(span.context(), properties);
            let payload = serde_json::to_vec(&event.payload).expect("JSON always serialises");
            if let Err(e) =
                publish_announcement(channel, &exchange, event.kind, &payload, properties).await
            {
                span.fail(&e);
                return Err(e);
            }
            metrics::counter!("pipeline_downstream_events_total", "type" => event.kind)
                .increment(1);
        }
        let ids: Vec<String> = pending.into_iter().map(|e| e.id).collect();
        downstream::published(pool, &ids).await?;
        Ok(())
    }
}
