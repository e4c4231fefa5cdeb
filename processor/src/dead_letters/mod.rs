//! Dead letters, which the processor owns: taking them off the dead-letter queue into
//! PostgreSQL ([`intake`], [`store`]), and the operator's API to list, inspect, replay
//! ([`replay`], each back to where it came from) and purge them ([`api`]). Setting a message
//! aside is [`shared::dead_letter`]'s, since the notifier does it too.
//!
//! A message reaches the dead-letter exchange either from a service (with the headers of
//! [`shared::contract::headers`]) or from the broker (a delivery limit, a rejection, with its
//! `x-first-death-*` headers); the intake records both the same way.

pub mod api;
pub mod intake;
pub mod replay;
pub mod store;
