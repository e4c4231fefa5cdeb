//! A queue consumer loop: take a delivery, hand it to its handler, which settles it; deliveries
//! on one queue are handled one at a time, in order. A lost channel closes the connection so
//! the supervisor ([`crate::connect::amqp::supervise`]) rebuilds every consumer on a new one.
//!
//! Also the handlers' building blocks: [`hold`] (retry in place while a dependency is down),
//! [`settle`] (ack) and [`requeue`].

use std::{future::Future, sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use futures_util::{FutureExt, StreamExt};
use lapin::{
    Acker, Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use tokio_util::sync::CancellationToken;

/// A queue being consumed.
pub struct Source {
    /// The consumer's own channel (also publishes, with confirms).
    pub channel: Channel,
    /// The consumer.
    pub consumer: Consumer,
    /// The connection, closed if this loop dies so the supervisor rebuilds everything.
    pub connection: Arc<Connection>,
}

impl Source {
    /// Opens a channel on `connection` (in confirm mode, so the handler can publish with
    /// confirms), lets the broker push up to `prefetch` unacknowledged deliveries, and starts
    /// consuming `queue`.
    pub async fn open(
        connection: &Arc<Connection>,
        queue: &str,
        prefetch: u16,
    ) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            channel,
            consumer,
            connection: Arc::clone(connection),
        })
    }
}

/// What to do with each delivery of a queue.
pub trait DeliveryHandler: Send + Sync + 'static {
    /// Handles and settles one delivery; false if shutdown interrupted it (it stays
    /// unacknowledged and returns to its queue when the channel closes).
    fn on_delivery(
        &self,
        channel: &Channel,
        delivery: Delivery,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = bool> + Send;

    /// Handles deliveries that arrived together, in order; by default one at a time. False if
    /// shutdown interrupted it (what is not settled returns to the queue).
    fn on_batch(
        &self,
        channel: &Channel,
        batch: Vec<Delivery>,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = bool> + Send {
        async move {
            for delivery in batch {
                if !self.on_delivery(channel, delivery, shutdown).await {
                    return false;
                }
            }
            true
        }
    }
}

/// Most deliveries handled together (taken only from what the broker already pushed, so a
/// batch never waits for more).
pub const MAX_BATCH: usize = 64;

/// Runs the loop until `shutdown` fires or the channel is gone for good. Deliveries the broker
/// has already pushed are handed over together (up to [`MAX_BATCH`]), never waiting for more.
pub async fn run<H: DeliveryHandler>(mut source: Source, handler: H, shutdown: CancellationToken) {
    let mut carried = None;
    loop {
        let next = match carried.take() {
            Some(next) => next,
            None => tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = source.consumer.next() => next,
            },
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => match source.channel.wait_for_recovery(error).await {
                Ok(()) => continue,
                Err(error) => {
                    tracing::warn!(error = %error, "Consumer channel lost; asking for a new connection.");
                    let _ = source.connection.close(320, "consumer lost".into()).await;
                    return;
                }
            },
            None => {
                if !shutdown.is_cancelled() {
                    tracing::warn!(
                        "Consumer cancelled by the broker; asking for a new connection."
                    );
                    let _ = source
                        .connection
                        .close(320, "consumer cancelled".into())
                        .await;
                }
                return;
            }
        };
        let mut batch = vec![delivery];
        while batch.len() < MAX_BATCH {
            match source.consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(delivery),
                Some(other) => {
                    carried = Some(other);
                    break;
                }
                None => break,
            }
        }
        let handled = if batch.len() == 1 {
            let delivery = batch.pop().expect("one delivery");
            handler
                .on_delivery(&source.channel, delivery, &shutdown)
                .await
        } else {
            handler.on_batch(&source.channel, batch, &shutdown).await
        };
        if !handled {
            break;
        }
    }
    let _ = source.channel.close(200, "shutting down".into()).await;
}

/// Retries `attempt` in place while it fails for a dependency outage; `None` if shutdown came
/// first. Backoff: exponential with jitter, 100 ms to 2 s, no limit.
pub async fn hold<T, E, F, Fut>(
    attempt: F,
    is_outage: impl Fn(&E) -> bool,
    what: &str,
    shutdown: &CancellationToken,
) -> Option<Result<T, E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let held = attempt
        .retry(
            ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(2))
                .without_max_times(),
        )
        .when(is_outage)
        .notify(|error, delay| {
            metrics::counter!("pipeline_holds_total").increment(1);
            tracing::warn!(what, error = %error, retry_in = ?delay, "Holding the message until the dependency is back.");
        });
    tokio::select! {
        result = held => Some(result),
        () = shutdown.cancelled() => None,
    }
}

/// Returns a delivery to its queue at once (its effect is committed; it comes back as a
/// duplicate to finish what is left, such as publishing its downstream events).
pub async fn requeue(acker: Acker) {
    let options = lapin::options::BasicNackOptions {
        requeue: true,
        ..lapin::options::BasicNackOptions::default()
    };
    if let Err(e) = acker.nack(options).await {
        tracing::debug!(error = %e, "Nack failed; the message will be redelivered when the channel closes.");
    }
}

/// Acknowledges a delivery, consuming its acker so it cannot be settled twice. A failed ack
/// (channel gone) means the broker will redeliver, and the inbox makes that harmless.
pub async fn settle(acker: Acker) {
    if let Err(e) = acker.ack(BasicAckOptions::default()).await {
        tracing::debug!(error = %e, "Ack failed; the message will be redelivered and deduplicated.");
    }
}
