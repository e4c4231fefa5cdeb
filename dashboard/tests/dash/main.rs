//! The dashboard against a running pipeline (gateway, processor, notifier, all in-process on
//! the real RabbitMQ, Redis and PostgreSQL), through its JSON API and in headless Chromium.

mod api;
mod browser;
mod helpers;
mod session;
