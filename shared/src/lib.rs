//! What two or more services of the product event pipeline need, and nothing else.
//!
//! - [`model`]: the validated value types (`ProductId`, `Price`, `Stock`, `EventId`).
//! - [`contract`]: the wire contract: the ingest message, the cached product view, header names.
//! - [`topology`]: exchange and queue names, shard routing, and their idempotent declaration.
//! - [`config`]: reading typed configuration from the environment.
//! - [`connect`]: connection builders for RabbitMQ, Redis and PostgreSQL.
//! - [`consume`]: the queue consumer loop the processor and the notifier run.
//! - [`products`]: reading a product's current state from PostgreSQL.
//! - [`api`]: the JSON errors of the operator APIs and their parameter parsing.
//! - [`ops`]: the `/health`, `/ready` and `/metrics` endpoints every service serves.
//! - [`telemetry`]: logs and the metrics recorder.
//! - [`shutdown`]: the shutdown signal.
//! - [`trace`]: OpenTelemetry spans and `traceparent` propagation through the broker.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod connect;
pub mod consume;
pub mod contract;
pub mod model;
pub mod ops;
pub mod products;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod trace;
