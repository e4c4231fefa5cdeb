//! RabbitMQ for tests: a plain AMQP client to look into queues, declare a namespace's topology
//! and publish straight to the broker, past the services.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use shared::{config::Backends, topology::Topology};

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
        consume(&channel, queue.name().as_str()).await
    }

    /// The next message `consumer` gets within `within` (acknowledged), as JSON, its message id
    /// (a downstream event's id) beside the body as `id`.
    pub async fn next_json(consumer: &mut Consumer, within: Duration) -> serde_json::Value {
        let delivery = Self::next(consumer, within).await;
        let mut message: serde_json::Value = serde_json::from_slice(&delivery.data).expect("JSON");
        message["id"] = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .into();
        message
    }

    /// The next message `consumer` gets within `within`, acknowledged, as it was sent.
    pub async fn next(consumer: &mut Consumer, within: Duration) -> Delivery {
        let delivery = tokio::time::timeout(within, consumer.next())
            .await
            .expect("a message in time")
            .expect("the consumer is open")
            .expect("a delivery");
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        delivery
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
        let mut consumer = consume(&channel, queue).await;
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

/// A consumer of `queue` on `channel`, with the broker's default options (its deliveries to be
/// acknowledged).
pub async fn consume(channel: &Channel, queue: &str) -> Consumer {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}
