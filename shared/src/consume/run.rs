//! The consumer loop of one queue on one channel: take what the broker pushed, hand it to the
//! handler, until shutdown or until the channel or consumer is gone; then say why it ended.
//! What the handler leaves for later runs beside the loop, in order.

use std::{sync::Arc, time::Duration};

use futures_util::{FutureExt, StreamExt};
use lapin::{
    Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use tokio_util::sync::CancellationToken;

use super::{Consuming, DeliveryHandler, Later, Ledger};

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

    /// Stops the broker pushing more: cancels the consumer and waits (up to [`CANCEL_WAIT`])
    /// for the broker's answer. A consumer dropped while still active is cancelled by lapin on
    /// its own, later; if the channel has started closing by then, lapin takes the failed
    /// cancel for an error of the whole connection.
    async fn cancel(&self) {
        if self.channel.status().connected() {
            let cancel = self
                .channel
                .basic_cancel(self.consumer.tag(), BasicCancelOptions::default());
            let _ = tokio::time::timeout(CANCEL_WAIT, cancel).await;
        }
    }
}

/// How long a consumer stopped at shutdown waits for the broker to confirm its cancel: a broker
/// that stopped answering leaves it to lapin.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

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

/// Most deliveries handled together.
pub const MAX_BATCH: usize = 128;

/// How long a busy queue waits to fill a batch: only when more than one delivery was already
/// waiting, so a lone delivery at low load is handled at once.
pub const LINGER: Duration = Duration::from_millis(2);

/// Runs the loop until `shutdown` fires or the consumer is gone. Each delivery enters the
/// channel's [`Ledger`] as it is handed over; deliveries the broker has already pushed are
/// handed over together (up to [`MAX_BATCH`]); when more than one was
/// waiting, the batch lingers up to [`LINGER`] for more. What a handler leaves for later
/// ([`Later`]) runs in order beside the loop, and is finished before this returns. The channel
/// is left open: whoever supervises the loop closes it, which returns what was not
/// acknowledged to the queue.
pub async fn run<H: DeliveryHandler>(
    mut source: Source,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Ended {
    let (later, second_stage) = Later::new();
    let ledger = Ledger::default();
    let first_stage = async move {
        let ended = hand_over(&mut source, &*handler, &ledger, &later, &shutdown).await;
        if matches!(ended, Ended::Shutdown) {
            source.cancel().await;
        }
        ended
    };
    let (ended, ()) = tokio::join!(first_stage, second_stage);
    ended
}

/// Hands the consumer's deliveries to `handler`, a batch at a time, until `shutdown` fires, the
/// handler stops, or the consumer is gone.
async fn hand_over<H: DeliveryHandler>(
    source: &mut Source,
    handler: &H,
    ledger: &Ledger,
    later: &Later,
    shutdown: &CancellationToken,
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
        let (batch, rest) = fill(&mut source.consumer, delivery).await;
        let batch = ledger.receive_all(batch);
        carried = rest;
        let at = Consuming {
            channel: &source.channel,
            shutdown,
            later,
        };
        if !handler.on_batch(batch, at).await {
            return Ended::Shutdown;
        }
    }
}

/// What the consumer yields next: a delivery, a channel error, or its end.
type Next = Option<lapin::Result<Delivery>>;

/// A batch starting with `first`: what the broker already pushed, then, if that was more than
/// one, what arrives within [`LINGER`]; up to [`MAX_BATCH`]. Anything but a delivery ends the
/// batch and is given back.
async fn fill(consumer: &mut Consumer, first: Delivery) -> (Vec<Delivery>, Option<Next>) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match consumer.next().now_or_never() {
            Some(Some(Ok(delivery))) => batch.push(delivery),
            Some(other) => return (batch, Some(other)),
            None => break,
        }
    }
    if batch.len() > 1 {
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, consumer.next()).await {
                Ok(Some(Ok(delivery))) => batch.push(delivery),
                Ok(other) => return (batch, Some(other)),
                Err(_) => break,
            }
        }
    }
    (batch, None)
}
