//! Publishing product updates and orders to the ingest exchange, and image jobs to the
//! imager's queue, with publisher confirms: a
//! message counts as sent only when the broker has confirmed it (for a quorum queue: written to
//! a majority of nodes).
//!
//! Several channels share the load, each with many confirms in flight at once; a request waits
//! only for its own confirm, never for a batch.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::ShortString,
};
use shared::{
    connect::amqp::Broker,
    contract::{IMAGE_JOB_TYPE, ImageJob, IngestMessage},
    topology::Topology,
    trace::{self, Messaging, Operation},
};

/// Why a publish did not end in a confirm; the caller answers 503 for each.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker right now.
    #[error("not connected to the broker")]
    NotConnected,
    /// The broker refused the message (negative confirm).
    #[error("the broker refused the message")]
    Nacked,
    /// The broker could not route the message to its queue.
    #[error("the message could not be routed to its queue")]
    Unroutable,
    /// No confirm came within the timeout; the message may or may not be in the broker.
    #[error("no confirm within {0:?}")]
    Timeout(Duration),
    /// The channel or connection failed on the way.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

impl PublishError {
    /// True when the message may be in the broker all the same (no confirm came, or the
    /// connection failed after the publish): the outcome is unknown, not a failure.
    pub fn is_unclear(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Broker(_))
    }
}

/// The publishing channels on one connection.
pub struct Channels {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Channels {
    /// Declares the topology and opens `count` channels in confirm mode on `connection`.
    pub async fn open(
        connection: &Connection,
        topology: &Topology,
        count: u16,
    ) -> anyhow::Result<Self> {
        topology.declare(connection).await?;
        let mut channels = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        Ok(Self {
            channels,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[i]
    }
}

/// Publishes ingest messages (product updates and orders) to their product's shard.
#[derive(Clone)]
pub struct Publisher {
    broker: Broker<Channels>,
    topology: Arc<Topology>,
    confirm_timeout: Duration,
}

impl Publisher {
    /// A publisher over the supervised `broker`.
    pub fn new(
        broker: Broker<Channels>,
        topology: Arc<Topology>,
        confirm_timeout: Duration,
    ) -> Self {
        Self {
            broker,
            topology,
            confirm_timeout,
        }
    }

    /// True when connected to the broker.
    pub fn is_up(&self) -> bool {
        self.broker.is_up()
    }

    /// Publishes `message` as a persistent message to its product's shard and waits for the
    /// broker's confirm. `Ok` means the message is durably in its queue.
    pub async fn publish<M: IngestMessage>(
        &self,
        message: &M,
        parent: &opentelemetry::Context,
    ) -> Result<(), PublishError> {
        let shard = self.topology.shard_for(message.shard_key());
        let (exchange, routing_key) = (
            self.topology.ingest_exchange(),
            Topology::routing_key(shard),
        );
        let event_id = message.event_id().as_str();
        let span = trace::messaging(
            "gateway",
            &Messaging {
                operation: Operation::Send,
                exchange: &exchange,
                routing_key: &routing_key,
                queue: None,
                message_id: event_id,
                event_id,
            },
            parent,
        );
        let published = self.publish_traced(message, shard, span.context()).await;
        if let Err(e) = &published {
            span.fail(e);
        }
        published
    }

    async fn publish_traced<M: IngestMessage>(
        &self,
        message: &M,
        shard: u16,
        span: &opentelemetry::Context,
    ) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(message).expect("an ingest message always serialises");
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(message.event_id().as_str()))
            .with_type(M::KIND.as_str().into())
            .with_timestamp(u64::try_from(message.received_at().unix_timestamp()).unwrap_or(0));
        let (exchange, routing_key) = (
            self.topology.ingest_exchange(),
            Topology::routing_key(shard),
        );
        self.confirmed(&exchange, &routing_key, &payload, properties, span)
            .await
    }

    /// Queues `job` for the imager (persistent, on `{ns}.images`) and waits for the broker's
    /// confirm.
    pub async fn publish_job(
        &self,
        job: &ImageJob,
        parent: &opentelemetry::Context,
    ) -> Result<(), PublishError> {
        let queue = self.topology.images_queue();
        let message_id = job.message_id();
        let span = trace::messaging(
            "gateway",
            &Messaging {
                operation: Operation::Send,
                exchange: "",
                routing_key: &queue,
                queue: None,
                message_id: &message_id,
                event_id: &message_id,
            },
            parent,
        );
        let payload = serde_json::to_vec(job).expect("an image job always serialises");
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(message_id.as_str()))
            .with_type(IMAGE_JOB_TYPE.into());
        let published = self
            .confirmed("", &queue, &payload, properties, span.context())
            .await;
        if let Err(e) = &published {
            span.fail(e);
        }
        published
    }

    /// Publishes `payload` persistently as JSON with `properties` (and the trace context of
    /// `span`), and waits for the confirm.
    async fn confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
        span: &opentelemetry::Context,
    ) -> Result<(), PublishError> {
        let session = self.broker.session().ok_or(PublishError::NotConnected)?;
        let properties = properties
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_app_id("gateway".into());
        let properties = trace::inject(span, properties);
        let started = Instant::now();
        let confirm = async {
            let pending = session
                .value
                .pick()
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    payload,
                    properties,
                )
                .await?;
            pending.await.map_err(PublishError::from)
        };
        let confirmation = tokio::time::timeout(self.confirm_timeout, confirm)
            .await
            .map_err(|_| PublishError::Timeout(self.confirm_timeout))??;
        metrics::histogram!(shared::metric::PUBLISH_CONFIRM_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            Confirmation::NotRequested => Err(PublishError::Nacked),
        }
    }
}
