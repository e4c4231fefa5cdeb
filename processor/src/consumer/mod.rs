//! The consumer loops: take a delivery, hand it to its handler, settle it. Deliveries on one
//! queue are handled one at a time, in order.
//!
//! On a shard ([`ShardHandler`]):
//! - Decoded and applied (or already applied, or stale): ack.
//! - Not decodable: dead-letter at once (`unparseable` / `invalid`), then ack.
//! - Refused by the database for good: dead-letter (`invalid`), then ack.
//! - Failed in a way that may pass later: publish to the next rung of the retry ladder (the
//!   attempt count in a header), then ack, so the shard is not blocked; past the last rung,
//!   dead-letter (`attempts_exhausted`).
//! - A dependency down: hold the delivery and retry in place with backoff and jitter; nothing
//!   else is taken from the shard meanwhile; no attempt is spent.
//! - Shutdown while holding: leave it unacknowledged; closing the channel returns it.
//!
//! On the dead-letter queue ([`Intake`]): record each dead letter in PostgreSQL, then ack.
//!
//! [`run`] owns the loop; [`shard`] and [`dead_letter_intake`] are the two handlers.

mod dead_letter_intake;
mod shard;

use std::{future::Future, sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::{Acker, Channel, Connection, Consumer, message::Delivery, options::BasicAckOptions};
use tokio_util::sync::CancellationToken;

pub use dead_letter_intake::Intake;
pub use shard::ShardHandler;

/// A queue being consumed.
pub struct Source {
    /// The consumer's own channel (also publishes, with confirms).
    pub channel: Channel,
    /// The consumer.
    pub consumer: Consumer,
    /// The connection, closed if this loop dies so the supervisor rebuilds everything.
    pub connection: Arc<Connection>,
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

/// Runs the loop until `shutdown` fires or the channel is gone for good.
pub async fn run<H: DeliveryHandler>(mut source: Source, handler: H, shutdown: CancellationToken) {
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = source.consumer.next() => next,
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
        if !handler
            .on_delivery(&source.channel, delivery, &shutdown)
            .await
        {
            break;
        }
    }
    let _ = source.channel.close(200, "shutting down".into()).await;
}

/// Retries `attempt` in place while it fails for a dependency outage; `None` if shutdown came
/// first. Backoff: exponential with jitter, 100 ms to 2 s, no limit.
pub(crate) async fn hold<T, E, F, Fut>(
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
pub(crate) async fn requeue(acker: Acker) {
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
pub(crate) async fn settle(acker: Acker) {
    if let Err(e) = acker.ack(BasicAckOptions::default()).await {
        tracing::debug!(error = %e, "Ack failed; the message will be redelivered and deduplicated.");
    }
}
