//! Ids and keys built from text, for the contract's unit tests.

use super::{EventKey, IngestKind};
use crate::model::EventId;

/// The event id `s`, which the test knows to be valid.
pub(super) fn id(s: &str) -> EventId {
    s.parse().expect("valid")
}

/// The key of the `kind` event `source` from `owner`, which the test knows to be valid.
pub(super) fn key(kind: IngestKind, owner: &str, source: &EventId) -> EventKey {
    EventKey {
        kind,
        owner: owner.parse().expect("valid"),
        id: source.clone(),
    }
}
