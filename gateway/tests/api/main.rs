//! Integration tests of the gateway against the real RabbitMQ, Redis and PostgreSQL.

mod abuse;
mod config;
mod dependencies;
mod helpers;
mod idempotency;
mod ops;
mod orders;
mod reads;
mod validation;
