//! The notifier against the real RabbitMQ and PostgreSQL, delivering to a local webhook
//! receiver; each test in its own namespace.

mod delivery;
mod guard;
mod helpers;
mod logs;
mod subscriptions;
mod tools;
