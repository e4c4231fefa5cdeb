//! `EventId`: the one key an event carries end to end (idempotency record, AMQP `message_id`,
//! inbox row, downstream event).

/// An event's identifier: the client's `Idempotency-Key`, else the body's `event_id`, else a
/// UUIDv7 assigned by the gateway ([`EventId::generate`]). 1–255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

/// Why a string is not an [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventIdError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than [`EventId::MAX_LEN`].
    #[error("must be at most 255 characters")]
    TooLong,
    /// The string holds a space, a control character or a non-ASCII character.
    #[error("may contain only visible ASCII characters (no spaces or control characters)")]
    BadCharacter,
}

impl EventId {
    /// Longest accepted identifier (the AMQP `message_id` limit).
    pub const MAX_LEN: usize = 255;
}

super::identifier!(EventId, EventIdError, u8::is_ascii_graphic);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<EventId>(), Ok(a));
    }

    #[test]
    fn refuses_empty_long_spaces_and_control_characters() {
        assert_eq!("".parse::<EventId>(), Err(EventIdError::Empty));
        assert_eq!(
            "k".repeat(256).parse::<EventId>(),
            Err(EventIdError::TooLong)
        );
        assert!("k".repeat(255).parse::<EventId>().is_ok());
        for bad in ["a b", "a\tb", "a\u{7f}", "ключ"] {
            assert_eq!(
                bad.parse::<EventId>(),
                Err(EventIdError::BadCharacter),
                "{bad:?}"
            );
        }
    }
}
