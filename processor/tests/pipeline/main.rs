//! End-to-end tests: gateway → RabbitMQ → processor → PostgreSQL and Redis → notifier →
//! webhooks, all real.

mod access;
mod dead_letters;
mod delivery;
mod downstream;
mod helpers;
mod notify;
mod orders;
mod outages;
mod ownership;
mod recovery;
mod replay_jobs;
mod retention;
mod roles;
mod schema;
mod sharing;
mod state;
mod supervision;
mod trace;
