//! The tables the processor owns, as far as others use them: the product state and its cache
//! ([`products`]) and the orders ([`orders`]), which the gateway also reads; and what the
//! dashboard reads of its inbox, retries, dead letters and shard leases. Each layout is
//! written down once, here or in the processor's own module named in each module's first line.

pub mod dead_letters;
pub mod inbox;
pub mod orders;
pub mod products;
pub mod retries;
pub mod shards;
