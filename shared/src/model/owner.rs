//! Whose an event or an order is: the name of the API key that sent it. Identifiers live in
//! the space of their key (as Stripe scopes them by account): two keys may use the same
//! idempotency key, event id or order id without meeting.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The API key (by name) an event or order belongs to; empty for those accepted before
/// identifiers were scoped by key, which share one space (and keep meaning what they meant).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner(String);

/// Why a string is not an [`Owner`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "an owner is an API key's name: 1-64 characters of ASCII letters, digits, '.', '_' and '-'"
)]
pub struct OwnerError;

impl Owner {
    /// The shared space of events accepted before identifiers were scoped by key.
    pub fn legacy() -> Self {
        Self::default()
    }

    /// Whether this is the shared space of earlier events.
    pub fn is_legacy(&self) -> bool {
        self.0.is_empty()
    }

    /// The space of the key named `name` (a stored key's name, which follows the owner rules:
    /// they are checked when a key is made or imported); the legacy space if it does not.
    pub fn of_key(name: &str) -> Self {
        name.parse().unwrap_or_default()
    }

    /// The key's name ("" for the legacy space).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Owner {
    type Err = OwnerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.is_empty()
            || (s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(OwnerError)
        }
    }
}

impl TryFrom<String> for Owner {
    type Error = OwnerError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> Self {
        owner.0
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_a_key_name_or_the_legacy_space() {
        assert!("storefront-2".parse::<Owner>().is_ok());
        assert!(Owner::legacy().is_legacy());
        assert!("".parse::<Owner>().is_ok_and(|o| o.is_legacy()));
        for bad in ["a b", "a/b", &"n".repeat(65), "ключ"] {
            assert_eq!(bad.parse::<Owner>(), Err(OwnerError), "{bad:?}");
        }
        let owner: Owner = serde_json::from_str("\"ci\"").expect("valid");
        assert_eq!(serde_json::to_string(&owner).expect("serialises"), "\"ci\"");
        assert!(serde_json::from_str::<Owner>("\"a b\"").is_err());
    }
}
