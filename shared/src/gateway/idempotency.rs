//! The gateway's idempotency records in Redis: their layout, and where a record stands (the
//! gateway writes them, `gateway::idempotency`; the dashboard reads where one stands).

use crate::{
    connect::redis::{CommandError, timed},
    contract::EventKey,
    topology::Namespace,
};

/// Redis key of an event's idempotency record. Each kind and each owner (API key) has a key
/// space of its own, so an event keyed `order:o1` and the order `o1` never meet, nor two API
/// keys' `evt-1`. (An owner's name holds no `:`, so owner and id never run into each other.)
pub fn key(namespace: &Namespace, event: &EventKey) -> String {
    if event.owner.is_legacy() {
        return format!(
            "{}:idem:{}:{}",
            namespace.as_str(),
            event.kind.as_str(),
            event.id.as_str()
        );
    }
    format!(
        "{}:idem-key:{}:{}:{}",
        namespace.as_str(),
        event.kind.as_str(),
        event.owner.as_str(),
        event.id.as_str()
    )
}

/// Where a record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Being published.
    Lease,
    /// Published, but the broker's answer never came.
    Unclear,
    /// Accepted: the broker confirmed it.
    Done,
}

/// Where the record of `event` stands; `None` when there is none (sent without a key, expired,
/// or never accepted).
pub async fn state(
    redis: &mut (impl redis::aio::ConnectionLike + Send),
    namespace: &Namespace,
    event: &EventKey,
) -> Result<Option<State>, CommandError> {
    let state: Option<String> = timed(
        redis::cmd("HGET")
            .arg(key(namespace, event))
            .arg("state")
            .query_async(redis),
    )
    .await?;
    Ok(state.and_then(|s| match s.as_str() {
        "lease" => Some(State::Lease),
        "unclear" => Some(State::Unclear),
        "done" => Some(State::Done),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::IngestKind;

    fn event(kind: IngestKind, owner: &str, id: &str) -> EventKey {
        EventKey {
            kind,
            owner: owner.parse().expect("valid"),
            id: id.parse().expect("valid"),
        }
    }

    #[test]
    fn keys_of_events_and_orders_and_of_two_api_keys_never_meet() {
        let ns: Namespace = "p".parse().expect("valid");
        assert_ne!(
            key(&ns, &event(IngestKind::ProductUpdate, "a", "order:o1")),
            key(&ns, &event(IngestKind::OrderCreate, "a", "order:o1"))
        );
        assert_ne!(
            key(&ns, &event(IngestKind::ProductUpdate, "a", "e1")),
            key(&ns, &event(IngestKind::ProductUpdate, "b", "e1"))
        );
        // Nor a legacy record whose id looks like an owner and an id.
        assert_ne!(
            key(&ns, &event(IngestKind::ProductUpdate, "", "a:e1")),
            key(&ns, &event(IngestKind::ProductUpdate, "a", "e1"))
        );
        assert_eq!(
            key(&ns, &event(IngestKind::ProductUpdate, "", "e1")),
            "p:idem:product.update:e1",
            "the legacy layout is kept"
        );
    }
}
