//! The retry ladder from the shard handler's side: republishing a failed event to the rung
//! for its next delay, and noting it for operators' lookups.

use std::time::Duration;

use lapin::{Channel, types::AMQPValue};
use shared::{contract::headers, topology::Topology};

use super::ShardHandler;
use shared::dead_letter::Poison;

impl ShardHandler {
    /// Records that `event` waits on the retry ladder (best effort: it is for operators'
    /// lookups; the retry itself is already safely in its queue).
    pub(super) async fn note_retry(
        &self,
        event: &str,
        attempts: u32,
        error: &str,
        delay: Duration,
    ) {
        let noted =
            crate::store::retries::note(self.deps.database.pool(), event, attempts, error, delay)
                .await;
        if let Err(e) = noted {
            tracing::debug!(event_id = event, error = %e, "Could not record the retry for lookups.");
        }
    }
}

/// Publishes a failed message to the retry rung for `delay` with its attempt count and last
/// error, and waits for the confirm.
pub(super) async fn schedule_retry(
    channel: &Channel,
    topology: &Topology,
    poison: &Poison<'_>,
    delay: Duration,
    error: &str,
) -> anyhow::Result<()> {
    let mut table = poison.properties.headers().clone().unwrap_or_default();
    table.insert(
        headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(poison.attempts)),
    );
    table.insert(
        headers::DEAD_ERROR.into(),
        AMQPValue::LongString(error.into()),
    );
    if !table.inner().contains_key(headers::DEAD_AT) {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("now always formats as RFC 3339");
        table.insert(headers::DEAD_AT.into(), AMQPValue::LongString(now.into()));
    }
    poison
        .send_to(channel, &topology.retry_exchange(delay), table)
        .await
}
