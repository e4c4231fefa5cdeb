//! The consumer loops: take a delivery, hand it to its handler, settle it. Deliveries on one
//! queue are handled one at a time, in order.
//!
//! On a shard ([`ShardHandler`]):
//! - Decoded and applied (or already applied, or stale): ack.
//! - Not decodable: dead-letter at once (`unparseable` / `invalid`), then ack.
//! - Refused by the database for good: dead-letter (`invalid`), then ack.
//! - Failed in a way that may pass later: publish to the next rung of the retry ladder (the
//!   attempt count in a header), then ack, so the shard is not blocked; past the last rung,
//!   dead-letter (`attempts_exhausted`).
//! - A dependency down: hold the delivery and retry in place with backoff and jitter; nothing
//!   else is taken from the shard meanwhile; no attempt is spent.
//! - Shutdown while holding: leave it unacknowledged; closing the channel returns it.
//! - The shard's lease gone to another replica (the apply transaction's fence): leave the batch
//!   unacknowledged and stop consuming the shard; closing the channel returns it.
//!
//! On the dead-letter queue ([`Intake`]): record each dead letter in PostgreSQL, then ack.
//!
//! [`shared::consume::supervise`] owns the loop and restarts it whatever ends it (a panic
//! included); `shard` and `dead_letter_intake` are the two handlers.

mod dead_letter_intake;
mod shard;

pub use dead_letter_intake::Intake;
pub use shard::ShardHandler;
