//! A downstream event's id, [`DownstreamId`]: the AMQP message id of the event and the
//! `webhook-id` of its deliveries, made here and nowhere else.

use std::str::FromStr;

use uuid::Uuid;

use super::{EventKey, EventType};

/// A downstream event's id: `msg_` and 32 hexadecimal digits. Made by [`DownstreamId::of`]
/// for an event caused by an ingest event and by [`DownstreamId::tagged`] for one with a
/// cause of its own (an image, a test event); read back (from a message id, a row) through
/// `FromStr`, which takes any id an earlier version may have made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DownstreamId(String);

/// Why a string is not a [`DownstreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownstreamIdError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than an AMQP message id may be.
    #[error("must be at most 255 characters")]
    TooLong,
    /// The string holds a character that cannot travel in a header.
    #[error("may contain only visible ASCII characters")]
    BadCharacter,
}

impl DownstreamId {
    /// The id of the downstream event of `event_type` caused by the event `source`: a SHA-256
    /// over its kind, owner, id and the type (the owner left out for the legacy space, so
    /// events accepted before keys scoped ids keep their ids). The same on every re-emission,
    /// retry and subscriber, opaque, and 36 characters whatever the source id's length, so it
    /// fits everywhere it goes (AMQP message id, the `webhook-id` header, a URL path).
    pub fn of(source: &EventKey, event_type: EventType) -> Self {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let owner = (!source.owner.is_legacy()).then_some(source.owner.as_str());
        // Separated by a byte no part can contain (ids and names are visible ASCII).
        for part in [
            Some(source.kind.as_str()),
            owner,
            Some(source.id.as_str()),
            Some(event_type.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("msg_{hex}"))
    }

    /// The id of an event whose cause has an id of its own, `tag`: unique as the tag is.
    pub fn tagged(tag: Uuid) -> Self {
        Self(format!("msg_{}", tag.simple()))
    }
}

impl FromStr for DownstreamId {
    type Err = DownstreamIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use DownstreamIdError::{BadCharacter, Empty, TooLong};
        let visible = |b: &u8| b.is_ascii_graphic();
        crate::model::checked(s, 255, visible, [Empty, TooLong, BadCharacter]).map(Self)
    }
}

crate::model::text_value!(DownstreamId);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        contract::{
            IngestKind,
            samples::{id, key},
        },
        model::EventId,
    };

    #[test]
    fn ids_are_short_stable_and_distinct_per_kind_owner_source_and_type() {
        let long = id(&"k".repeat(255));
        let update = |owner: &str, source: &EventId| key(IngestKind::ProductUpdate, owner, source);
        let a = DownstreamId::of(&update("", &long), EventType::StockLow);
        let text = a.as_str();
        assert_eq!(text.len(), 36);
        assert!(text.starts_with("msg_") && text[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, DownstreamId::of(&update("", &long), EventType::StockLow));
        let o1 = id("order:o1");
        assert_ne!(
            DownstreamId::of(&update("", &o1), EventType::StockLow),
            DownstreamId::of(&key(IngestKind::OrderCreate, "", &o1), EventType::StockLow)
        );
        let order = |owner: &str| key(IngestKind::OrderCreate, owner, &o1);
        assert_ne!(
            DownstreamId::of(&order(""), EventType::OrderCreated),
            DownstreamId::of(&order(""), EventType::OrderRejected)
        );
        // Two keys' identical ids make two events.
        assert_ne!(
            DownstreamId::of(&order("shop-a"), EventType::OrderCreated),
            DownstreamId::of(&order("shop-b"), EventType::OrderCreated)
        );
        assert_ne!(
            DownstreamId::of(&order("shop-a"), EventType::OrderCreated),
            DownstreamId::of(&order(""), EventType::OrderCreated)
        );
        // Events of the legacy space keep the ids they had: kind, id and type only.
        use sha2::{Digest, Sha256};
        let mut before = Sha256::new();
        for part in ["order.create", "order:o1", "order.created"] {
            before.update(part.as_bytes());
            before.update([0u8]);
        }
        let hex: String = before.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            DownstreamId::of(&order(""), EventType::OrderCreated).as_str(),
            format!("msg_{hex}")
        );
    }

    #[test]
    fn ids_read_back_are_any_visible_text_an_earlier_version_made() {
        let tagged = DownstreamId::tagged(Uuid::nil());
        assert_eq!(tagged.as_str(), format!("msg_{}", "0".repeat(32)));
        assert_eq!(tagged.as_str().parse(), Ok(tagged));
        assert_eq!(
            "evt-1".parse::<DownstreamId>().map(|i| i.to_string()),
            Ok("evt-1".into())
        );
        assert_eq!("".parse::<DownstreamId>(), Err(DownstreamIdError::Empty));
        assert_eq!(
            "a".repeat(256).parse::<DownstreamId>(),
            Err(DownstreamIdError::TooLong)
        );
        for bad in ["a b", "a\nb", "é"] {
            assert_eq!(
                bad.parse::<DownstreamId>(),
                Err(DownstreamIdError::BadCharacter)
            );
        }
    }
}
