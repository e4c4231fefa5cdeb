//! The shard handler: applies product updates and orders, in order, batch by batch; retries,
//! dead-letters and publishes downstream events as the module above describes. [`emit`] holds
//! its spans and downstream publishing, [`retry`] the retry ladder.

mod emit;
mod retry;

use std::{sync::Arc, time::Duration};

use lapin::{Acker, Channel, message::Delivery};
use shared::{
    consume::{Consuming, DeliveryHandler, hold, requeue, settle},
    contract::{Ingest, Undecodable, headers},
    dead_letter::{self, Poison, Reason, number_header},
    topology::Topology,
    trace::Traced,
};

use crate::handler::{self, Deps, HandleError, Outcome};
use emit::Source;
use retry::schedule_retry;

/// Applies a shard's messages: product updates and orders.
pub struct ShardHandler {
    /// Names of exchanges and queues.
    pub topology: Arc<Topology>,
    /// Dependencies of the handler.
    pub deps: Arc<Deps>,
    /// The retry ladder's delays.
    pub retry_delays: Arc<Vec<Duration>>,
}

impl DeliveryHandler for ShardHandler {
    async fn on_batch(&self, batch: Vec<Delivery>, at: Consuming<'_>) -> bool {
        self.apply_batch(batch, at).await
    }

    async fn on_delivery(&self, delivery: Delivery, at: Consuming<'_>) -> bool {
        let Consuming { channel, shutdown } = at;
        let span = self.span(&delivery);
        let Delivery {
            data,
            properties,
            routing_key,
            acker,
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
        let update = match decode(properties.kind().as_ref().map(|k| k.as_str()), &data) {
            Ok(update) => update,
            Err((reason, error)) => {
                self.set_aside(channel, acker, poison, reason, &error, None)
                    .await;
                return true;
            }
        };
        let outcome = hold(
            || handler::handle(std::slice::from_ref(&update), &self.deps),
            HandleError::is_transient,
            "event",
            shutdown,
        )
        .await
        .map(|r| r.map(|mut outcomes| outcomes.remove(0)));
        match outcome {
            None => false,
            Some(Ok(outcome)) => {
                self.applied(channel, acker, &update, &span, outcome).await;
                true
            }
            Some(Err(HandleError::Failed(error))) => {
                self.failed(channel, acker, poison, &update, &span, &error)
                    .await;
                true
            }
            Some(Err(error)) => {
                span.fail(&error);
                let event = Some(update.event_id());
                let reason = Reason::Invalid;
                self.set_aside(channel, acker, poison, reason, &error.to_string(), event)
                    .await;
                true
            }
        }
    }
}

impl ShardHandler {
    /// Publishes what an event applied alone caused, then acks it (or returns it, to publish
    /// them when it comes back).
    async fn applied(
        &self,
        channel: &Channel,
        acker: Acker,
        update: &Ingest,
        span: &Traced,
        outcome: Outcome,
    ) {
        metrics::counter!(shared::metric::EVENTS_PROCESSED_TOTAL, "outcome" => outcome.as_str())
            .increment(1);
        tracing::debug!(event_id = %update.event_id(), trace_id = span.trace_id(), outcome = outcome.as_str(), "Event handled.");
        let source = (
            update.kind(),
            update.event_id().to_string(),
            span.context().clone(),
        );
        match self.emit(channel, &[source]).await {
            Ok(()) => settle(acker).await,
            Err(e) => {
                tracing::warn!(event_id = %update.event_id(), error = %e, "Downstream events not published yet; the event comes back to publish them.");
                requeue(acker).await;
            }
        }
    }

    /// An event that failed for a reason that may pass: the next rung of the retry ladder,
    /// or past the last, a dead letter.
    async fn failed(
        &self,
        channel: &Channel,
        acker: Acker,
        poison: Poison<'_>,
        update: &Ingest,
        span: &Traced,
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
                acker,
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
                tracing::info!(event_id = %update.event_id(), trace_id = span.trace_id(), attempts = poison.attempts, retry_in = ?delay, error = %error, "Event failed; retrying later.");
                self.note_retry(update.event_id().as_str(), poison.attempts, error, *delay)
                    .await;
                settle(acker).await;
            }
            Err(e) => {
                tracing::warn!(event_id = %update.event_id(), error = %e, "Could not schedule a retry; the event will be redelivered.");
            }
        }
    }

    /// Applies the decodable messages of a batch (updates and orders) in one transaction and
    /// acks them; anything else in the batch, and the whole batch if the transaction fails for
    /// a reason that is not an outage, goes through [`DeliveryHandler::on_delivery`] one by one
    /// (so one bad event is isolated and handled alone).
    async fn apply_batch(&self, batch: Vec<Delivery>, at: Consuming<'_>) -> bool {
        let Consuming { channel, shutdown } = at;
        let mut updates = Vec::with_capacity(batch.len());
        let mut decoded = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        let mut alone = Vec::new();
        for delivery in batch {
            let kind = delivery
                .properties
                .kind()
                .as_ref()
                .map(|k| k.as_str().to_owned());
            match decode(kind.as_deref(), &delivery.data) {
                Ok(update) => {
                    updates.push(update);
                    spans.push(self.span(&delivery));
                    decoded.push(delivery);
                }
                Err(_) => alone.push(delivery),
            }
        }
        for delivery in alone {
            if !self.on_delivery(delivery, at).await {
                return false;
            }
        }
        if updates.is_empty() {
            return true;
        }
        let outcome = hold(
            || handler::handle(&updates, &self.deps),
            HandleError::is_transient,
            "batch",
            shutdown,
        )
        .await;
        match outcome {
            None => false,
            Some(Ok(outcomes)) => {
                let sources: Vec<Source> = updates
                    .iter()
                    .zip(&spans)
                    .map(|(u, span)| (u.kind(), u.event_id().to_string(), span.context().clone()))
                    .collect();
                let emitted = self.emit(channel, &sources).await;
                if let Err(e) = &emitted {
                    tracing::warn!(error = %e, "Downstream events not published yet; the batch comes back to publish them.");
                }
                for (delivery, outcome) in decoded.into_iter().zip(outcomes) {
                    metrics::counter!(shared::metric::EVENTS_PROCESSED_TOTAL, "outcome" => outcome.as_str())
                        .increment(1);
                    if emitted.is_ok() {
                        settle(delivery.acker).await;
                    } else {
                        requeue(delivery.acker).await;
                    }
                }
                true
            }
            Some(Err(error)) => {
                drop(spans);
                tracing::debug!(error = %error, "Batch failed; handling its events one by one.");
                for delivery in decoded {
                    if !self.on_delivery(delivery, at).await {
                        return false;
                    }
                }
                true
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
    /// stays unacknowledged and comes back, so nothing is lost.
    async fn set_aside(
        &self,
        channel: &Channel,
        acker: Acker,
        poison: Poison<'_>,
        reason: Reason,
        error: &str,
        event: Option<&shared::model::EventId>,
    ) {
        let event = event.map(ToString::to_string).unwrap_or_default();
        let set_aside =
            dead_letter::set_aside(channel, &self.topology, "processor", poison, reason, error);
        match set_aside.await {
            Ok(()) => {
                tracing::warn!(event_id = %event, reason = reason.as_str(), error = %error, "Message dead-lettered.");
                settle(acker).await;
            }
            Err(e) => {
                tracing::warn!(event_id = %event, error = %e, "Could not dead-letter a message; it will be redelivered.");
            }
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
