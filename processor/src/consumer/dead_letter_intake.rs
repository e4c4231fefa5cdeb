//! The dead-letter queue's handler: records each dead letter in PostgreSQL, then acks.

use lapin::message::Delivery;
use shared::connect::postgres::Database;

use crate::dead_letters::{intake, store};
use shared::consume::{Consuming, DeliveryHandler, hold, settle};

/// Records dead letters in PostgreSQL.
pub struct Intake {
    /// Where the `dead_letters` table lives.
    pub database: Database,
}

impl DeliveryHandler for Intake {
    async fn on_delivery(&self, delivery: Delivery, at: Consuming<'_>) -> bool {
        let shutdown = at.shutdown;
        let dead = intake::record(&delivery);
        let stored = hold(
            || async { store::insert(self.database.ready()?, &dead).await },
            |_| true,
            "dead letter",
            shutdown,
        )
        .await;
        match stored {
            None => false,
            Some(_) => {
                settle(delivery.acker).await;
                true
            }
        }
    }
}
