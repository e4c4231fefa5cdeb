//! Consuming a queue: [`supervise`] keeps a consumer alive on the broker's current connection,
//! restarting it (with backoff, counted, logged once at ERROR) whatever ended it: a panic in its
//! handler, a channel error, a cancel from the broker; [`Consumers`] says which queues have a
//! live consumer, for `/ready`. The loop in [`run`] takes deliveries and hands them to a
//! [`DeliveryHandler`], which settles them, itself or in work it leaves for [`Later`];
//! deliveries on one queue are handled in order.
//!
//! Also the handlers' building blocks: [`hold`] (retry in place while a dependency is down),
//! and settling: a delivery in hand is a [`Received`] whose [`Pending`] right to settle exists
//! once ([`settle`], [`requeue`], or a [`Run`] settled together).

mod later;
mod run;
mod settle;
mod supervise;

use std::{future::Future, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use lapin::Channel;
use tokio_util::sync::CancellationToken;

pub use later::Later;
pub use run::{Ended, LINGER, MAX_BATCH, Source, run};
pub use settle::{Ledger, Pending, Received, Run, requeue, settle};
pub use supervise::{Consumers, supervise};

/// Where a handler's deliveries come from: the consumer's channel (in confirm mode, for the
/// handler's own publishes), the signal to stop, and the consumer's second stage.
#[derive(Clone, Copy)]
pub struct Consuming<'a> {
    /// The consumer's channel.
    pub channel: &'a Channel,
    /// Cancelled when the service stops.
    pub shutdown: &'a CancellationToken,
    /// Where the handler leaves what may finish while it takes the next deliveries.
    pub later: &'a Later,
}

/// What to do with each delivery of a queue.
pub trait DeliveryHandler: Send + Sync + 'static {
    /// Handles and settles one delivery; false if shutdown interrupted it (it stays
    /// unacknowledged and returns to its queue when the channel closes).
    fn on_delivery(&self, delivery: Received, at: Consuming) -> impl Future<Output = bool> + Send;

    /// Handles deliveries that arrived together, in order; by default one at a time. False if
    /// shutdown interrupted it (what is not settled returns to the queue).
    fn on_batch(&self, batch: Vec<Received>, at: Consuming) -> impl Future<Output = bool> + Send {
        async move {
            for delivery in batch {
                if !self.on_delivery(delivery, at).await {
                    return false;
                }
            }
            true
        }
    }
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
            metrics::counter!(crate::metric::HOLDS_TOTAL).increment(1);
            tracing::warn!(what, error = %error, retry_in = ?delay, "Holding the message until the dependency is back.");
        });
    tokio::select! {
        result = held => Some(result),
        () = shutdown.cancelled() => None,
    }
}
