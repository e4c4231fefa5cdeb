//! The shard handler: applies product updates and orders, in order, batch by batch; retries,
//! dead-letters and publishes downstream events as the module above describes. [`emit`] holds
//! its spans and downstream publishing, [`retry`] the retry ladder.

mod emit;
mod retry;

use std::{sync::Arc, time::Duration};

use lapin::{Acker, Channel, message::Delivery};
use opentelemetry::Context;
use shared::{
    consume::{DeliveryHandler, hold, requeue, settle},
    contract::{KIND_ORDER_CREATE, KIND_PRODUCT_UPDATE, headers},
    topology::Topology,
};
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letters::{self, Poison, Reason, number_header},
    handler::{self, Deps, HandleError},
    store::Ingest,
};
use retry::schedule_retry;

/// Applies product updates from a shard.
pub struct ShardHandler {
    /// Names of exchanges and queues.
    pub topology: Arc<Topology>,
    /// Dependencies of the handler.
    pub deps: Arc<Deps>,
    /// The retry ladder's delays.
    pub retry_delays: Arc<Vec<Duration>>,
}

impl DeliveryHandler for ShardHandler {
    async fn on_batch(
        &self,
        channel: &Channel,
        batch: Vec<Delivery>,
        shutdown: &CancellationToken,
    ) -> bool {
        self.apply_batch(channel, batch, shutdown).await
    }

    async fn on_delivery(
        &self,
        channel: &Channel,
        delivery: Delivery,
        shutdown: &CancellationToken,
    ) -> bool {
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
        let poison = Poison {
            data: &data,
            properties: &properties,
            routing_key: routing_key.as_str(),
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
        let event = Some(update.event_id());
        match outcome {
            None => false,
            Some(Ok(outcome)) => {
                metrics::counter!("pipeline_events_processed_total", "outcome" => outcome.as_str())
                    .increment(1);
                tracing::debug!(event_id = %update.event_id(), trace_id = span.trace_id(), outcome = outcome.as_str(), "Event handled.");
                let source = (update.event_id().to_string(), span.context().clone());
                match self.emit(channel, &[source]).await {
                    Ok(()) => settle(acker).await,
                    Err(e) => {
                        tracing::warn!(event_id = %update.event_id(), error = %e, "Downstream events not published yet; the event comes back to publish them.");
                        requeue(acker).await;
                    }
                }
                true
            }
            Some(Err(HandleError::Failed(error))) => {
                let poison = Poison {
                    attempts: attempts + 1,
                    ..poison
                };
                match self.retry_delays.get(attempts as usize) {
                    Some(delay) => {
                        match schedule_retry(channel, &self.topology, &poison, *delay, &error).await
                        {
                            Ok(()) => {
                                metrics::counter!("pipeline_events_retried_total").increment(1);
                                tracing::info!(event_id = %update.event_id(), trace_id = span.trace_id(), attempts = poison.attempts, retry_in = ?delay, error = %error, "Event failed; retrying later.");
                                self.note_retry(
                                    update.event_id().as_str(),
                                    poison.attempts,
                                    &error,
                                    *delay,
                                )
                                .await;
                                settle(acker).await;
                            }
                            Err(e) => {
                                tracing::warn!(event_id = %update.event_id(), error = %e, "Could not schedule a retry; the event will be redelivered.");
                            }
                        }
                    }
                    None => {
                        let reason = Reason::AttemptsExhausted;
                        self.set_aside(channel, acker, poison, reason, &error, event)
                            .await;
                    }
                }
                true
            }
            Some(Err(error)) => {
                span.fail(&error);
                let reason = Reason::Invalid;
                self.set_aside(channel, acker, poison, reason, &error.to_string(), event)
                    .await;
                true
            }
        }
    }
}

impl ShardHandler {
    /// Applies the decodable updates of a batch in one transaction and acks them; anything
    /// else in the batch, and the whole batch if the transaction fails for a reason that is not
    /// an outage, goes through [`DeliveryHandler::on_delivery`] one by one (so one bad event
    /// is isolated and handled alone).
    async fn apply_batch(
        &self,
        channel: &Channel,
        batch: Vec<Delivery>,
        shutdown: &CancellationToken,
    ) -> bool {
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
            if !self.on_delivery(channel, delivery, shutdown).await {
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
                let sources: Vec<(String, Context)> = updates
                    .iter()
                    .zip(&spans)
                    .map(|(u, span)| (u.event_id().to_string(), span.context().clone()))
                    .collect();
                let emitted = self.emit(channel, &sources).await;
                if let Err(e) = &emitted {
                    tracing::warn!(error = %e, "Downstream events not published yet; the batch comes back to publish them.");
                }
                for (delivery, outcome) in decoded.into_iter().zip(outcomes) {
                    metrics::counter!("pipeline_events_processed_total", "outcome" => outcome.as_str())
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
                    if !self.on_delivery(channel, delivery, shutdown).await {
                        return false;
                    }
                }
                true
            }
        }
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
        match dead_letters::set_aside(channel, &self.topology, poison, reason, error).await {
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
    let decoded = match kind {
        None | Some(KIND_PRODUCT_UPDATE) => serde_json::from_slice(data).map(Ingest::Product),
        Some(KIND_ORDER_CREATE) => serde_json::from_slice(data).map(Ingest::Order),
        Some(other) => {
            return Err((
                Reason::Unparseable,
                format!("unknown message type {other:?}"),
            ));
        }
    };
    decoded.map_err(|e| {
        let reason = if e.is_data() {
            Reason::Invalid
        } else {
            Reason::Unparseable
        };
        (reason, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_unparseable_and_rule_breaking_json_is_invalid() {
        assert_eq!(
            decode(None, b"not json").map_err(|e| e.0),
            Err(Reason::Unparseable)
        );
        assert_eq!(
            decode(Some("order.cancel"), b"{}").map_err(|e| e.0),
            Err(Reason::Unparseable)
        );
        assert_eq!(
            decode(Some("order.create"), b"{}").map_err(|e| e.0),
            Err(Reason::Invalid)
        );
        let no_fields = br#"{"event_id":"e","product_id":"p","occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            decode(None, no_fields).map_err(|e| e.0),
            Err(Reason::Invalid)
        );
        let negative = br#"{"event_id":"e","product_id":"p","stock":-1,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            decode(None, negative).map_err(|e| e.0),
            Err(Reason::Invalid)
        );
    }
}
