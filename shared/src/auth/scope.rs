//! What a key may do: each endpoint wants one [`Scope`]; a key holds a [`Scopes`] set.

use std::fmt;

/// One permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `POST /events`: change prices and stock.
    EventsWrite,
    /// `POST /orders`: place orders (which take stock).
    OrdersWrite,
    /// `GET /products/...`: read products.
    ProductsRead,
    /// `GET /orders/{id}`: read the orders this key placed (customers' email addresses
    /// included).
    OrdersRead,
    /// `GET /orders/{id}` of any key's orders: for support and fulfilment, which need every
    /// order (customers' email addresses included). Includes [`Scope::OrdersRead`].
    OrdersReadAll,
    /// The catalog's write endpoints: create and edit products, upload images.
    CatalogWrite,
    /// Operators: dead letters, webhook subscriptions and deliveries, the dashboard.
    Ops,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 7] = [
        Self::EventsWrite,
        Self::OrdersWrite,
        Self::ProductsRead,
        Self::OrdersRead,
        Self::CatalogWrite,
        Self::Ops,
        Self::OrdersReadAll,
    ];

    /// The scope's name, as keys are created with and errors name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::OrdersWrite => "orders:write",
            Self::ProductsRead => "products:read",
            Self::OrdersRead => "orders:read",
            Self::CatalogWrite => "catalog:write",
            Self::Ops => "ops",
            Self::OrdersReadAll => "orders:read_all",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

/// A scope list that names something that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; known: {known}, or * for all", known = known())]
pub struct UnknownScope(pub String);

fn known() -> String {
    Scope::ALL.map(Scope::as_str).join(", ")
}

impl Scopes {
    /// Every scope.
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    /// True when `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        // Reading every key's orders includes reading one's own.
        let implied = scope == Scope::OrdersRead && self.0 & Scope::OrdersReadAll.bit() != 0;
        self.0 & scope.bit() != 0 || implied
    }

    /// The scopes' names, in [`Scope::ALL`] order.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect()
    }

    /// Parses a comma-separated list of scope names, or `*` for every scope.
    pub fn parse_list(list: &str) -> Result<Self, UnknownScope> {
        if list.trim() == "*" {
            return Ok(Self::all());
        }
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Scope::parse(s).ok_or_else(|| UnknownScope(s.to_owned())))
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        Self(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_by_name_or_star() {
        let scopes = Scopes::parse_list("events:write, ops").expect("valid");
        assert!(scopes.contains(Scope::EventsWrite) && scopes.contains(Scope::Ops));
        assert!(!scopes.contains(Scope::OrdersRead));
        assert_eq!(scopes.names(), ["events:write", "ops"]);
        assert_eq!(Scopes::parse_list("*"), Ok(Scopes::all()));
        assert_eq!(
            Scopes::parse_list("events:write,admin"),
            Err(UnknownScope("admin".into()))
        );
    }
}
