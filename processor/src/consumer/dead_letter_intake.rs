//! The dead-letter queue's handler: records each dead letter in PostgreSQL, then acks.
//!
//! Text PostgreSQL cannot hold (a NUL byte) was already made storable by
//! [`intake::record`]; should PostgreSQL still refuse the row, the dead letter is kept with
//! its body and reason and the refusal as its error, so the queue never stops on it.

use shared::connect::postgres::{Database, Fault};

use crate::dead_letters::{intake, store};
use shared::consume::{Consuming, DeliveryHandler, Received, hold, settle};

/// Records dead letters in PostgreSQL.
pub struct Intake {
    /// Where the `dead_letters` table lives.
    pub database: Database,
}

impl DeliveryHandler for Intake {
    async fn on_delivery(&self, delivery: Received, at: Consuming<'_>) -> bool {
        let shutdown = at.shutdown;
        let dead = intake::record(&delivery);
        let stored = hold(
            || async { store::insert(self.database.ready()?, &dead).await },
            Fault::worth_retrying,
            "dead letter",
            shutdown,
        )
        .await;
        let stored = match stored {
            Some(Err(refused)) => {
                tracing::error!(dead_letter_id = %dead.id, error = %refused, "PostgreSQL refused a dead letter's fields; keeping it with its body and reason only.");
                let kept = intake::plain(dead, &refused);
                hold(
                    || async { store::insert(self.database.ready()?, &kept).await },
                    |_| true,
                    "dead letter",
                    shutdown,
                )
                .await
            }
            other => other,
        };
        match stored {
            None => false,
            Some(_) => {
                settle(delivery.pending).await;
                true
            }
        }
    }
}
