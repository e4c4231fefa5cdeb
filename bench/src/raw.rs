//! The ceiling: the broker alone, with the same client library, message size, persistence and
//! queue type as the pipeline: publish with confirms (many in flight) and consume with acks.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

/// A test of the broker: which broker, the queue or exchange it declares (and deletes after),
/// the message it sends, and for how long.
pub struct Test<'a> {
    pub uri: lapin::uri::AMQPUri,
    pub name: String,
    pub payload: &'a [u8],
    pub duration: Duration,
}

/// What a test of the broker measured.
pub struct Measured {
    /// Messages per second over the test's duration.
    pub rate: f64,
    /// Every message it handled, those still in flight at the deadline included: what the CPU
    /// spent over the whole test is divided by.
    pub messages: u64,
}

/// Publishers, and confirms each keeps in flight.
pub const PUBLISHERS: usize = 4;
pub const IN_FLIGHT: usize = 128;

/// Publishes persistent `payload`s to `exchange` with `routing_key` until `deadline`, from
/// [`PUBLISHERS`] channels with up to [`IN_FLIGHT`] confirms in flight each, as fast as the
/// confirms allow or, with a `rate`, that many a second in all; how many were confirmed.
async fn publish_until(
    connection: &Connection,
    (exchange, routing_key): (&str, &str),
    payload: &[u8],
    deadline: Instant,
    rate: Option<u64>,
) -> anyhow::Result<u64> {
    // The time between two messages of one publisher.
    let pace = rate.map(|rate| Duration::from_secs_f64(PUBLISHERS as f64 / rate.max(1) as f64));
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (payload, exchange, key) = (
            payload.to_vec(),
            exchange.to_owned(),
            routing_key.to_owned(),
        );
        publishers.push(tokio::spawn(async move {
            let (mut pending, mut confirmed) = (FuturesUnordered::new(), 0u64);
            let mut due = tokio::time::Instant::now();
            while Instant::now() < deadline {
                let room = pending.len() < IN_FLIGHT;
                if room && pace.is_none_or(|_| tokio::time::Instant::now() >= due) {
                    let confirm = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            key.as_str().into(),
                            BasicPublishOptions::default(),
                            &payload,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await?;
                    pending.push(confirm);
                    due += pace.unwrap_or_default();
                    continue;
                }
                // A confirm, or (paced, with room) the next message's time.
                tokio::select! {
                    Some(done) = pending.next(), if !pending.is_empty() => {
                        done?;
                        confirmed += 1;
                    }
                    () = tokio::time::sleep_until(due), if pace.is_some() && room => {}
                }
            }
            while let Some(done) = pending.next().await {
                done?;
                confirmed += 1;
            }
            anyhow::Ok(confirmed)
        }));
    }
    let mut confirmed = 0;
    for publisher in publishers {
        confirmed += publisher.await?.context("publishing")?;
    }
    Ok(confirmed)
}

/// Closes `connection` normally, saying `reason`.
async fn close(connection: &Connection, reason: &str) -> anyhow::Result<()> {
    connection
        .close(200, reason.into())
        .await
        .context("closing")
}

/// Messages per second published with confirms to a topic exchange no queue is bound to, over
/// the test's duration: what the broker does for a downstream event nobody subscribed to.
pub async fn unrouted(test: Test<'_>) -> anyhow::Result<Measured> {
    let (exchange, payload, duration) = (test.name.as_str(), test.payload, test.duration);
    let uri = test.uri.clone();
    let connection = Connection::connect_uri(uri, ConnectionProperties::default()).await?;
    let setup = connection.create_channel().await?;
    setup
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let published = publish_until(
        &connection,
        (exchange, "product.updated"),
        payload,
        started + duration,
        None,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    setup
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await
        .context("deleting the exchange")?;
    close(&connection, "unrouted done").await?;
    drop(setup);
    Ok(Measured {
        rate: published as f64 / seconds,
        messages: published,
    })
}

/// Messages per second through publish-with-confirms and consume-with-acks on a quorum queue,
/// over the test's duration, with persistent messages: those consumed by the deadline. The
/// messages published by then and consumed after it count among those handled. With a `rate`,
/// that many messages a second are offered, as a pipeline running at that rate sends them.
pub async fn round_trip(test: Test<'_>, rate: Option<u64>) -> anyhow::Result<Measured> {
    let (queue, payload, duration) = (test.name.as_str(), test.payload, test.duration);
    let uri = test.uri.clone();
    let connection = Connection::connect_uri(uri.clone(), ConnectionProperties::default()).await?;
    let setup = connection.create_channel().await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    setup
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;

    let connection = std::sync::Arc::new(connection);
    // The channel is held to the end, so the consumer's channel stays open while it runs.
    let shared::consume::Source {
        channel: _consuming,
        mut consumer,
    } = shared::consume::Source::open(&connection, queue, 512).await?;
    let started = Instant::now();
    let deadline = started + duration;
    // The consumer is handed back, not dropped: dropping it cancels it, and a cancel racing
    // the queue's deletion gets an answer the client does not expect, which closes the
    // connection. It is dropped once the connection is closed.
    let consuming = tokio::spawn(async move {
        let (mut consumed, mut in_time) = (0u64, 0u64);
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
        {
            delivery.acker.ack(BasicAckOptions::default()).await?;
            consumed += 1;
            if Instant::now() <= deadline {
                in_time += 1;
            }
        }
        anyhow::Ok(([consumed, in_time], consumer))
    });

    let published = publish_until(&connection, ("", queue), payload, deadline, rate).await?;
    anyhow::ensure!(published > 0, "nothing was published");
    let ([consumed, in_time], consumer) = consuming.await?.context("consuming")?;
    close(&connection, "baseline done").await?;
    drop(consumer);
    let connection = Connection::connect_uri(uri, ConnectionProperties::default()).await?;
    // Held until the connection is closed: a channel dropped first is still closing then.
    let channel = connection.create_channel().await?;
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .context("deleting the queue")?;
    close(&connection, "baseline removed").await?;
    drop(channel);
    Ok(Measured {
        rate: in_time as f64 / duration.as_secs_f64(),
        messages: consumed,
    })
}
