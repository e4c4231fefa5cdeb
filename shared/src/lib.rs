//! What two or more services of the product event pipeline need, and nothing else: first what
//! every service runs on, then, in a folder per owner, the tables (and Redis layouts) one
//! service owns and others read or write through it.
//!
//! Owned by one service:
//! - [`processor`]: products and their cache, orders, and what the dashboard reads of the
//!   inbox, retries, dead letters and shard leases.
//! - [`gateway`]: catalog entries and their cache, product images' records, idempotency records.
//! - [`notifier`]: what the dashboard reads of deliveries and subscriptions.
//!
//! Every service's:
//! - [`auth`]: scoped API keys: the key store, the in-memory check, the middleware.
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
//! - [`api`]: the JSON errors of the operator APIs and their parameter parsing.
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
pub mod cli;
pub mod config;
pub mod connect;
pub mod consume;
pub mod contract;
pub mod dead_letter;
pub mod egress;
pub mod gateway;
pub mod http;
pub mod metric;
pub mod model;
pub mod notifier;
pub mod objects;
pub mod openapi;
pub mod ops;
pub mod processor;
pub mod retention;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod trace;
