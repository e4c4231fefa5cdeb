//! Integration tests of the gateway against the real RabbitMQ, Redis and PostgreSQL.

mod abuse;
mod auth;
mod config;
mod dependencies;
mod helpers;
mod idempotency;
mod limits;
mod ops;
mod orders;
mod reads;
mod shards;
mod tls;
mod validation;
