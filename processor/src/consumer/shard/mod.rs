//! The shard handler: applies product updates and orders, in order, batch by batch; retries and
//! dead-letters as the module above describes. A batch goes through two stages: the first
//! decodes, decides and persists it (here); the second ([`emit`]) publishes its downstream
//! events, waits for their confirms and acknowledges the batch with one `multiple` ack, while
//! the first already takes the next batch. [`retry`] holds the retry ladder.

mod emit;
mod retry;

use std::{sync::Arc, time::Duration};

use lapin::Channel;
use shared::{
    consume::{Consuming, DeliveryHandler, Pending, Received, Run, hold, requeue, settle},
    contract::{Ingest, Undecodable, headers},
    dead_letter::{self, Poison, Reason, number_header},
    topology::Topology,
    trace::Traced,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    handler::{self, Deps, HandleError, Handled},
    shards::Fence,
    store::{Outcome, StoreError},
};
use emit::Settling;
use retry::schedule_retry;

/// Applies a shard's messages: product updates and orders, while this replica holds the
/// shard's lease.
#[derive(Clone)]
pub struct ShardHandler {
    /// Names of exchanges and queues.
    pub topology: Arc<Topology>,
    /// Dependencies of the handler.
    pub deps: Arc<Deps>,
    /// The retry ladder's delays.
    pub retry_delays: Arc<Vec<Duration>>,
    /// The lease every batch is applied under.
    pub fence: Fence,
    /// Stops this shard's consumer: cancelled when a batch finds the lease gone.
    pub stop: CancellationToken,
}

/// A delivery decoded: its right to settle, its `process` span and the event.
struct Decoded {
    pending: Pending,
    span: Traced,
    item: Ingest,
}

impl DeliveryHandler for ShardHandler {
    async fn on_batch(&self, batch: Vec<Received>, at: Consuming<'_>) -> bool {
        self.apply_batch(batch, at).await
    }

    async fn on_delivery(&self, delivery: Received, at: Consuming<'_>) -> bool {
        let span = self.span(&delivery);
        // Every line logged while it is handled carries its trace.
        let logged = span.log_span();
        self.handle_one(delivery, span, at).instrument(logged).await
    }
}

impl ShardHandler {
    /// Applies one delivery alone (its `process` span `span`), then settles, retries or
    /// dead-letters it; false if shutdown came first or the shard was lost.
    async fn handle_one(&self, delivery: Received, span: Traced, at: Consuming<'_>) -> bool {
        let Received {
            data,
            properties,
            routing_key,
            pending,
            ..
        } = delivery;
        let attempts = u32::try_from(number_header(&properties, headers::ATTEMPTS).unwrap_or(0))
            .unwrap_or(u32::MAX);
        let queue = self.queue_of(routing_key.as_str());
        let poison = Poison {
            data: &data,
            properties: &properties,
            routing_key: routing_key.as_str(),
            queue: &queue,
            attempts,
        };
        let item = match decode(properties.kind().as_ref().map(|k| k.as_str()), &data) {
            Ok(item) => item,
            Err((reason, error)) => {
                self.set_aside(at.channel, pending, poison, reason, &error, None)
                    .await;
                return true;
            }
        };
        let handled = self
            .apply(std::slice::from_ref(&item), "event", at.shutdown)
            .await;
        match handled {
            None => false,
            Some(Err(HandleError::Store(StoreError::Fenced))) => self.fenced(),
            Some(Ok(handled)) => {
                let decoded = Decoded {
                    pending,
                    span,
                    item,
                };
                self.leave_settling(at, vec![decoded], handled).await;
                true
            }
            Some(Err(HandleError::Store(error @ StoreError::Failed(_)))) => {
                let error = error.to_string();
                self.failed(at.channel, pending, poison, &item, &error)
                    .await;
                true
            }
            Some(Err(error)) => {
                span.fail(&error);
                let event = Some(item.event_id());
                let reason = Reason::Invalid;
                self.set_aside(
                    at.channel,
                    pending,
                    poison,
                    reason,
                    &error.to_string(),
                    event,
                )
                .await;
                true
            }
        }
    }

