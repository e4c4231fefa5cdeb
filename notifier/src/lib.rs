//! The notifier: takes the pipeline's downstream events off `{ns}.notifier` and delivers each
//! to every subscriber that wants its type, as a signed webhook (Standard Webhooks), exactly
//! once per (event, subscriber), with retries on a schedule, a record of every attempt, and
//! endpoints disabled when they keep failing.
//!
//! - [`bindings`]: the notifier queue receives only the types some subscription wants.
//! - [`intake`]: events → `notifications` + one pending delivery per matching subscription.
//! - [`delivery`]: the worker that sends due deliveries and records what came of them.
//! - [`signing`]: secrets and `webhook-signature`.
//! - [`api`]: subscriptions, notifications and deliveries over HTTP.
//! - [`store`]: the notifier's tables, one owning module each (the dashboard reads them here).
//! - [`startup`]: wiring and the drain.
#![forbid(unsafe_code)]

pub mod api;
pub mod bindings;
pub mod config;
pub mod delivery;
pub mod intake;
pub mod openapi;
pub mod signing;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::Application;
