//! Settling deliveries, with the rule of `multiple` acknowledgements kept by types and a
//! ledger rather than by comments.
//!
//! lapin's `Acker` can be cloned, and a `multiple` ack settles every delivery on its channel up
//! to its tag, whoever still holds their ackers. Here a delivery in hand is a [`Received`] whose
//! right to settle, [`Pending`], exists once and is consumed by settling; a batch settled
//! together is a [`Run`] that owns its deliveries' [`Pending`]s. The channel's [`Ledger`] knows
//! which deliveries are still unsettled: a run is settled with one `multiple` ack (or nack) only
//! when nothing else below its last delivery is, and one by one otherwise, so a delivery set
//! aside, forgotten or still in another stage is never settled by someone else's ack.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use lapin::{
    Acker, BasicProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    types::{DeliveryTag, ShortString},
};

/// The deliveries of one channel not settled yet, by tag.
#[derive(Clone, Debug, Default)]
pub struct Ledger(Arc<Mutex<BTreeSet<DeliveryTag>>>);

impl Ledger {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeSet<DeliveryTag>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a batch of deliveries into the ledger (one lock for the batch): what the handler
    /// gets.
    pub fn receive_all(&self, batch: Vec<Delivery>) -> Vec<Received> {
        self.open().extend(batch.iter().map(|d| d.delivery_tag));
        batch.into_iter().map(|d| self.hand_over(d)).collect()
    }

    /// A delivery already in the ledger, as the handler gets it.
    fn hand_over(&self, delivery: Delivery) -> Received {
        Received {
            exchange: delivery.exchange,
            routing_key: delivery.routing_key,
            redelivered: delivery.redelivered,
            properties: delivery.properties,
            data: delivery.data,
            pending: Pending {
                acker: delivery.acker,
                tag: delivery.delivery_tag,
                ledger: self.clone(),
            },
        }
    }
}

/// One delivery in hand: what the broker sent, and the one right to settle it.
#[derive(Debug)]
pub struct Received {
    /// The exchange it was published to.
    pub exchange: ShortString,
    /// Its routing key.
    pub routing_key: ShortString,
    /// True if the broker delivered it before.
    pub redelivered: bool,
    /// Its properties and headers.
    pub properties: BasicProperties,
    /// Its body.
    pub data: Vec<u8>,
    /// The right to settle it.
    pub pending: Pending,
}

/// The right to settle one delivery: not `Clone`, consumed by [`settle`], [`requeue`] or a
/// [`Run`]. Dropped unsettled, the delivery stays unacknowledged and returns to its queue when
/// the channel closes (and no `multiple` settlement on the channel covers it meanwhile).
#[derive(Debug)]
#[must_use = "a delivery is settled, requeued or left to return with its channel"]
pub struct Pending {
    acker: Acker,
    tag: DeliveryTag,
    ledger: Ledger,
}

/// Acknowledges a delivery. A failed ack (channel gone) means the broker will redeliver, and
/// the inbox makes that harmless.
pub async fn settle(pending: Pending) {
    pending.ledger.open().remove(&pending.tag);
    ack(&pending.acker, false).await;
}

/// Returns a delivery to its queue at once (its effect may be committed; it comes back as a
/// duplicate to finish what is left, such as publishing its downstream events).
pub async fn requeue(pending: Pending) {
    pending.ledger.open().remove(&pending.tag);
    nack(&pending.acker, false).await;
}

/// Deliveries of one channel settled together.
#[derive(Debug, Default)]
#[must_use = "a run is settled or requeued"]
pub struct Run(Vec<Pending>);

impl Run {
    /// Adds a delivery to the run.
    pub fn push(&mut self, pending: Pending) {
        self.0.push(pending);
    }

    /// Acknowledges every delivery of the run.
    pub async fn settle(self) {
        self.finish(true).await;
    }

    /// Returns every delivery of the run to its queue.
    pub async fn requeue(self) {
        self.finish(false).await;
    }

    /// One `multiple` ack (or nack) of the last delivery when every unsettled delivery up to
    /// it on the channel belongs to the run; one per delivery otherwise.
    async fn finish(self, ack_them: bool) {
        let Some(last) = self.0.iter().max_by_key(|p| p.tag) else {
            return;
        };
        let together = {
            let mut ledger = last.ledger.open();
            let below = ledger.range(..=last.tag).count();
            for pending in &self.0 {
                ledger.remove(&pending.tag);
            }
            below == self.0.len()
        };
        if together {
            finish_one(&last.acker, ack_them, true).await;
        } else {
            for pending in &self.0 {
                finish_one(&pending.acker, ack_them, false).await;
            }
        }
    }
}

async fn finish_one(acker: &Acker, ack_it: bool, multiple: bool) {
    if ack_it {
        ack(acker, multiple).await;
    } else {
        nack(acker, multiple).await;
    }
}

async fn ack(acker: &Acker, multiple: bool) {
    if let Err(e) = acker.ack(BasicAckOptions { multiple }).await {
        tracing::debug!(error = %e, "Ack failed; the message will be redelivered and deduplicated.");
    }
}

async fn nack(acker: &Acker, multiple: bool) {
    let options = BasicNackOptions {
        requeue: true,
        multiple,
    };
    if let Err(e) = acker.nack(options).await {
        tracing::debug!(error = %e, "Nack failed; the message will be redelivered when the channel closes.");
    }
}
