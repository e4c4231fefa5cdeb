//! The gateway: HTTP ingress of the product event pipeline.
//!
//! It parses and validates each request ([`request`]), enforces idempotency in Redis
//! ([`idempotency`]), publishes a persistent message and answers `202` only after the broker's
//! confirm ([`publisher`]), and serves product reads from the Redis cache with PostgreSQL behind
//! it ([`routes`]); [`catalog`] stores the catalog's entries and lists them. [`startup`] wires
//! it together, and [`shared::api`] maps every failure to one problem (RFC 9457); [`keys`] is
//! the command that manages API keys and [`migrate`] the one that prepares PostgreSQL for the
//! services' own roles.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod config;
pub mod idempotency;
pub mod keys;
pub mod migrate;
pub mod openapi;
pub mod publisher;
pub mod request;
pub mod routes;
pub mod startup;

pub use config::Config;
pub use startup::Application;
