//! The imager: takes image jobs off `{ns}.images`, makes each image's compressed variants
//! (`thumbnail` fits 200×200, `medium` 800×800), stores them in object storage, records them
//! on the product, refreshes its cache and announces `product.images_ready`; a job that cannot
//! be done is dead-lettered with why, to be inspected and replayed like any other.
//!
//! - [`variants`]: decoding with limits and making the variants, without I/O.
//! - [`decide`]: what follows a failed attempt (hold, retry later, give up), without I/O.
//! - [`job`]: the queue's handler: jobs side by side, each fetch, make, store, record,
//!   announce, settle.
//! - [`config`], [`startup`]: configuration, wiring and the drain.
#![forbid(unsafe_code)]

pub mod config;
pub mod decide;
pub mod job;
pub mod openapi;
pub mod startup;
pub mod variants;

pub use config::Config;
pub use startup::Application;
