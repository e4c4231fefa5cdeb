//! Taking downstream events off the `{ns}.notifier` queue: each is recorded once in
//! `notifications`, with one pending delivery per matching subscription, in one transaction;
//! only then is it acknowledged. A redelivered event (the processor emits again after a crash,
//! or the broker redelivers after ours) finds its notification and adds nothing, so it can
//! never cause a second delivery.
//!
//! An event that is not a downstream event (not JSON, no `id`, unknown `type`) is rejected
//! without requeueing: the queue dead-letters it to `{ns}.dead`, where operators see it.

use std::sync::Arc;

use lapin::{Channel, message::Delivery, options::BasicRejectOptions};
use shared::{
    connect::postgres::Database,
    consume::{DeliveryHandler, hold, settle},
    contract::DOWNSTREAM_TYPES,
    trace::{self, Messaging, Operation},
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A downstream event as the notifier needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// Its id: `{source event id}:{type}`, the `webhook-id` of its deliveries.
    pub id: String,
    /// Its type.
    pub kind: &'static str,
    /// The body, exactly as published; sent and signed as is.
    pub body: &'a str,
}

/// Reads a downstream event, or says why it is not one.
pub fn decode(data: &[u8]) -> Result<Event<'_>, String> {
    let body = std::str::from_utf8(data).map_err(|_| "the body is not UTF-8".to_owned())?;
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let id = value
        .get("id")
        .and_then(serde_json::Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or("the event has no `id`")?
        .to_owned();
    let kind = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .and_then(|t| DOWNSTREAM_TYPES.iter().find(|k| **k == t))
        .ok_or("the event's `type` is not a downstream event type")?;
    Ok(Event { id, kind, body })
}

/// Records `event` and its deliveries; false if it was already recorded. Deliveries go to
/// every subscription that is not deleted and wants the type: pending when enabled, skipped
/// (and visible as such) when disabled.
pub async fn record(
    pool: &PgPool,
    event: &Event<'_>,
    traceparent: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO notifications (event_id, event_type, body, traceparent)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(event.kind)
    .bind(event.body)
    .bind(traceparent)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        sqlx::query(
            "INSERT INTO deliveries (event_id, subscription_id, status, last_error)
             SELECT $1, id,
                    CASE WHEN disabled_at IS NULL THEN 'pending' ELSE 'skipped' END,
                    CASE WHEN disabled_at IS NULL THEN NULL ELSE 'endpoint disabled' END
             FROM subscriptions
             WHERE deleted_at IS NULL AND $2 = ANY (event_types)",
        )
        .bind(&event.id)
        .bind(event.kind)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// The notifier queue's handler.
pub struct Intake {
    /// Where notifications and deliveries are kept.
    pub database: Database,
    /// Wakes the delivery worker when new deliveries are due.
    pub wake: Arc<Notify>,
    /// The queue's name, for spans.
    pub queue: String,
}

impl DeliveryHandler for Intake {
    async fn on_delivery(
        &self,
        _channel: &Channel,
        delivery: Delivery,
        shutdown: &CancellationToken,
    ) -> bool {
        let event = match decode(&delivery.data) {
            Ok(event) => event,
            Err(why) => {
                metrics::counter!("pipeline_notifier_events_total", "outcome" => "rejected")
                    .increment(1);
                tracing::error!(error = %why, "Not a downstream event; dead-lettering it.");
                if let Err(e) = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                {
                    tracing::debug!(error = %e, "Reject failed; the event will be redelivered.");
                }
                return true;
            }
        };
        let span = trace::messaging(
            "notifier",
            &Messaging {
                operation: Operation::Process,
                destination: &self.queue,
                routing_key: delivery.routing_key.as_str(),
                message_id: &event.id,
                event_id: &event.id,
            },
            &trace::extract(&delivery.properties),
        );
        let traceparent = span.traceparent();
        let recorded = hold(
            || async { record(self.database.ready()?, &event, traceparent.as_deref()).await },
            |_| true,
            "downstream event",
            shutdown,
        )
        .await;
        let Some(Ok(new)) = recorded else {
            return false;
        };
        let outcome = if new { "recorded" } else { "duplicate" };
        metrics::counter!("pipeline_notifier_events_total", "outcome" => outcome).increment(1);
        tracing::debug!(event_id = %event.id, event_type = event.kind, trace_id = span.trace_id(), outcome, "Downstream event taken in.");
        settle(delivery.acker).await;
        if new {
            self.wake.notify_one();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_downstream_event_and_keeps_its_body() {
        let body = br#"{"id":"e1:order.created","type":"order.created","sku":"a"}"#;
        let event = decode(body).expect("valid");
        assert_eq!(event.id, "e1:order.created");
        assert_eq!(event.kind, "order.created");
        assert_eq!(event.body.as_bytes(), body);
    }

    #[test]
    fn refuses_what_is_not_a_downstream_event() {
        for bad in [
            &b"\xff"[..],
            b"not json",
            br#"{"type":"order.created"}"#,
            br#"{"id":"","type":"order.created"}"#,
            br#"{"id":"x","type":"order.exploded"}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
