//! Order values: `OrderId` (the product id alphabet), `Quantity` (a whole number ≥ 1), `Email`
//! (a plausible address) and `Rejection` (why an order was refused).

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ProductId, ProductIdError, Stock, StockError};

/// An order's identifier, chosen by the client; also its idempotency key. Same rules as a
/// product id: 1–128 characters of ASCII letters, digits, `-`, `_`, `.`, `:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl FromStr for OrderId {
    type Err = ProductIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<ProductId>().map(|_| Self(s.to_owned()))
    }
}

super::text_value!(OrderId);

/// How many units an order takes: 1 to 2147483647.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(i32);

/// Why a number is not a [`Quantity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a whole number in range.
    #[error("{0}")]
    Number(StockError),
    /// Zero.
    #[error("must be at least 1")]
    Zero,
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n = s.parse::<Stock>().map_err(|e| match e {
            StockError::Negative => QuantityError::Zero,
            other => QuantityError::Number(other),
        })?;
        if n.value() == 0 {
            return Err(QuantityError::Zero);
        }
        Ok(Self(n.value()))
    }
}

super::whole_number!(Quantity);

/// A contact address for an order: at most 254 characters, one `@` with text on both sides and
/// a dot in the domain, no spaces or control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an email address such as name@example.com")]
pub struct EmailError;

impl FromStr for Email {
    type Err = EmailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((local, domain)) = s.split_once('@') else {
            return Err(EmailError);
        };
        let clean = s.len() <= 254
            && !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && s.chars().all(|c| !c.is_whitespace() && !c.is_control());
        if clean {
            Ok(Self(s.to_owned()))
        } else {
            Err(EmailError)
        }
    }
}

super::text_value!(Email);

/// Why an order was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Rejection {
    /// No event ever created the product.
    UnknownProduct,
    /// Less stock than ordered (stock never set counts as none).
    InsufficientStock,
}

impl Rejection {
    /// Every reason.
    pub const ALL: [Self; 2] = [Self::UnknownProduct, Self::InsufficientStock];

    /// The reason as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownProduct => "unknown_product",
            Self::InsufficientStock => "insufficient_stock",
        }
    }

    /// The reason named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_whole_numbers_from_one() {
        assert_eq!("2".parse::<Quantity>().map(Quantity::value), Ok(2));
        assert_eq!("0".parse::<Quantity>(), Err(QuantityError::Zero));
        assert_eq!("-3".parse::<Quantity>(), Err(QuantityError::Zero));
        assert!(matches!(
            "1.5".parse::<Quantity>(),
            Err(QuantityError::Number(_))
        ));
        assert!(matches!(
            "2147483648".parse::<Quantity>(),
            Err(QuantityError::Number(_))
        ));
    }

    #[test]
    fn emails_are_plausible_addresses() {
        assert!("a@b.co".parse::<Email>().is_ok());
        for bad in [
            "", "a", "@b.co", "a@b", "a@.co", "a b@c.co", "a@b@c.co", "a@b.co.",
        ] {
            assert_eq!(bad.parse::<Email>(), Err(EmailError), "{bad:?}");
        }
    }
}
