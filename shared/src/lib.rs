//! What two or more services of the product event pipeline need, and nothing else.
//!
//! - [`auth`]: scoped API keys: the key store, the in-memory check, the middleware.
//! - [`catalog`]: catalog entries as stored and their cache records (gateway and imager).
//! - [`model`]: the validated value types (`ProductId`, `Price`, `Stock`, `EventId`).
//! - [`contract`]: the wire contract: the ingest message, the cached product view, header names.
//! - [`dead_letter`]: setting a message aside with its reason and where it came from.
//! - [`announce`]: publishing a downstream event to `{ns}.events`, the one way every service does.
//! - [`topology`]: exchange and queue names, shard routing, and their idempotent declaration.
//! - [`config`]: reading typed configuration from the environment; every setting's default and
//!   meaning ([`config::settings`]).
//! - [`cli`]: a service binary's command line (`healthcheck`, `--help`, `--version`).
//! - [`connect`]: connection builders for RabbitMQ, Redis and PostgreSQL.
//! - [`consume`]: the queue consumer loop the processor, the notifier and the imager run, and
//!   settling deliveries.
//! - [`products`]: the products table and read cache (the processor writes, others read).
//! - [`orders`]: the orders table (the processor writes, the gateway and dashboard read).
//! - [`api`]: the JSON errors of the operator APIs and their parameter parsing.
//! - [`images`]: product images' records (the gateway records, the imager processes).
//! - [`objects`]: object storage for image bytes (a local folder or S3).
//! - [`egress`]: the guard that keeps outbound requests off private networks.
//! - [`http`]: the hardened HTTP server every service runs (timeouts, limits, load shedding).
//! - [`openapi`]: what every service's OpenAPI document shares (security, errors, ops).
//! - [`ops`]: the `/health`, `/ready` and `/metrics` endpoints every service serves.
//! - [`telemetry`]: logs and the metrics recorder.
//! - [`service`]: the one shape of a service: listener, tracked tasks, broker, drain.
//! - [`shutdown`]: the shutdown signal.
//! - [`trace`]: OpenTelemetry spans and `traceparent` propagation through the broker.
#![forbid(unsafe_code)]

pub mod announce;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod connect;
pub mod consume;
pub mod contract;
pub mod dead_letter;
pub mod egress;
pub mod http;
pub mod images;
pub mod metric;
pub mod model;
pub mod objects;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod products;
pub mod retention;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod trace;
