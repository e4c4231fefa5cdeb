//! Value types with rules, built only through parsing: past the edge of a service nothing
//! handles a bare string or float where one of these belongs.

mod event_id;
mod order;
mod price;
mod product_id;
mod stock;

pub use event_id::{EventId, EventIdError};
pub use order::{Email, EmailError, OrderId, Quantity, QuantityError, Rejection};
pub use price::{Price, PriceError};
pub use product_id::{ProductId, ProductIdError};
pub use stock::{Stock, StockError};

/// Implements `Serialize`/`Deserialize` for a string newtype through its `FromStr` and `as_str`.
macro_rules! string_serde {
    ($ty:ty) => {
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
    };
}
pub(crate) use string_serde;