    /// Applies the decodable messages of a batch (updates and orders) in one transaction and
    /// leaves publishing and settling them to the second stage; anything else in the batch, and
    /// the whole batch if the transaction fails for a reason that is not an outage, goes through
    /// [`DeliveryHandler::on_delivery`] one by one (so one bad event is isolated and handled
    /// alone).
    async fn apply_batch(&self, batch: Vec<Received>, at: Consuming<'_>) -> bool {
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        let mut alone = Vec::new();
        for delivery in batch {
            let kind = delivery
                .properties
                .kind()
                .as_ref()
                .map(|k| k.as_str().to_owned());
            match decode(kind.as_deref(), &delivery.data) {
                Ok(item) => {
                    items.push(item);
                    deliveries.push(delivery);
                }
                Err(_) => alone.push(delivery),
            }
        }
        for delivery in alone {
            if !self.on_delivery(delivery, at).await {
                return false;
            }
        }
        if items.is_empty() {
            return true;
        }
        let spans: Vec<Traced> = deliveries.iter().map(|d| self.span(d)).collect();
        let handled = self.apply(&items, "batch", at.shutdown).await;
        match handled {
            None => false,
            Some(Err(HandleError::Store(StoreError::Fenced))) => self.fenced(),
            Some(Ok(handled)) => {
                let decoded = deliveries
                    .into_iter()
                    .zip(spans)
                    .zip(items)
                    .map(|((delivery, span), item)| Decoded {
                        pending: delivery.pending,
                        span,
                        item,
                    })
                    .collect();
                self.leave_settling(at, decoded, handled).await;
                true
            }
            Some(Err(error)) => {
                drop(spans);
                tracing::debug!(error = %error, "Batch failed; handling its events one by one.");
                for delivery in deliveries {
                    if !self.on_delivery(delivery, at).await {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Applies `items`, holding them while a dependency is down; `None` if shutdown came first.
    async fn apply(
        &self,
        items: &[Ingest],
        what: &str,
        shutdown: &CancellationToken,
    ) -> Option<Result<Handled, HandleError>> {
        hold(
            || handler::handle(items, &self.deps, &self.fence),
            HandleError::is_transient,
            what,
            shutdown,
        )
        .await
    }

    /// The shard was claimed by another replica: stop consuming it; what this consumer holds
    /// returns to the queue, for the new owner, when its channel closes. False, as at shutdown.
    fn fenced(&self) -> bool {
        let lease = self.fence.lease;
        tracing::warn!(
            shard = lease.shard,
            epoch = lease.epoch,
            "Shard claimed by another replica; its batch is returned and this consumer stops."
        );
        self.stop.cancel();
        false
    }

    /// Counts what the applied deliveries came to, and leaves their downstream events and
    /// their acknowledgement to the second stage ([`Settling`]).
    async fn leave_settling(&self, at: Consuming<'_>, applied: Vec<Decoded>, handled: Handled) {
        let mut sources = Vec::with_capacity(applied.len());
        let (mut duplicates, mut applied_here) = (Vec::new(), Vec::new());
        let mut run = Run::default();
        for (decoded, outcome) in applied.into_iter().zip(handled.outcomes) {
            let Decoded {
                pending,
                span,
                item,
            } = decoded;
            metrics::counter!(shared::metric::EVENTS_PROCESSED_TOTAL, "outcome" => outcome.as_str())
                .increment(1);
            if tracing::enabled!(tracing::Level::DEBUG) {
                span.log_span().in_scope(|| {
                    tracing::debug!(event_id = %item.event_id(), outcome = outcome.as_str(), "Event handled.");
                });
            }
            if outcome == Outcome::Duplicate {
                duplicates.push(item.key());
            } else {
                applied_here.push(item.key());
            }
            run.push(pending);
            sources.push((item.key(), span));
        }
        if sources.is_empty() {
            return;
        }
        // What this batch applied is published from `emitted`; a repeated key is read once.
        duplicates.sort_unstable();
        duplicates.dedup();
        duplicates.retain(|key| !applied_here.contains(key));
        let settling = Settling {
            shard: self.clone(),
            channel: at.channel.clone(),
            run,
            sources,
            duplicates,
            emitted: handled.emitted,
        };
        at.later.then(settling.run()).await;
    }

    /// An event that failed for a reason that may pass: the next rung of the retry ladder,
    /// or past the last, a dead letter.
    async fn failed(
        &self,
        channel: &Channel,
        pending: Pending,
        poison: Poison<'_>,
        update: &Ingest,
        error: &str,
    ) {
        let attempts = poison.attempts;
        let poison = Poison {
            attempts: attempts + 1,
            ..poison
        };
        let Some(delay) = self.retry_delays.get(attempts as usize) else {
            let event = Some(update.event_id());
            self.set_aside(
                channel,
                pending,
                poison,
                Reason::AttemptsExhausted,
                error,
                event,
            )
            .await;
            return;
        };
        match schedule_retry(channel, &self.topology, &poison, *delay, error).await {
            Ok(()) => {
                metrics::counter!(shared::metric::EVENTS_RETRIED_TOTAL).increment(1);
                tracing::info!(event_id = %update.event_id(), attempts = poison.attempts, retry_in = ?delay, error = %error, "Event failed; retrying later.");
                self.note_retry(update.event_id().as_str(), poison.attempts, error, *delay)
                    .await;
                settle(pending).await;
            }
            Err(e) => {
                tracing::warn!(event_id = %update.event_id(), error = %e, "Could not schedule a retry; the event goes back to its queue.");
                requeue(pending).await;
            }
        }
    }

    /// The shard queue a delivery came from, by its routing key (a shard's number, or the
    /// queue's own name when published to it directly).
    fn queue_of(&self, routing_key: &str) -> String {
        routing_key.parse::<u16>().map_or_else(
            |_| routing_key.to_owned(),
            |shard| self.topology.shard_queue(shard),
        )
    }

    /// Dead-letters a message, then acks it; if the dead letter is not confirmed the original
    /// goes back to its queue, so nothing is lost.
    async fn set_aside(
        &self,
        channel: &Channel,
        pending: Pending,
        poison: Poison<'_>,
        reason: Reason,
        error: &str,
        event: Option<&shared::model::EventId>,
    ) {
        let sender = dead_letter::Sender {
            channel,
            topology: &self.topology,
            service: "processor",
        };
        let set_aside = sender.set_aside_and_settle(poison, reason, error, pending);
        if set_aside.await {
            let event = event.map(ToString::to_string).unwrap_or_default();
            tracing::warn!(event_id = %event, reason = reason.as_str(), error = %error, "Message dead-lettered.");
        }
    }
}

/// Decodes a delivery into an update, or says why it is poison.
fn decode(kind: Option<&str>, data: &[u8]) -> Result<Ingest, (Reason, String)> {
    Ingest::decode(kind, data).map_err(|e| match e {
        Undecodable::Unparseable(error) => (Reason::Unparseable, error),
        Undecodable::Invalid(error) => (Reason::Invalid, error),
    })
}
