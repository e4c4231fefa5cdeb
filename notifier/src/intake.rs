//! Taking downstream events off the `{ns}.notifier` queue: each is recorded once in
//! `notifications`, with one pending delivery per matching subscription, in one transaction;
//! only then is it acknowledged. A redelivered event (the processor emits again after a crash,
//! or the broker redelivers after ours) finds its notification and adds nothing, so it can
//! never cause a second delivery.
//!
//! A message that is not a downstream event (not the contract's body, no message id, an unknown
//! `type`) is dead-lettered with reason `unparseable` and why, and one whose record PostgreSQL
//! refuses (a NUL byte in its id) with reason `invalid`, from the notifier's queue, where a
//! replay sends it back; an outage holds the message until PostgreSQL is back.

use std::{collections::HashMap, sync::Arc};

use lapin::Channel;
use shared::{
    connect::postgres::{Database, Fault},
    consume::{Consuming, DeliveryHandler, Received, hold, settle},
    contract::{Announcement, DownstreamId, EventType},
    dead_letter::{self, Reason},
    topology::Topology,
    trace::{self, Messaging, Operation, Traced},
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::store::{deliveries, notifications};

/// A downstream event as the notifier needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// Its id (the AMQP message id): the `webhook-id` of its deliveries.
    pub id: DownstreamId,
    /// Its type.
    pub kind: EventType,
    /// The body, exactly as published; sent and signed as is.
    pub body: &'a str,
}

/// Reads a downstream event (its id from the message id, the rest from the contract's
/// [`Announcement`]), or says why it is not one.
pub fn decode<'a>(message_id: Option<&str>, data: &'a [u8]) -> Result<Event<'a>, String> {
    let body = std::str::from_utf8(data).map_err(|_| "the body is not UTF-8".to_owned())?;
    let id = message_id
        .filter(|id| !id.is_empty())
        .ok_or("the event has no message id")?;
    let announcement = Announcement::decode(id, data).map_err(|e| e.to_string())?;
    Ok(Event {
        id: announcement.id,
        kind: announcement.event.event_type(),
        body,
    })
}

/// Records `event` and its deliveries; false if it was already recorded. Deliveries go to
/// every subscription that is not deleted and wants the type: pending when enabled, skipped
/// (and visible as such) when disabled.
pub async fn record(
    pool: &PgPool,
    event: &Event<'_>,
    trace: &HashMap<String, String>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted = notifications::insert(&mut tx, &event.id, event.kind, event.body, trace).await?;
    if inserted {
        deliveries::create_for(&mut tx, &event.id, event.kind).await?;
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
    /// The queue's name (spans, dead letters).
    pub queue: String,
    /// Where dead letters go.
    pub topology: Arc<Topology>,
}

impl DeliveryHandler for Intake {
    async fn on_delivery(&self, delivery: Received, at: Consuming<'_>) -> bool {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let id = message_id.as_deref().unwrap_or_default();
        let span = trace::messaging(
            "notifier",
            &Messaging {
                operation: Operation::Process,
                exchange: delivery.exchange.as_str(),
                routing_key: delivery.routing_key.as_str(),
                queue: Some(&self.queue),
                message_id: id,
                event_id: id,
            },
            &trace::extract(&delivery.properties),
        );
        // Every line logged while it is taken in carries its trace.
        let logged = span.log_span();
        self.take_in(delivery, message_id.as_deref(), &span, at)
            .instrument(logged)
            .await
    }
}

impl Intake {
    /// Records `delivery` (its id `message_id`) and settles it, or dead-letters it; false if
    /// shutdown came first.
    async fn take_in(
        &self,
        delivery: Received,
        message_id: Option<&str>,
        span: &Traced,
        at: Consuming<'_>,
    ) -> bool {
        let Consuming {
            channel, shutdown, ..
        } = at;
        let event = match decode(message_id, &delivery.data) {
            Ok(event) => event,
            Err(why) => {
                span.fail(&why);
                self.set_aside(channel, delivery, Reason::Unparseable, &why)
                    .await;
                return true;
            }
        };
        let carrier = span.carrier();
        let recorded = hold(
            || async { record(self.database.ready()?, &event, &carrier).await },
            Fault::worth_retrying,
            "downstream event",
            shutdown,
        )
        .await;
        let new = match recorded {
            None => return false,
            Some(Ok(new)) => new,
            Some(Err(refused)) => {
                let why = format!("PostgreSQL refused to record it: {refused}");
                span.fail(&why);
                self.set_aside(channel, delivery, Reason::Invalid, &why)
                    .await;
                return true;
            }
        };
        let outcome = if new { "recorded" } else { "duplicate" };
        metrics::counter!(shared::metric::NOTIFIER_EVENTS_TOTAL, "outcome" => outcome).increment(1);
        tracing::debug!(event_id = %event.id, event_type = %event.kind, outcome, "Downstream event taken in.");
        settle(delivery.pending).await;
        if new {
            self.wake.notify_one();
        }
        true
    }
}

impl Intake {
    /// Dead-letters what cannot be taken in (`unparseable`: not a downstream event; `invalid`:
    /// PostgreSQL refused its record), with why, then acks it; if the dead letter is not
    /// confirmed the original goes back to its queue and comes back.
    async fn set_aside(&self, channel: &Channel, delivery: Received, reason: Reason, why: &str) {
        metrics::counter!(shared::metric::NOTIFIER_EVENTS_TOTAL, "outcome" => reason.as_str())
            .increment(1);
        let sender = dead_letter::Sender {
            channel,
            topology: &self.topology,
            service: "notifier",
        };
        let set_aside = sender.set_aside_received(&self.queue, delivery, reason, why);
        if set_aside.await {
            tracing::error!(reason = reason.as_str(), error = %why, "Could not take a message in; dead-lettered it.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{"source_event_id":"e1","product_id":"p","stock":1,"threshold":10}}"#;

    #[test]
    fn decodes_a_downstream_event_and_keeps_its_body() {
        let event = decode(Some("msg_1"), BODY).expect("valid");
        assert_eq!(event.id.as_str(), "msg_1");
        assert_eq!(event.kind, EventType::StockLow);
        assert_eq!(event.body.as_bytes(), BODY);
    }

    #[test]
    fn refuses_what_is_not_a_downstream_event() {
        assert!(decode(None, BODY).is_err(), "no id");
        assert!(decode(Some(""), BODY).is_err(), "empty id");
        for bad in [
            &b"\xff"[..],
            b"not json",
            br#"{"type":"order.exploded","timestamp":"2026-01-01T00:00:00Z","data":{}}"#,
            br#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{}}"#,
        ] {
            assert!(decode(Some("msg_1"), bad).is_err(), "{bad:?}");
        }
    }
}
