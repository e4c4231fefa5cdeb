//! `ProductId`: 1–128 characters of ASCII letters, digits, `-`, `_`, `.` and `:`.

/// A product's identifier (also an order's `sku`); a catalog entry created without one is given
/// a UUIDv7 ([`ProductId::generate`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(String);

/// Why a string is not a [`ProductId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductIdError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than [`ProductId::MAX_LEN`].
    #[error("must be at most 128 characters")]
    TooLong,
    /// The string holds a character outside the allowed set.
    #[error("may contain only ASCII letters, digits, '-', '_', '.' and ':'")]
    BadCharacter,
}

impl ProductId {
    /// Longest accepted identifier, in characters.
    pub const MAX_LEN: usize = 128;
}

/// The bytes a product id may hold: ASCII letters, digits, `-`, `_`, `.` and `:`.
fn allowed(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
}

super::identifier!(ProductId, ProductIdError, allowed);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!("abc-123_X.y:z".parse::<ProductId>().is_ok());
        assert!("a".repeat(128).parse::<ProductId>().is_ok());
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters() {
        for (input, error) in [
            (String::new(), ProductIdError::Empty),
            ("a".repeat(129), ProductIdError::TooLong),
        ] {
            assert_eq!(input.parse::<ProductId>(), Err(error));
        }
        for bad in ["a b", "a/b", "é", "a\u{0}b", "a\nb", "a*"] {
            assert_eq!(
                bad.parse::<ProductId>(),
                Err(ProductIdError::BadCharacter),
                "{bad:?}"
            );
        }
    }
}
