//! The loop over one shard: take a delivery, decode it, hand it to the handler, and map the
//! result to ack or dead-letter. Deliveries on a shard are handled one at a time, in order.
//!
//! - Decoded and applied (or already applied): ack.
//! - Not decodable: dead-letter at once (`unparseable` / `invalid`), then ack.
//! - A dependency down: hold the delivery and retry in place with backoff and jitter; nothing
//!   else is taken from the shard meanwhile; nothing is dead-lettered for it.
//! - Shutdown while holding: leave it unacknowledged; closing the channel returns it.

use std::{sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::{Acker, Channel, Connection, Consumer, message::Delivery, options::BasicAckOptions};
use shared::{
    contract::{KIND_PRODUCT_UPDATE, ProductUpdate},
    topology::Topology,
};
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letter::{self, Poison, Reason},
    handler::{self, Deps, HandleError},
};

/// Everything one shard's loop needs.
pub struct Shard {
    /// The shard's own channel (consumes, and publishes dead letters with confirms).
    pub channel: Channel,
    /// The consumer on the shard queue.
    pub consumer: Consumer,
    /// The connection, closed if this loop dies so the supervisor rebuilds everything.
    pub connection: Arc<Connection>,
    /// Names of exchanges and queues.
    pub topology: Arc<Topology>,
    /// Dependencies of the handler.
    pub deps: Arc<Deps>,
}

/// Runs the loop until `shutdown` fires or the channel is gone for good.
pub async fn run(mut shard: Shard, shutdown: CancellationToken) {
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = shard.consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => match shard.channel.wait_for_recovery(error).await {
                Ok(()) => continue,
                Err(error) => {
                    tracing::warn!(error = %error, "Shard channel lost; asking for a new connection.");
                    let _ = shard.connection.close(320, "consumer lost".into()).await;
                    return;
                }
            },
            None => {
                if !shutdown.is_cancelled() {
                    tracing::warn!(
                        "Shard consumer cancelled by the broker; asking for a new connection."
                    );
                    let _ = shard
                        .connection
                        .close(320, "consumer cancelled".into())
                        .await;
                }
                return;
            }
        };
        if !process(delivery, &shard, &shutdown).await {
            break;
        }
    }
    let _ = shard.channel.close(200, "shutting down".into()).await;
}

/// Handles one delivery; false if shutdown interrupted it (the delivery stays unacknowledged).
async fn process(delivery: Delivery, shard: &Shard, shutdown: &CancellationToken) -> bool {
    let Delivery {
        data,
        properties,
        routing_key,
        acker,
        ..
    } = delivery;
    let update = match decode(properties.kind().as_ref().map(|k| k.as_str()), &data) {
        Ok(update) => update,
        Err((reason, error)) => {
            let poison = Poison {
                data: &data,
                properties: &properties,
                routing_key: routing_key.as_str(),
            };
            return match dead_letter::set_aside(
                &shard.channel,
                &shard.topology,
                poison,
                reason,
                &error,
            )
            .await
            {
                Ok(()) => {
                    tracing::warn!(reason = reason.as_str(), error = %error, "Message dead-lettered.");
                    settle(acker).await;
                    true
                }
                // The original stays unacknowledged and comes back; nothing is lost.
                Err(e) => {
                    tracing::warn!(error = %e, "Could not dead-letter a message; it will be redelivered.");
                    true
                }
            };
        }
    };
    match apply_holding(&update, shard, shutdown).await {
        None => false,
        Some(Ok(outcome)) => {
            metrics::counter!("pipeline_events_processed_total", "outcome" => outcome.as_str())
                .increment(1);
            tracing::debug!(event_id = %update.event_id, outcome = outcome.as_str(), "Event handled.");
            settle(acker).await;
            true
        }
        Some(Err(error)) => {
            let poison = Poison {
                data: &data,
                properties: &properties,
                routing_key: routing_key.as_str(),
            };
            let reason = Reason::Invalid;
            match dead_letter::set_aside(
                &shard.channel,
                &shard.topology,
                poison,
                reason,
                &error.to_string(),
            )
            .await
            {
                Ok(()) => {
                    tracing::warn!(event_id = %update.event_id, error = %error, "Event refused; dead-lettered.");
                    settle(acker).await;
                }
                Err(e) => {
                    tracing::warn!(event_id = %update.event_id, error = %e, "Could not dead-letter an event; it will be redelivered.");
                }
            }
            true
        }
    }
}

/// Applies `update`, holding it through dependency outages; `None` if shutdown came first.
async fn apply_holding(
    update: &ProductUpdate,
    shard: &Shard,
    shutdown: &CancellationToken,
) -> Option<Result<handler::Outcome, HandleError>> {
    let attempt = || handler::handle(update, &shard.deps);
    let held = attempt
        .retry(
            ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times(),
        )
        .when(HandleError::is_transient)
        .notify(|error, delay| {
            if let HandleError::Unavailable { dependency, .. } = error {
                metrics::counter!("pipeline_dependency_retries_total", "dependency" => *dependency)
                    .increment(1);
            }
            tracing::warn!(event_id = %update.event_id, error = %error, retry_in = ?delay, "Holding event until the dependency is back.");
        });
    tokio::select! {
        result = held => Some(result),
        () = shutdown.cancelled() => None,
    }
}

/// Decodes a delivery into an update, or says why it is poison.
fn decode(kind: Option<&str>, data: &[u8]) -> Result<ProductUpdate, (Reason, String)> {
    if kind.is_some_and(|k| k != KIND_PRODUCT_UPDATE) {
        return Err((
            Reason::Unparseable,
            format!("unknown message type {:?}", kind.unwrap_or_default()),
        ));
    }
    serde_json::from_slice(data).map_err(|e| {
        let reason = if e.is_data() {
            Reason::Invalid
        } else {
            Reason::Unparseable
        };
        (reason, e.to_string())
    })
}

/// Acknowledges a delivery, consuming its acker so it cannot be settled twice. A failed ack
/// (channel gone) means the broker will redeliver, and the inbox makes that harmless.
async fn settle(acker: Acker) {
    if let Err(e) = acker.ack(BasicAckOptions::default()).await {
        tracing::debug!(error = %e, "Ack failed; the message will be redelivered and deduplicated.");
    }
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
            decode(Some("order.create"), b"{}").map_err(|e| e.0),
            Err(Reason::Unparseable)
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
