//! `Stock`: a whole number of units, 0 ≤ stock ≤ 2^31−1.

use std::str::FromStr;

/// Units in stock. Fits PostgreSQL `INTEGER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stock(i32);

/// Why a number is not a [`Stock`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    /// The number has a fraction or an exponent.
    #[error("must be a whole number")]
    NotAnInteger,
    /// The number is below zero.
    #[error("must not be negative")]
    Negative,
    /// The number is above 2147483647.
    #[error("must be at most 2147483647")]
    TooLarge,
}

impl Stock {
    /// Checks a count against the stock rules.
    pub fn new(value: i64) -> Result<Self, StockError> {
        if value < 0 {
            return Err(StockError::Negative);
        }
        i32::try_from(value)
            .map(Self)
            .map_err(|_| StockError::TooLarge)
    }
}

impl FromStr for Stock {
    type Err = StockError;

    /// Parses JSON number text; `1.5`, `1.0` and `1e3` are not whole-number literals, and
    /// anything with a minus sign (`-0` included) is negative.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('-') {
            return Err(StockError::Negative);
        }
        if s.contains(['.', 'e', 'E']) {
            return Err(StockError::NotAnInteger);
        }
        match s.parse::<i64>() {
            Ok(v) => Self::new(v),
            Err(_) if s.starts_with('-') => Err(StockError::Negative),
            Err(_) if s.bytes().all(|b| b.is_ascii_digit()) => Err(StockError::TooLarge),
            Err(_) => Err(StockError::NotAnInteger),
        }
    }
}

super::whole_number!(Stock);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_full_range() {
        assert_eq!("0".parse::<Stock>().map(Stock::value), Ok(0));
        assert_eq!(
            "2147483647".parse::<Stock>().map(Stock::value),
            Ok(i32::MAX)
        );
    }

    #[test]
    fn refuses_fractions_negatives_and_overflow() {
        assert_eq!("1.5".parse::<Stock>(), Err(StockError::NotAnInteger));
        assert_eq!("1e3".parse::<Stock>(), Err(StockError::NotAnInteger));
        assert_eq!("-1".parse::<Stock>(), Err(StockError::Negative));
        assert_eq!("-0".parse::<Stock>(), Err(StockError::Negative));
        assert_eq!("2147483648".parse::<Stock>(), Err(StockError::TooLarge));
        assert_eq!(
            "99999999999999999999999".parse::<Stock>(),
            Err(StockError::TooLarge)
        );
        assert_eq!(
            "-99999999999999999999999".parse::<Stock>(),
            Err(StockError::Negative)
        );
    }
}
