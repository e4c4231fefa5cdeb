//! Announcing a downstream event: the one way a service publishes one to `{ns}.events` (the
//! processor its products' and orders' changes, the imager `product.images_ready`): with the
//! same properties (JSON, its id as the message id, its type as the type and the routing key,
//! the service as the app id), in a `send` span of its source's trace, confirmed.

use lapin::{BasicProperties, Channel};
use opentelemetry::Context;

use crate::{
    connect::amqp::{Routing, Unconfirmed, send},
    contract::Announcement,
    topology::Topology,
    trace::{self, Messaging, Operation, Traced},
};

/// An announcement sent, its confirm not read yet (several can be in flight).
pub struct Sent {
    span: Traced,
    unconfirmed: Unconfirmed,
    kind: &'static str,
}

impl Sent {
    /// Waits for the broker's confirm (the span fails if none comes); the event's type.
    pub async fn confirmed(self) -> anyhow::Result<&'static str> {
        match self.unconfirmed.confirmed().await {
            Ok(()) => Ok(self.kind),
            Err(e) => {
                self.span.fail(&e);
                Err(e)
            }
        }
    }
}

/// Sends `announcement`, as `body` (its [`Announcement::body`], made once by the caller: what
/// it keeps is what is sent), from `service` to the events exchange, in a `send` span under
/// `parent`; it may reach no queue (nobody subscribed to its type yet). Its confirm is read
/// with [`Sent::confirmed`].
pub async fn send_announcement(
    channel: &Channel,
    topology: &Topology,
    service: &'static str,
    (announcement, body): (&Announcement, &[u8]),
    parent: &Context,
) -> anyhow::Result<Sent> {
    let exchange = topology.events_exchange();
    let kind = announcement.event.event_type().as_str();
    let span = trace::messaging(
        service,
        &Messaging {
            operation: Operation::Send,
            exchange: &exchange,
            routing_key: kind,
            queue: None,
            message_id: announcement.id.as_str(),
            event_id: announcement.event.source_event_id().as_str(),
        },
        parent,
    );
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(announcement.id.as_str().into())
        .with_type(kind.into())
        .with_app_id(service.into());
    let properties = trace::inject(span.context(), properties);
    match send(
        channel,
        &exchange,
        kind,
        body,
        properties,
        Routing::Optional,
    )
    .await
    {
        Ok(unconfirmed) => Ok(Sent {
            span,
            unconfirmed,
            kind,
        }),
        Err(e) => {
            span.fail(&e);
            Err(e)
        }
    }
}
