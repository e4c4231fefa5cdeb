//! End-to-end tests: gateway → RabbitMQ → processor → PostgreSQL and Redis, all real.

mod dead_letters;
mod delivery;
mod downstream;
mod helpers;
mod orders;
mod outages;
mod recovery;
mod state;
