//! What the dashboard reads of the notifier's tables: where deliveries stand ([`deliveries`])
//! and how many subscriptions are disabled ([`subscriptions`]).

pub mod deliveries;
pub mod subscriptions;
