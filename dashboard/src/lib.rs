//! The dashboard: the operator's window on the pipeline. One binary serves a live page (no
//! front-end build: the page is plain HTML, CSS and JavaScript compiled into the binary) and
//! its JSON API:
//!
//! - [`snapshot`]: every second, the services' metrics and readiness, queue depths and
//!   database counts, pushed to open pages as server-sent events (`/api/v1/stream`).
//! - [`dead_letters`]: list, inspect, replay (with a dry run) and purge, through the processor.
//! - [`lookup`]: an event, a product, an order, and `/api/v1/summary`.
//! - [`metrics_text`]: reading the services' Prometheus text.
//! - [`session`]: operators sign in with an `ops` key; the cookie, and the same-origin rule.
#![forbid(unsafe_code)]

pub mod config;
pub mod dead_letters;
pub mod lookup;
pub mod metrics_text;
pub mod session;
pub mod snapshot;
pub mod startup;

pub use config::Config;
pub use startup::Application;
