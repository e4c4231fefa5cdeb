//! Value types with rules, built only through parsing: past the edge of a service nothing
//! handles a bare string or float where one of these belongs.

mod event_id;
mod order;
mod owner;
mod price;
mod product_id;
mod stock;

pub use event_id::{EventId, EventIdError};
pub use order::{Email, EmailError, OrderId, Quantity, QuantityError, Rejection};
pub use owner::{Owner, OwnerError};
pub use price::{Price, PriceError};
pub use product_id::{ProductId, ProductIdError};
pub use stock::{Stock, StockError};

/// The text checks identifiers share: `Ok(s)` if `s` is not empty, at most `max` bytes and made
/// only of `allowed` bytes, else the matching error of `[empty, too_long, bad_character]`.
pub(crate) fn checked<E>(
    s: &str,
    max: usize,
    allowed: fn(&u8) -> bool,
    errors: [E; 3],
) -> Result<String, E> {
    let [empty, too_long, bad_character] = errors;
    if s.is_empty() {
        Err(empty)
    } else if s.len() > max {
        Err(too_long)
    } else if !s.as_bytes().iter().all(allowed) {
        Err(bad_character)
    } else {
        Ok(s.to_owned())
    }
}

/// For an identifier: a string newtype with a `MAX_LEN` whose error enum is `Empty`, `TooLong`
/// and `BadCharacter`. Gives it `generate` (a UUIDv7), a `FromStr` through `checked` with the
/// bytes `allowed`, and what `text_value!` gives.
macro_rules! identifier {
    ($ty:ident, $error:ident, $allowed:expr) => {
        impl $ty {
            /// A new time-ordered identifier (UUIDv7).
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }
        }
        impl std::str::FromStr for $ty {
            type Err = $error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                use $error::{BadCharacter, Empty, TooLong};
                super::checked(s, Self::MAX_LEN, $allowed, [Empty, TooLong, BadCharacter]).map(Self)
            }
        }
        super::text_value!($ty);
    };
}
pub(crate) use identifier;

/// For a string newtype built through its `FromStr`: `as_str`, `Display`, `Borrow<str>`, and
/// `Serialize`/`Deserialize` as a JSON string.
macro_rules! text_value {
    ($ty:ty) => {
        impl $ty {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        // Equal values have equal text, so maps keyed by the value can be read by text.
        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}
pub(crate) use text_value;

/// For an `i32` newtype built through its `FromStr`: `value`, `Display`, and
/// `Serialize`/`Deserialize` as a JSON number (read back through `FromStr`, so its rules hold).
macro_rules! whole_number {
    ($ty:ty) => {
        impl $ty {
            /// The number.
            pub fn value(self) -> i32 {
                self.0
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_i32(self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let number = serde_json::Number::deserialize(d)?;
                number.to_string().parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use whole_number;
