//! The processor's tests, fed through the gateway: gateway → RabbitMQ → processor → PostgreSQL,
//! Redis and the downstream events, all real (what reaches the notifier and its webhooks: the
//! `stack` crate's `end_to_end` tests).

mod access;
mod dead_letters;
mod delivery;
mod downstream;
mod helpers;
mod orders;
mod outages;
mod ownership;
mod recovery;
mod replay_jobs;
mod roles;
mod schema;
mod sharing;
mod state;
mod supervision;
