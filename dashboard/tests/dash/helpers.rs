//! The whole stack the dashboard watches, from the `stack` crate.

pub use stack::{Stack, WAIT};
