//! `Price`: an exact decimal, 0 ≤ price ≤ 1,000,000,000, at most 4 decimal places.

use std::str::FromStr;

use rust_decimal::Decimal;

/// A price. Never a float: `49.99` in is `49.99` out, stored as PostgreSQL `NUMERIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(Decimal);

/// Why a number is not a [`Price`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The text is not a decimal number, or has more digits than a price can hold.
    #[error("must be a decimal number between 0 and 1000000000")]
    NotANumber,
    /// The number is below zero.
    #[error("must not be negative")]
    Negative,
    /// The number is above [`Price::MAX`].
    #[error("must be at most 1000000000")]
    TooLarge,
    /// The number has more than four decimal places.
    #[error("must have at most 4 decimal places")]
    TooPrecise,
}

impl Price {
    /// The largest accepted price.
    pub const MAX: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
    /// The most decimal places accepted.
    pub const MAX_SCALE: u32 = 4;

    /// Checks a decimal against the price rules. Anything with a minus sign is refused, negative
    /// zero included (a sign error at the source, not a price); trailing zeros past four places
    /// are dropped (`1.50000` is `1.5000`).
    pub fn new(value: Decimal) -> Result<Self, PriceError> {
        if value.is_sign_negative() {
            return Err(PriceError::Negative);
        }
        if value > Self::MAX {
            return Err(PriceError::TooLarge);
        }
        if value.normalize().scale() > Self::MAX_SCALE {
            return Err(PriceError::TooPrecise);
        }
        Ok(Self(value.round_dp(Self::MAX_SCALE)))
    }

    /// The exact decimal value.
    pub fn value(self) -> Decimal {
        self.0
    }
}

impl FromStr for Price {
    type Err = PriceError;

    /// Parses JSON number text exactly (plain or with an exponent), never through a float.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('-') {
            return Err(PriceError::Negative);
        }
        let parsed = if s.contains(['e', 'E']) {
            Decimal::from_scientific(s)
        } else {
            Decimal::from_str_exact(s)
        };
        match parsed {
            Ok(value) => Self::new(value),
            // Too many digits for any price.
            Err(_) if s.bytes().all(|b| b.is_ascii_digit()) => Err(PriceError::TooLarge),
            Err(_) => Err(PriceError::NotANumber),
        }
    }
}

impl std::fmt::Display for Price {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Price {
    /// Written as a JSON number with exactly the stored digits.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let number: serde_json::Number = self
            .0
            .to_string()
            .parse()
            .map_err(serde::ser::Error::custom)?;
        number.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Price {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(d)?;
        number.to_string().parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Price {
    /// A JSON number of format `decimal` (the OpenAPI format registry's fixed-point decimal),
    /// with its bounds: what a client generator maps to its exact decimal type, not a float.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::Custom("decimal".into())))
            .minimum(Some(0))
            .maximum(Some(1_000_000_000))
            .description(Some(
                "An exact decimal, never a float: 0 to 1000000000 with at most 4 decimal places, \
                 read and written as a JSON number with exactly its digits (49.99 in is 49.99 out).",
            ))
            .examples([serde_json::json!(49.99)])
            .into()
    }
}

impl utoipa::ToSchema for Price {}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(s: &str) -> Result<String, PriceError> {
        s.parse::<Price>().map(|p| p.to_string())
    }

    #[test]
    fn keeps_the_exact_digits() {
        assert_eq!(price("49.99"), Ok("49.99".into()));
        assert_eq!(price("0.1"), Ok("0.1".into()));
        assert_eq!(price("1000000000"), Ok("1000000000".into()));
        assert_eq!(price("1.2345"), Ok("1.2345".into()));
        assert_eq!(price("4.999e1"), Ok("49.99".into()));
        assert_eq!(price("1.50000"), Ok("1.5000".into()));
    }

    #[test]
    fn negative_zero_is_refused_and_zero_is_fine() {
        assert_eq!(price("-0"), Err(PriceError::Negative));
        assert_eq!(price("-0.0"), Err(PriceError::Negative));
        assert_eq!(price("0"), Ok("0".into()));
    }

    #[test]
    fn refuses_out_of_range_and_too_precise() {
        assert_eq!(price("-0.01"), Err(PriceError::Negative));
        assert_eq!(price("1000000000.0001"), Err(PriceError::TooLarge));
        assert_eq!(price("1.23456"), Err(PriceError::TooPrecise));
        assert_eq!(price("1e400"), Err(PriceError::NotANumber));
        assert_eq!(
            price("99999999999999999999999999999999999"),
            Err(PriceError::TooLarge)
        );
        assert_eq!(
            price("-99999999999999999999999999999999999"),
            Err(PriceError::Negative)
        );
        assert_eq!(price("abc"), Err(PriceError::NotANumber));
    }

    #[test]
    fn round_trips_through_json_exactly() {
        let p: Price = serde_json::from_str("49.99").expect("valid price");
        assert_eq!(serde_json::to_string(&p).expect("serialises"), "49.99");
    }
}
