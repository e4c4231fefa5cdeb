//! The processor: applies product events from the ingest shards to PostgreSQL exactly once.
//!
//! [`consumer`] owns the loops over the shards and the dead-letter queue and maps outcomes to
//! ack, retry or dead-letter; [`handler`] applies a batch (knowing nothing of AMQP) through
//! [`store`] (decided without I/O, then inbox, products and orders in one transaction) and
//! refreshes the read cache, keeping [`downstream`] events on the inbox rows; [`stage`] times each
//! stage of a batch; [`dead_letters`] sets poison aside with its reason and serves the
//! operator's dead-letter API; [`shards`] shares the shards among the live replicas and fences
//! each batch by its shard's lease; [`startup`] wires it together.
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod dead_letters;
pub mod downstream;
pub mod handler;
pub mod openapi;
pub mod shards;
pub mod stage;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::Application;
