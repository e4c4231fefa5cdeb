//! The consumer loop of one queue on one channel: take what the broker pushed, hand it to the
//! handler, until shutdown or until the channel or consumer is gone; then say why it ended.

use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use tokio_util::sync::CancellationToken;

use super::{Consuming, DeliveryHandler};

/// A queue being consumed.
pub struct Source {
    /// The consumer's own channel (also publishes, with confirms).
    pub channel: Channel,
    /// The consumer.
    pub consumer: Consumer,
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
        Ok(Self { channel, consumer })
    }
}

/// Why a consumer loop ended.
#[derive(Debug)]
pub enum Ended {
    /// Shutdown was asked for (what was in hand is settled or left to return to the queue).
    Shutdown,
    /// The broker cancelled the consumer (its queue was deleted, say).
    Cancelled,
    /// The channel failed and did not recover.
    Lost(lapin::Error),
}

/// Most deliveries handled together (taken only from what the broker already pushed, so a
/// batch never waits for more).
pub const MAX_BATCH: usize = 64;

/// Runs the loop until `shutdown` fires or the consumer is gone. Deliveries the broker has
/// already pushed are handed over together (up to [`MAX_BATCH`]), never waiting for more.
/// The channel is left open: whoever supervises the loop closes it, which returns what was not
/// acknowledged to the queue.
pub async fn run<H: DeliveryHandler>(
    mut source: Source,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Ended {
    let mut carried = None;
    loop {
        let next = match carried.take() {
            Some(next) => next,
            None => tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ended::Shutdown,
                next = source.consumer.next() => next,
            },
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => match source.channel.wait_for_recovery(error).await {
                Ok(()) => continue,
                Err(error) => return Ended::Lost(error),
            },
            None if shutdown.is_cancelled() => return Ended::Shutdown,
            None => return Ended::Cancelled,
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
        let at = Consuming {
            channel: &source.channel,
            shutdown: &shutdown,
        };
        let handled = if batch.len() == 1 {
            handler
                .on_delivery(batch.pop().expect("one delivery"), at)
                .await
        } else {
            handler.on_batch(batch, at).await
        };
        if !handled {
            return Ended::Shutdown;
        }
    }
}
