//! Keeping a queue's consumer alive: whatever ends it (a panic in its handler, a channel that
//! failed, a cancel from the broker), it is counted, logged, its channel closed (so what it
//! held returns to the queue) and started again with backoff. [`Consumers`] records which
//! queues have a live consumer right now.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{DeliveryHandler, Ended, Source, run};
use crate::connect::amqp::Broker;

/// The queues a service consumes, and whether each has a live consumer right now.
#[derive(Clone, Debug, Default)]
pub struct Consumers(Arc<Mutex<BTreeMap<String, bool>>>);

impl Consumers {
    fn set(&self, queue: &str, live: bool) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(queue.to_owned(), live);
        metrics::gauge!(crate::metric::CONSUMER_UP, "queue" => queue.to_owned()).set(if live {
            1.0
        } else {
            0.0
        });
    }

    /// Stops reporting `queue` (the service no longer consumes it): it leaves `/ready` and its
    /// `pipeline_consumer_up` reads 0, as on every replica that does not consume it.
    pub fn forget(&self, queue: &str) {
        self.set(queue, false);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(queue);
    }

    /// Every queue with whether its consumer is live, in name order.
    pub fn all(&self) -> Vec<(String, bool)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(queue, live)| (queue.clone(), *live))
            .collect()
    }
}

/// A consumer that stayed up this long restarts with the shortest delay if it ends.
const STABLE: Duration = Duration::from_secs(30);

/// How long a consumer told to stop may take to finish what it holds before it is aborted (its
/// deliveries then go back to the queue with its channel). A handler stuck on a backend the
/// network cut off would otherwise keep the queue's single active consumer, and every delivery
/// it prefetched, from the replica that takes the queue over.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Consumes `queue` with `handler` until `shutdown`, on whatever connection `broker` holds:
/// opens a channel and a consumer (prefetch `prefetch`), runs the loop in a task of its own,
/// and when it ends for any reason but shutdown counts it (`pipeline_consumer_restarts_total`
/// by reason), logs it (ERROR while the connection is up: the consumer died on its own; WARN
/// when the connection went with it, which the broker's supervisor already reports), closes
/// the channel so unacknowledged deliveries return to the queue, and starts again after a
/// backoff. `consumers` shows the queue as down from the moment its consumer ends until the
/// next one is consuming.
pub async fn supervise<T, H>(
    broker: Broker<T>,
    queue: String,
    prefetch: u16,
    handler: Arc<H>,
    consumers: Consumers,
    shutdown: CancellationToken,
) where
    T: Send + Sync + 'static,
    H: DeliveryHandler,
{
    consumers.set(&queue, false);
    let mut delays = crate::connect::amqp::delays();
    let mut restarting = false;
    loop {
        let Some(session) = broker.connected(&shutdown).await else {
            return;
        };
        let source = match Source::open(&session.connection, &queue, prefetch).await {
            Ok(source) => source,
            Err(error) => {
                tracing::warn!(queue = %queue, error = %error, "Cannot start consuming; retrying.");
                // A lost connection is waited for (without delay once it is back); anything
                // else (the queue missing, say) is retried with backoff.
                if session.connection.status().connected() && !pause(&mut delays, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let channel = source.channel.clone();
        consumers.set(&queue, true);
        if restarting {
            tracing::info!(queue = %queue, "Consumer restarted.");
        }
        let started = tokio::time::Instant::now();
        let mut task = tokio::spawn(run(source, Arc::clone(&handler), shutdown.clone()));
        // A consumer waiting on a connection its supervisor has replaced would wait for
        // lapin to give up on it: stop it and follow the new connection at once.
        let ended = tokio::select! {
            ended = &mut task => ended,
            () = broker.replaced(&session) => {
                task.abort();
                task.await
            }
            () = overdue(&shutdown) => {
                tracing::warn!(queue = %queue, grace = ?STOP_GRACE, "Consumer did not stop in time; aborted, what it held goes back to the queue.");
                task.abort();
                task.await
            }
        };
        consumers.set(&queue, false);
        // Whatever the loop held unacknowledged goes back to the queue.
        let _ = channel.close(200, "consumer ended".into()).await;
        if shutdown.is_cancelled() {
            return;
        }
        let (reason, detail) = why(&ended);
        metrics::counter!(crate::metric::CONSUMER_RESTARTS_TOTAL, "reason" => reason).increment(1);
        restarting = true;
        if started.elapsed() >= STABLE {
            delays = crate::connect::amqp::delays();
        }
        if session.connection.status().connected() {
            tracing::error!(queue = %queue, reason, error = %detail, "Consumer ended; restarting it.");
            if !pause(&mut delays, &shutdown).await {
                return;
            }
        } else {
            // The broker's supervisor reports the connection; the consumer follows it back.
            tracing::warn!(queue = %queue, reason, error = %detail, "Consumer ended with its connection; restarting it when the broker is back.");
        }
    }
}

/// Why a consumer's loop ended, as its restart is counted (`reason`) and logged (the error).
fn why(ended: &Result<Ended, tokio::task::JoinError>) -> (&'static str, String) {
    match ended {
        Ok(Ended::Shutdown) => ("stopped", String::new()),
        Ok(Ended::Cancelled) => ("cancelled", String::new()),
        Ok(Ended::Lost(error)) => ("channel_lost", error.to_string()),
        Err(join) if join.is_panic() => ("panic", join.to_string()),
        Err(join) => ("connection_replaced", join.to_string()),
    }
}

/// Completes [`STOP_GRACE`] after `shutdown` fires.
async fn overdue(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(STOP_GRACE).await;
}

/// Waits out the next delay; false if shutdown came first.
async fn pause(delays: &mut impl Iterator<Item = Duration>, shutdown: &CancellationToken) -> bool {
    let delay = delays.next().unwrap_or(Duration::from_secs(5));
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shutdown.cancelled() => false,
    }
}
